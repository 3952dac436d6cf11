//! Broadcasts: one runs at a time, one runner holds its lease, a lapsed lease
//! is taken over, and a runner that lost the lease cannot take a recipient.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use kiebot_domain::UserId;
use kiebot_store::{BroadcastStatus, Claim, Engine, NewBroadcast, Store};
use kiebot_testkit::TestDb;
use sqlx::migrate::Migrator;

on_both_engines!(
    one_broadcast_runs_at_a_time,
    the_lease_is_held_renewed_and_taken_over_when_it_lapses,
    recipients_are_the_unblocked_users_in_id_order,
    a_broadcast_interrupted_before_the_upgrade_continues_from_its_cursor,
);

const LEASE: i64 = 30_000;

fn new(text: &str) -> NewBroadcast {
    NewBroadcast {
        text: text.to_owned(),
        admin_chat: 1,
        lang: "en".to_owned(),
        created_by: UserId(1),
    }
}

async fn one_broadcast_runs_at_a_time(store: Store) {
    let b = store.broadcasts();
    assert_eq!(b.claim("a", 0, LEASE).await.unwrap(), Claim::Idle);
    // Two admins starting one at once: one is recorded.
    let (x, y) = (new("x"), new("y"));
    let (x, y) = tokio::join!(b.create(&x), b.create(&y));
    let ids: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(ids.len(), 1);
    let running = b.running().await.unwrap().unwrap();
    assert_eq!(running.id, ids[0]);
    assert_eq!(
        (running.cursor, running.sent, running.failed),
        (i64::MIN, 0, 0)
    );

    let Claim::Claimed(c) = b.claim("a", 0, LEASE).await.unwrap() else {
        panic!("not claimed");
    };
    let done = b.finish(c.id, "a").await.unwrap().unwrap();
    assert_eq!(done.status, BroadcastStatus::Finished);
    assert!(done.finished_at.is_some());
    // Reported once.
    assert!(b.finish(c.id, "a").await.unwrap().is_none());
    assert!(b.running().await.unwrap().is_none());
    // The next one may start.
    assert!(b.create(&new("z")).await.unwrap().is_some());
}

async fn the_lease_is_held_renewed_and_taken_over_when_it_lapses(store: Store) {
    let b = store.broadcasts();
    let id = b.create(&new("hi")).await.unwrap().unwrap();
    let t0 = 1_000_000;
    let Claim::Claimed(c) = b.claim("a", t0, LEASE).await.unwrap() else {
        panic!("not claimed");
    };
    assert_eq!(
        (c.id, c.runner.as_deref(), c.claimed_until),
        (id, Some("a"), Some(t0 + LEASE))
    );
    // Held: another runner is told until when.
    assert_eq!(
        b.claim("b", t0 + 1, LEASE).await.unwrap(),
        Claim::Held { until: t0 + LEASE }
    );
    // Taking a recipient renews the lease.
    assert!(
        b.advance(id, "a", i64::MIN, UserId(10), t0 + 20_000, LEASE)
            .await
            .unwrap()
    );
    assert_eq!(
        b.claim("b", t0 + LEASE + 1, LEASE).await.unwrap(),
        Claim::Held {
            until: t0 + 20_000 + LEASE
        }
    );
    assert!(b.renew(id, "a", t0 + 40_000, LEASE).await.unwrap());
    b.record(id, true).await.unwrap();

    // "a" stalls; its lease lapses and "b" takes over from the cursor.
    let later = t0 + 40_000 + LEASE;
    let Claim::Claimed(c) = b.claim("b", later, LEASE).await.unwrap() else {
        panic!("not taken over");
    };
    assert_eq!((c.cursor, c.sent, c.runner.as_deref()), (10, 1, Some("b")));
    // "a" wakes up: it can neither take the next recipient, nor renew, nor
    // finish (and report).
    assert!(
        !b.advance(id, "a", 10, UserId(11), later + 1, LEASE)
            .await
            .unwrap()
    );
    assert!(!b.renew(id, "a", later + 1, LEASE).await.unwrap());
    assert!(b.finish(id, "a").await.unwrap().is_none());
    // "b" goes on; a stale cursor is refused too.
    assert!(
        b.advance(id, "b", 10, UserId(11), later + 2, LEASE)
            .await
            .unwrap()
    );
    assert!(
        !b.advance(id, "b", 10, UserId(12), later + 3, LEASE)
            .await
            .unwrap()
    );
    b.record(id, false).await.unwrap();
    let done = b.finish(id, "b").await.unwrap().unwrap();
    assert_eq!((done.cursor, done.sent, done.failed), (11, 1, 1));
    assert_eq!(b.claim("a", later + 4, LEASE).await.unwrap(), Claim::Idle);
}

async fn recipients_are_the_unblocked_users_in_id_order(store: Store) {
    for id in [5, 3, 9, 7] {
        store.users().ensure(UserId(id)).await.unwrap();
    }
    store.users().set_blocked(UserId(7), true).await.unwrap();
    let b = store.broadcasts();
    assert_eq!(
        b.recipients_after(i64::MIN, 10).await.unwrap(),
        vec![UserId(3), UserId(5), UserId(9)]
    );
    assert_eq!(b.recipients_after(3, 1).await.unwrap(), vec![UserId(5)]);
    assert!(b.recipients_after(9, 10).await.unwrap().is_empty());
}

async fn a_broadcast_interrupted_before_the_upgrade_continues_from_its_cursor(store: Store) {
    // A fresh database on the same server, migrated up to the release that
    // kept the running broadcast in the settings row.
    let db = match store.engine() {
        Engine::Sqlite => TestDb::sqlite(),
        Engine::Postgres => TestDb::postgres().await,
    };
    let old = Store::connect(db.url()).await.unwrap();
    let folder = match store.engine() {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    let dir = format!("{}/../../migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
    let mut m = Migrator::new(std::path::Path::new(&dir)).await.unwrap();
    m.migrations = m
        .migrations
        .iter()
        .filter(|x| x.version < 20261124000003)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    m.dangerous_set_table_name(kiebot_store::MIGRATIONS_TABLE);
    m.run(old.pool()).await.unwrap();
    let legacy = r#"{"text":"Second","cursor":201,"sent":2,"failed":1,"admin_chat":1,"lang":"ru"}"#;
    old.settings().set("broadcast", legacy).await.unwrap();

    old.migrate().await.unwrap();
    let b = old.broadcasts().running().await.unwrap().unwrap();
    assert_eq!(
        (
            b.text.as_str(),
            b.cursor,
            b.sent,
            b.failed,
            b.admin_chat,
            b.lang.as_str()
        ),
        ("Second", 201, 2, 1, 1, "ru")
    );
    assert!(old.settings().get("broadcast").await.unwrap().is_none());
    old.close().await;
}
