//! The rest of the bot's state: migrations, users, update de-duplication,
//! dialogues, free quota, settings and the audit log.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use kiebot_domain::{ModelId, Money, UserId};
use kiebot_store::{Engine, Role, Store, StoreError, settings};
use kiebot_testkit::TestDb;

on_both_engines!(
    migrations_apply_cleanly_twice,
    a_user_is_created_once_with_an_empty_wallet,
    an_update_is_handled_the_first_time_only,
    a_batch_of_updates_is_recorded_in_one_write,
    a_dialogue_is_forgotten_when_it_expires,
    the_free_quota_is_never_exceeded_even_concurrently,
    settings_and_the_audit_log_keep_what_they_are_given,
);

async fn migrations_apply_cleanly_twice(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        kiebot_store::MIGRATIONS_TABLE
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    // PostgreSQL has migrations of its own (server-side functions).
    let dir = match store.engine() {
        kiebot_store::Engine::Sqlite => "sqlite",
        kiebot_store::Engine::Postgres => "postgres",
    };
    let shipped = std::fs::read_dir(format!(
        "{}/../../migrations/{dir}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .count();
    assert_eq!(applied, shipped as i64, "every migration recorded once");
}

async fn a_user_is_created_once_with_an_empty_wallet(store: Store) {
    let id = UserId(42);
    assert!(store.users().get(id).await.unwrap().is_none());
    let first = store.users().ensure(id).await.unwrap();
    let again = store.users().ensure(id).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(
        (first.role, first.blocked, first.language.clone()),
        (Role::User, false, None)
    );
    assert_eq!(common::wallet(&store, id).await, (0, 0));

    store.users().set_language(id, "ru").await.unwrap();
    store.users().set_role(id, Role::Admin).await.unwrap();
    store
        .users()
        .set_admin_budget(id, Some(Money::from_minor(10_000)))
        .await
        .unwrap();
    store.users().set_blocked(id, true).await.unwrap();
    store.users().touch(id).await.unwrap();
    let user = store.users().get(id).await.unwrap().unwrap();
    assert_eq!(user.language.as_deref(), Some("ru"));
    assert_eq!(user.role, Role::Admin);
    assert_eq!(user.admin_budget, Some(Money::from_minor(10_000)));
    assert!(user.blocked);
    assert!(user.last_seen_at >= first.last_seen_at);

    store.users().ensure(UserId(43)).await.unwrap();
    let counts = store.users().counts(0).await.unwrap();
    assert_eq!((counts.total, counts.blocked, counts.seen_since), (2, 1, 2));
    assert_eq!(store.users().counts(i64::MAX).await.unwrap().seen_since, 0);

    let missing = store.users().set_blocked(UserId(404), true).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { what: "user", .. })),
        "{missing:?}"
    );
    common::assert_books_balance(&store).await;
}

async fn an_update_is_handled_the_first_time_only(store: Store) {
    assert!(store.updates().first_time(1001).await.unwrap());
    assert!(!store.updates().first_time(1001).await.unwrap());
    assert!(store.updates().first_time(1002).await.unwrap());
    assert_eq!(store.updates().prune(i64::MAX).await.unwrap(), 2);
    assert!(store.updates().first_time(1001).await.unwrap());
}

async fn a_dialogue_is_forgotten_when_it_expires(store: Store) {
    let user = store.users().ensure(UserId(1)).await.unwrap().id;
    let dialogues = store.dialogues();
    let ttl = Duration::from_secs(60);
    assert_eq!(dialogues.load(user, 0).await.unwrap(), None);

    dialogues
        .save(user, r#"{"step":1}"#, 1_000, ttl)
        .await
        .unwrap();
    assert_eq!(
        dialogues.load(user, 60_999).await.unwrap().as_deref(),
        Some(r#"{"step":1}"#)
    );
    assert_eq!(dialogues.load(user, 61_000).await.unwrap(), None);

    dialogues
        .save(user, r#"{"step":2}"#, 61_000, ttl)
        .await
        .unwrap();
    assert_eq!(
        dialogues.load(user, 61_001).await.unwrap().as_deref(),
        Some(r#"{"step":2}"#)
    );
    dialogues.clear(user).await.unwrap();
    assert_eq!(dialogues.load(user, 61_001).await.unwrap(), None);

    dialogues.save(user, "{}", 0, ttl).await.unwrap();
    assert_eq!(dialogues.prune(60_000).await.unwrap(), 1);
}

async fn the_free_quota_is_never_exceeded_even_concurrently(store: Store) {
    let user = store.users().ensure(UserId(1)).await.unwrap().id;
    let model = ModelId::parse("google/nano-banana").unwrap();
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let (store, model) = (store.clone(), model.clone());
            tokio::spawn(async move {
                store
                    .free_usage()
                    .consume(user, &model, "2026-11-24", 3)
                    .await
            })
        })
        .collect();
    let mut granted = 0;
    for t in tries {
        granted += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(granted, 3);
    let usage = store.free_usage();
    assert_eq!(
        usage.used_today(user, &model, "2026-11-24").await.unwrap(),
        3
    );
    assert_eq!(
        usage.used_today(user, &model, "2026-11-25").await.unwrap(),
        0
    );
    assert!(usage.consume(user, &model, "2026-11-25", 3).await.unwrap());
    assert!(!usage.consume(user, &model, "2026-11-25", 0).await.unwrap());
}

async fn settings_and_the_audit_log_keep_what_they_are_given(store: Store) {
    let s = store.settings();
    assert_eq!(s.get(settings::MAINTENANCE).await.unwrap(), None);
    s.set(settings::MAINTENANCE, "1").await.unwrap();
    s.set(settings::MAINTENANCE, "0").await.unwrap();
    s.set("note", "78.57").await.unwrap();
    assert_eq!(
        s.get(settings::MAINTENANCE).await.unwrap().as_deref(),
        Some("0")
    );
    s.delete("note").await.unwrap();
    assert_eq!(s.get("note").await.unwrap(), None);

    let admin = UserId(7);
    store
        .audit()
        .record(admin, "block", Some(UserId(1)), None, "spam")
        .await
        .unwrap();
    store
        .audit()
        .record(admin, "broadcast", None, None, "news")
        .await
        .unwrap();
    let recent = store.audit().recent(10).await.unwrap();
    assert_eq!(
        recent.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["broadcast", "block"]
    );
    assert_eq!(recent[1].target, Some(UserId(1)));
    assert_eq!(store.audit().recent(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn only_file_sqlite_and_postgres_urls_are_accepted() {
    for url in [
        "mysql://localhost/x",
        "sqlite::memory:",
        "sqlite://x.db?mode=memory",
    ] {
        let outcome = Store::connect(url).await;
        assert!(
            matches!(outcome, Err(StoreError::UnsupportedUrl(_))),
            "{url}"
        );
    }
    assert_eq!(Engine::of_url("postgresql://h/db"), Some(Engine::Postgres));
}

#[tokio::test]
async fn a_sqlite_url_without_a_mode_creates_the_file() {
    let db = TestDb::sqlite();
    let path = db.sqlite_path().unwrap();
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.engine(), Engine::Sqlite);
    store.migrate().await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(busy, 10_000);
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    store.close().await;
    assert!(path.exists());
}

async fn a_batch_of_updates_is_recorded_in_one_write(store: Store) {
    let updates = store.updates();
    assert!(updates.first_time(7).await.unwrap());
    let mut fresh = updates.first_time_many(&[5, 6, 7, 8]).await.unwrap();
    fresh.sort_unstable();
    assert_eq!(fresh, vec![5, 6, 8], "7 was seen before");
    assert!(
        updates
            .first_time_many(&[5, 6, 7, 8])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!updates.first_time(8).await.unwrap());
    assert!(updates.first_time_many(&[]).await.unwrap().is_empty());
    // A full getUpdates batch (100 updates) fits in one statement.
    let batch: Vec<i64> = (1_000..1_100).collect();
    assert_eq!(updates.first_time_many(&batch).await.unwrap().len(), 100);
}
