//! KIE as it really is, seen from the pipeline: its own run times and costs
//! kept, a 429 that costs no attempt, and models the catalog check takes off
//! sale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kiebot_app::harness::{Flavor, Harness, quick_pipeline, test_redis_url};
use kiebot_catalog_check::CheckOptions;
use kiebot_domain::{GenerationStatus, Money};
use kiebot_testkit::kie::Endpoint;

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kie_s_own_run_time_and_cost_are_kept_on_the_generation() {
    let mut h = Harness::start(Flavor::Embedded).await;
    h.kie.set_credits_consumed("google/nano-banana", 4.5);
    let user = h.funded_user(Money::from_minor(10_000)).await;
    h.start_workers(4);
    let id = h
        .confirm(user, "google/nano-banana", Money::from_minor(500))
        .await;
    h.wait_settled(SETTLE).await.unwrap();
    let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.status, GenerationStatus::Delivered);
    assert_eq!(
        g.kie_credits,
        Some(4_500),
        "creditsConsumed, in thousandths"
    );
    assert!(g.kie_run_ms.is_some_and(|ms| ms >= 0), "{:?}", g.kie_run_ms);
    let times = h
        .ctx
        .store
        .generations()
        .recent_run_times("google/nano-banana", 10)
        .await
        .unwrap();
    assert_eq!(times.len(), 1);
    h.assert_money_consistent().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_from_kie_costs_no_attempt_and_the_generation_still_goes_through() {
    let limits = [
        ("KIE_CREATES_PER_WINDOW", "20"),
        ("KIE_CREATE_WINDOW_SECS", "1"),
        ("KIE_MAX_IN_FLIGHT", "100"),
    ];
    let mut h = Harness::with_settings(
        Flavor::Embedded,
        quick_pipeline(),
        test_redis_url(),
        &limits,
    )
    .await;
    // More 429s than the three attempts a generation may spend on calls
    // that could have made a task: none of them counts.
    h.kie.fail_next_creates(5, 429);
    let user = h.funded_user(Money::from_minor(10_000)).await;
    h.start_workers(4);
    let id = h
        .confirm(user, "google/nano-banana", Money::from_minor(500))
        .await;
    h.wait_settled(SETTLE).await.unwrap();
    let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.status, GenerationStatus::Delivered);
    assert_eq!(h.kie.calls(Endpoint::CreateTask), 6);
    assert_eq!(
        g.submit_attempts, 1,
        "only the call that made the task counts"
    );
    h.assert_money_consistent().await;
    h.cleanup().await;
}

async fn off_sale(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(10_000)).await;
    // A generation confirmed while the model was still sold...
    let id = h
        .create(user, "google/nano-banana", Money::from_minor(500), "d1")
        .await;
    // ...then KIE stops selling it, and the check notices.
    h.kie
        .edit_catalogue(|models| models.retain(|m| m.model != "google/nano-banana"));
    let options = CheckOptions {
        pace: Duration::ZERO,
        ..CheckOptions::default()
    };
    let report = kiebot_worker::catalog_watch::run(&h.ctx, &options)
        .await
        .unwrap();
    assert!(report.off_sale().contains_key("google/nano-banana"));
    let holds = h.ctx.store.model_holds().all().await.unwrap();
    assert_eq!(holds.keys().collect::<Vec<_>>(), ["google/nano-banana"]);
    assert_eq!(holds["google/nano-banana"].source, "check");
    // The pending generation is not sent: it fails, its hold released.
    h.ctx
        .queues
        .push(kiebot_jobs::Job::Submit(id))
        .await
        .unwrap();
    h.start_workers(4);
    h.wait_settled(SETTLE).await.unwrap();
    let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.status, GenerationStatus::Failed);
    assert_eq!(g.fail_code.as_deref(), Some("model_off_sale"));
    assert_eq!(h.kie.calls(Endpoint::CreateTask), 0);
    let wallet = h.ctx.store.ledger().wallet(user).await.unwrap();
    assert_eq!(
        (wallet.balance, wallet.held),
        (Money::from_minor(10_000), Money::ZERO)
    );
    // An operator puts it back: the next one goes through.
    assert!(
        h.ctx
            .store
            .model_holds()
            .release("google/nano-banana")
            .await
            .unwrap()
    );
    let id2 = h
        .confirm(user, "google/nano-banana", Money::from_minor(500))
        .await;
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id2]).await, vec![GenerationStatus::Delivered]);
    h.assert_money_consistent().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_check_takes_off_sale_is_not_submitted_embedded() {
    off_sale(Flavor::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_check_takes_off_sale_is_not_submitted_in_the_fleet() {
    off_sale(Flavor::Fleet).await;
}
