//! A scripted user tops up with Stars, buys an image and a video, and receives
//! both, with the ledger clean afterwards: once in one embedded process, and
//! once in the fleet's shape (a front bot and a separate worker runtime over
//! PostgreSQL and Redis).

#![allow(clippy::unwrap_used)]

use kiebot_app::demo::{Deployment, run_on};
use kiebot_app::harness::{delete_redis_namespace, test_redis_url};
use kiebot_testkit::TestDb;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_buys_an_image_and_a_video_in_one_embedded_process() {
    let mut transcript = Vec::new();
    let report = run_on(&mut transcript, Deployment::Embedded)
        .await
        .unwrap_or_else(|e| {
            panic!("{e:#}\n{}", String::from_utf8_lossy(&transcript));
        });
    assert_eq!(report.delivered, 2);
    assert!(report.charged.is_positive());
    assert_eq!(
        report.balance_after,
        report.balance_before.checked_sub(report.charged).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_buys_an_image_and_a_video_through_a_fleet_front_and_separate_workers() {
    let db = TestDb::postgres().await;
    let namespace = format!("e2e{:012x}", rand::rng().random::<u64>() >> 16);
    let redis_url = test_redis_url();
    let mut transcript = Vec::new();
    let result = run_on(
        &mut transcript,
        Deployment::Fleet {
            database_url: db.url().to_owned(),
            redis_url: redis_url.clone(),
            namespace: namespace.clone(),
        },
    )
    .await;
    delete_redis_namespace(&redis_url, &namespace).await;
    let report =
        result.unwrap_or_else(|e| panic!("{e:#}\n{}", String::from_utf8_lossy(&transcript)));
    assert_eq!(report.delivered, 2);
    assert_eq!(
        report.balance_after,
        report.balance_before.checked_sub(report.charged).unwrap()
    );
    let text = String::from_utf8_lossy(&transcript);
    assert!(text.contains("fleet"), "{text}");
}
