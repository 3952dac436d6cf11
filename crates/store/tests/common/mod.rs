//! Shared by the store's test files: every case runs on both engines, each on
//! a database of its own that is dropped afterwards.

#![allow(dead_code)] // each test binary uses a different part

use kiebot_domain::{GenerationId, GenerationStatus, ModelId, Money, TaskOutcome, UserId};
use kiebot_store::{Creation, DialogueAfter, Funding, NewGeneration, Store, StoreError, Wallet};
use kiebot_testkit::TestDb;

/// Generates `sqlite::<case>` and `postgres::<case>` tests for each `case`,
/// an `async fn(Store)` in the including file.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = kiebot_testkit::TestDb::sqlite();
                    let store = crate::common::store(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = kiebot_testkit::TestDb::postgres().await;
                    let store = crate::common::store(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
    };
}

/// A migrated store on `db`.
pub async fn store(db: &TestDb) -> Store {
    let store = Store::connect(db.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// A user with `minor` minor units of top-up.
pub async fn funded_user(store: &Store, id: i64, minor: i64) -> UserId {
    let user = UserId(id);
    store.users().ensure(user).await.expect("ensure user");
    if minor > 0 {
        store
            .ledger()
            .topup(user, Money::from_minor(minor), &format!("seed:{id}"), None)
            .await
            .expect("seed top-up");
    }
    user
}

/// The wallet as `(balance, held)` in minor units.
pub async fn wallet(store: &Store, user: UserId) -> (i64, i64) {
    let Wallet { balance, held } = store.ledger().wallet(user).await.expect("wallet");
    (balance.minor(), held.minor())
}

/// Fails unless every wallet equals what its entries say.
pub async fn assert_books_balance(store: &Store) {
    let drift = store.ledger().check().await.expect("ledger check");
    assert!(drift.is_empty(), "ledger drift: {drift:?}");
}

/// A confirmation of a `price` generation from draft `draft`.
pub fn confirmation(user: UserId, draft: &str, price: i64) -> NewGeneration {
    NewGeneration {
        user,
        draft_key: draft.to_owned(),
        model: ModelId::parse("google/nano-banana").expect("model id"),
        params_json: r#"{"prompt":"a cat"}"#.to_owned(),
        request_json: r#"{"model":"google/nano-banana","input":{"prompt":"a cat"}}"#.to_owned(),
        price: Money::from_minor(price),
        chat_id: 1000 + user.0,
        deadline_secs: 600,
        max_active: 5,
        traceparent: None,
    }
}

/// How many ledger entries have this key prefix (via the pool).
pub async fn entries_with_prefix(store: &Store, prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE key LIKE $1")
        .bind(format!("{prefix}%"))
        .fetch_one(store.pool())
        .await
        .expect("count entries")
}

/// KIE's result recorded as the finalizer records it: the hold captured and
/// the delivery claimed, with a lease that has already run out so that any
/// delivery may take it. `Ok(false)`: it had succeeded already.
pub async fn succeed_with(
    store: &Store,
    id: GenerationId,
    result: &str,
) -> Result<bool, StoreError> {
    let outcome = TaskOutcome::Success {
        result: result.to_owned(),
    };
    let claim = store
        .generations()
        .finish_and_claim(id, GenerationStatus::Succeeded, &outcome, 0)
        .await?;
    Ok(claim.is_some())
}

/// Confirms `new` paid by `funding`, as the bot does (with the dialogue the
/// confirmation leaves).
pub async fn confirm_funded(
    store: &Store,
    new: &NewGeneration,
    funding: &Funding,
) -> Result<Creation, StoreError> {
    let then = DialogueAfter {
        state_json: r#"{"s":"confirmed","generation":0}"#,
        id_field: "generation",
        ttl: std::time::Duration::from_secs(60),
    };
    store.generations().confirm(new, funding, &then).await
}
