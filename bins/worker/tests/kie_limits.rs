//! KIE's account limits kept by two worker processes together: 200
//! generations confirmed at once against a fake KIE that accepts at most 20
//! creates per 10 s and refuses the rest with 429.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiebot_app::harness::{Flavor, Harness, quick_pipeline, test_redis_url};
use kiebot_domain::{GenerationStatus, Money};
use kiebot_testkit::kie::Endpoint;

const KIE_LIMITS: [(&str, &str); 4] = [
    ("KIE_CREATES_PER_WINDOW", "20"),
    ("KIE_CREATE_WINDOW_SECS", "10"),
    ("KIE_MAX_IN_FLIGHT", "100"),
    ("KIE_POLLS_PER_SECOND", "10"),
];

fn spawn_worker(h: &Harness) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiebot-worker"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(h.process_env())
        .env("JOB_LEASE_SECS", "10")
        .env("POLL_INITIAL_MS", "200")
        .env("WORKER_CONCURRENCY", "8")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kiebot-worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_kie_s_create_window() {
    let h = Harness::with_settings(
        Flavor::Fleet,
        quick_pipeline(),
        test_redis_url(),
        &KIE_LIMITS,
    )
    .await;
    h.kie.set_create_limit(Some((20, Duration::from_secs(10))));
    h.kie.set_poll_limit(Some((10, Duration::from_secs(1))));
    let mut h = h;
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
    let mut workers = [spawn_worker(&h), spawn_worker(&h)];
    let settled = h.wait_settled(Duration::from_secs(240)).await;
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    settled.unwrap();
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
    assert_eq!(h.kie.rate_limited_polls(), 0);
    h.assert_money_consistent().await;
    h.cleanup().await;
}
