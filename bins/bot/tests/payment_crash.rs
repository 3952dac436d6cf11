//! A front process SIGKILLed while a payment is in hand: getUpdates has
//! returned the batch holding the `successful_payment`, and its handler is
//! stalled on the database (the test holds a lock on `payments`, so the
//! credit's insert waits, which the test sees in `pg_stat_activity`). No
//! test-only hook is needed. After a restart the payment is credited exactly
//! once: the batch was never acknowledged to Telegram, which delivers it
//! again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiebot_app::harness::{delete_redis_namespace, test_redis_url};
use kiebot_domain::{Money, UserId};
use kiebot_store::Store;
use kiebot_testkit::TestDb;
use kiebot_testkit::telegram::FakeTelegram;

const WAIT: Duration = Duration::from_secs(60);

fn spawn_front(db: &TestDb, tg: &FakeTelegram, namespace: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiebot-bot"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", test_redis_url())
        .env("QUEUE_NAMESPACE", namespace)
        .env("TELEGRAM_BOT_TOKEN", tg.token())
        .env("TELEGRAM_API_URL", tg.api_url())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("OPS_ADDR", "127.0.0.1:0")
        .env("DRY_RUN", "true")
        // The update path alone must credit it: no reconciler here.
        .env("STARS_RECONCILE_SECS", "0")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kiebot-bot starts")
}

/// Waits (checking every few ms, up to [`WAIT`]) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn inserts_waiting_on_payments(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
           AND query LIKE 'INSERT INTO payments%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_killed_with_a_payment_in_hand_credits_it_exactly_once_after_restart() {
    let db = TestDb::postgres().await;
    let tg = FakeTelegram::start().await;
    let namespace = format!("paycrash{:x}", rand_suffix());
    let store = Store::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let user = UserId(400);
    let invoice = store
        .invoices()
        .create(user, 100, Money::from_minor(15_000), 3_600_000, 0x400)
        .await
        .unwrap();

    // The credit's insert will wait for this lock.
    let mut lock = store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE payments IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut front = spawn_front(&db, &tg, &namespace);
    tg.successful_payment(400, &invoice.payload, "charge-crash", 100);
    until(
        "the payment's handler is stalled on the database",
        || async { inserts_waiting_on_payments(&store).await >= 1 },
    )
    .await;
    front.kill().expect("SIGKILL");
    let _ = front.wait();
    lock.rollback().await.unwrap();
    assert_eq!(
        tg.pending_updates(),
        1,
        "the batch holding the payment was not acknowledged"
    );
    assert_eq!(store.payments().get("charge-crash").await.unwrap(), None);

    let mut front = spawn_front(&db, &tg, &namespace);
    until("the payment is credited after the restart", || async {
        store.ledger().wallet(user).await.unwrap().available() > Money::ZERO
    })
    .await;
    tg.wait_for(|tg| tg.pending_updates() == 0, WAIT)
        .await
        .expect("the batch is acknowledged once its payment is credited");
    let _ = front.kill();
    let _ = front.wait();

    assert_eq!(
        store.ledger().wallet(user).await.unwrap().available(),
        Money::from_minor(15_000),
        "credited exactly once"
    );
    let drift = store.ledger().check().await.unwrap();
    assert!(drift.is_empty(), "ledger drift: {drift:?}");
    store.close().await;
    delete_redis_namespace(&test_redis_url(), &namespace).await;
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) ^ d.as_secs())
        .unwrap_or(0)
}
