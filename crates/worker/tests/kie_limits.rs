//! KIE's account limits, as a fake KIE that enforces them sees the pipeline:
//! 20 creates per 10 s (429 beyond, nothing queued), taken fairly across
//! users. The fleet's version (two worker processes) is in
//! bins/worker/tests/kie_limits.rs.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kiebot_app::harness::{Flavor, Harness, quick_pipeline, test_redis_url};
use kiebot_domain::{GenerationId, GenerationStatus, Money, UserId};
use kiebot_testkit::kie::Endpoint;

/// KIE's documented limit, as the settings give it to the pipeline.
const KIE_LIMITS: [(&str, &str); 4] = [
    ("KIE_CREATES_PER_WINDOW", "20"),
    ("KIE_CREATE_WINDOW_SECS", "10"),
    ("KIE_MAX_IN_FLIGHT", "100"),
    ("KIE_POLLS_PER_SECOND", "10"),
];

/// 200 creates at 20 per 10 s take 100 s; the rest is slack.
const SETTLE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_confirmed_at_once_are_all_delivered_without_overrunning_kie() {
    let mut h = Harness::with_settings(
        Flavor::Embedded,
        quick_pipeline(),
        test_redis_url(),
        &KIE_LIMITS,
    )
    .await;
    h.kie.set_create_limit(Some((20, Duration::from_secs(10))));
    h.kie.set_poll_limit(Some((10, Duration::from_secs(1))));
    let mut ids = Vec::new();
    for _ in 0..40 {
        let user = h.funded_user(Money::from_minor(100_000)).await;
        for _ in 0..5 {
            ids.push(
                h.confirm(user, "google/nano-banana", Money::from_minor(100))
                    .await,
            );
        }
    }
    h.start_workers(16);
    h.wait_settled(SETTLE).await.unwrap();

    assert_eq!(
        h.statuses(&ids).await,
        vec![GenerationStatus::Delivered; ids.len()],
        "every generation delivered, none failed"
    );
    let max = h.kie.max_creates_in_any_window(Duration::from_secs(10));
    assert!(max <= 20, "{max} creates accepted within one 10 s window");
    let calls = h.kie.calls(Endpoint::CreateTask);
    let refused = h.kie.rate_limited_creates();
    assert!(
        refused * 20 <= calls,
        "{refused} of {calls} create calls were refused with 429"
    );
    assert_eq!(
        h.kie.rate_limited_polls(),
        0,
        "no poll over KIE's 10 per second"
    );
    h.assert_money_consistent().await;
    h.cleanup().await;
}

/// When each generation's task was created at KIE (its `submitted_at`),
/// as time since `start`.
async fn waits(h: &Harness, ids: &[GenerationId]) -> Vec<Duration> {
    let mut out = Vec::new();
    for id in ids {
        let g = h.ctx.store.generations().get(*id).await.unwrap().unwrap();
        let waited = g.submitted_at.unwrap() - g.created_at;
        out.push(Duration::from_millis(u64::try_from(waited).unwrap()));
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_s_five_confirmations_do_not_put_twenty_users_behind_them() {
    // A small window, so the line forms quickly: 5 creates per 2 s.
    let limits = [
        ("KIE_CREATES_PER_WINDOW", "5"),
        ("KIE_CREATE_WINDOW_SECS", "2"),
        ("KIE_MAX_IN_FLIGHT", "100"),
        ("KIE_POLLS_PER_SECOND", "10"),
    ];
    let mut h = Harness::with_settings(
        Flavor::Embedded,
        quick_pipeline(),
        test_redis_url(),
        &limits,
    )
    .await;
    h.kie.set_create_limit(Some((5, Duration::from_secs(2))));
    // The busy user confirms first: five at once.
    let busy = h.funded_user(Money::from_minor(100_000)).await;
    let mut busy_ids = Vec::new();
    for _ in 0..5 {
        busy_ids.push(
            h.confirm(busy, "google/nano-banana", Money::from_minor(100))
                .await,
        );
    }
    let mut others: HashMap<UserId, GenerationId> = HashMap::new();
    for _ in 0..20 {
        let user = h.funded_user(Money::from_minor(100_000)).await;
        others.insert(
            user,
            h.confirm(user, "google/nano-banana", Money::from_minor(100))
                .await,
        );
    }
    let started = Instant::now();
    h.start_workers(16);
    h.wait_settled(Duration::from_secs(120)).await.unwrap();
    let other_ids: Vec<GenerationId> = others.values().copied().collect();
    let busy_waits = waits(&h, &busy_ids).await;
    let other_waits = waits(&h, &other_ids).await;
    let (busy_median, others_median) = (median(busy_waits.clone()), median(other_waits.clone()));
    assert!(
        others_median <= busy_median,
        "the twenty users' median wait {others_median:?} is behind the busy user's {busy_median:?} \
         (busy {busy_waits:?}, others {other_waits:?}, run {:?})",
        started.elapsed()
    );
    assert!(h.kie.max_creates_in_any_window(Duration::from_secs(2)) <= 5);
    h.assert_money_consistent().await;
    h.cleanup().await;
}
