//! Housekeeping prunes processed updates older than a week, expired
//! dialogues and old refused promo attempts, in bounded steps, on both
//! engines; and one process per turn does it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kiebot_store::Store;
use kiebot_testkit::TestDb;
use kiebot_worker::housekeeping::{self, Pruned, UPDATES_KEPT};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn seed(store: &Store, now: i64) {
    let old = now - i64::try_from(UPDATES_KEPT.as_millis()).unwrap() - 1;
    // 25 old update records and 5 recent ones.
    for id in 0..30_i64 {
        let at = if id < 25 { old - id } else { now - DAY_MS };
        sqlx::query("INSERT INTO processed_updates (update_id, processed_at) VALUES ($1, $2)")
            .bind(id)
            .bind(at)
            .execute(store.pool())
            .await
            .unwrap();
    }
    // 12 dialogues expired, 3 alive.
    for user in 1..=15_i64 {
        let uid = kiebot_domain::UserId(user);
        store.users().ensure(uid).await.unwrap();
        let ttl = if user <= 12 {
            Duration::from_millis(1)
        } else {
            Duration::from_secs(3600)
        };
        store
            .dialogues()
            .save(uid, "{}", now - 1000, ttl)
            .await
            .unwrap();
    }
    // 7 refused promo attempts two days old, 2 fresh.
    for i in 0..9_i64 {
        let at = if i < 7 {
            now - 2 * DAY_MS
        } else {
            now - 60_000
        };
        store
            .promos()
            .record_failure(kiebot_domain::UserId(1), at)
            .await
            .unwrap();
    }
}

async fn count(store: &Store, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn pruning_is_bounded_per_turn_and_keeps_what_is_recent(db: TestDb) {
    let store = Store::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let now = kiebot_store::now_ms();
    seed(&store, now).await;

    // Steps of 4 rows, 3 steps a turn: at most 12 rows per table per turn.
    let first = housekeeping::run(&store, now, 4, 3).await.unwrap();
    assert_eq!(
        first,
        Pruned {
            updates: 12,
            dialogues: 12,
            promo_failures: 7,
            more_left: true,
        }
    );
    assert_eq!(count(&store, "processed_updates").await, 30 - 12);
    // Every expired dialogue is gone (12 fit in the turn), the live ones stay.
    assert_eq!(count(&store, "dialogues").await, 3);
    assert_eq!(count(&store, "promo_failures").await, 2);

    let second = housekeeping::run(&store, now, 4, 3).await.unwrap();
    assert_eq!((second.updates, second.more_left), (12, true));
    let third = housekeeping::run(&store, now, 4, 3).await.unwrap();
    assert_eq!(
        (third.updates, third.dialogues, third.more_left),
        (1, 0, false)
    );
    // The five recent update records are kept (a redelivery is still caught).
    assert_eq!(count(&store, "processed_updates").await, 5);
    assert!(!store.updates().first_time(29).await.unwrap());
    assert_eq!(count(&store, "promo_failures").await, 2);
    store.close().await;
}

async fn one_process_takes_each_turn(db: TestDb) {
    let a = Store::connect(db.url()).await.unwrap();
    a.migrate().await.unwrap();
    let b = Store::connect(db.url()).await.unwrap();
    let now = kiebot_store::now_ms();
    seed(&a, now).await;
    let (x, y) = tokio::join!(housekeeping::maybe_run(&a), housekeeping::maybe_run(&b));
    // Exactly one of the two took the turn, and it pruned everything old.
    let ran: Vec<Pruned> = [x, y].into_iter().flatten().collect();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(
        (ran[0].updates, ran[0].dialogues, ran[0].promo_failures),
        (25, 12, 7)
    );
    // The next turn is an hour away: asking again does nothing.
    assert!(housekeeping::maybe_run(&a).await.is_none());
    assert!(housekeeping::maybe_run(&b).await.is_none());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_is_bounded_per_turn_and_keeps_what_is_recent_on_sqlite() {
    pruning_is_bounded_per_turn_and_keeps_what_is_recent(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_is_bounded_per_turn_and_keeps_what_is_recent_on_postgres() {
    pruning_is_bounded_per_turn_and_keeps_what_is_recent(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_takes_each_turn_on_sqlite() {
    one_process_takes_each_turn(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_takes_each_turn_on_postgres() {
    one_process_takes_each_turn(TestDb::postgres().await).await;
}
