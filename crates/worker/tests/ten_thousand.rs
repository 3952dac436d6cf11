//! 10,000 generations enqueued at once drain completely, with the money
//! invariants intact. apalis-redis stalls when thousands of scheduled jobs
//! become due together; the pipeline keeps the queue's backlog bounded (the
//! database holds the rest), which this run exercises.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kiebot_app::harness::{Flavor, Harness, test_redis_url};
use kiebot_domain::{GenerationStatus, Money};
use kiebot_jobs::Job;
use kiebot_worker::PipelineConfig;

const N: usize = 10_000;

async fn ten_thousand(flavor: Flavor, n: usize) {
    let cfg = PipelineConfig {
        poll_first: Duration::ZERO,
        ..kiebot_app::harness::quick_pipeline()
    };
    let mut h = Harness::with_settings(
        flavor,
        cfg,
        test_redis_url(),
        &[("DELIVERY_RATE_PER_SECOND", "100000")],
    )
    .await;
    let mut users = vec![];
    for _ in 0..2_000 {
        users.push(h.funded_user(Money::from_minor(10_000)).await);
    }
    let h = Arc::new(h);
    let mut tasks = vec![];
    for p in 0..8 {
        let h = h.clone();
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = vec![];
            for i in (p..n).step_by(8) {
                ids.push(
                    h.create(
                        users[i % users.len()],
                        "google/nano-banana",
                        Money::from_minor(100),
                        &format!("bulk-{i}"),
                    )
                    .await,
                );
            }
            ids
        }));
    }
    let mut ids = vec![];
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    // All at once.
    let jobs: Vec<Job> = ids.iter().map(|id| Job::Submit(*id)).collect();
    h.ctx.queues.push_many(&jobs).await.unwrap();
    let mut h = Arc::try_unwrap(h).ok().expect("sole owner");
    h.start_workers(32);
    h.wait_settled(Duration::from_secs(900)).await.unwrap();
    let counts = h.ctx.store.generations().count_by_status().await.unwrap();
    assert!(
        counts.contains(&(GenerationStatus::Delivered, n as u64)),
        "{counts:?}"
    );
    h.assert_money_consistent().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_generations_enqueued_at_once_all_settle_in_the_fleet() {
    ten_thousand(Flavor::Fleet, N).await;
}

/// The embedded queue is SQL, without Redis's scheduled-set limit; a smaller
/// burst keeps the suite's time in check while covering the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_generations_enqueued_at_once_all_settle_embedded() {
    ten_thousand(Flavor::Embedded, 3_000).await;
}
