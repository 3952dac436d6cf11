//! Connections a pool keeps open: a warm pool has them before any work
//! arrives, so the first burst does not wait for new ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kiebot_store::{PoolSize, Store};
use kiebot_testkit::TestDb;
use sqlx::{Connection, PgConnection};

/// Connections open to the test's database, besides the one asking.
async fn open_connections(db: &TestDb) -> i64 {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let n = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    n
}

/// Waits (up to 5 s) until `want` connections are open; returns the last count.
async fn settle(db: &TestDb, want: i64) -> i64 {
    let mut n = open_connections(db).await;
    for _ in 0..50 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        n = open_connections(db).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_opens_its_connections_before_any_work_and_a_cold_one_does_not() {
    let db = TestDb::postgres().await;
    let warm = Store::connect_with(db.url(), PoolSize::new(10).warm(4))
        .await
        .expect("connect");
    assert_eq!(
        settle(&db, 4).await,
        4,
        "a pool kept 4 warm holds 4 connections"
    );
    warm.close().await;
    assert_eq!(settle(&db, 0).await, 0, "a closed pool holds none");

    // Opened on demand: only the one that checked the server at connect.
    let cold = Store::connect_with(db.url(), 10).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        open_connections(&db).await <= 1,
        "a cold pool opened connections nobody asked for"
    );
    cold.close().await;
}

#[test]
fn a_pool_keeps_no_more_warm_than_it_may_open() {
    let size = PoolSize::new(3).warm(10);
    assert_eq!((size.max(), size.kept_warm()), (3, 3));
    assert_eq!(
        PoolSize::new(0).max(),
        1,
        "a pool opens at least one connection"
    );
}
