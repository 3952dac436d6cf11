//! The ledger: money moves once, never overdraws, and the books balance.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{assert_books_balance, entries_with_prefix, funded_user, wallet};
use kiebot_domain::{GenerationId, Money, UserId};
use kiebot_store::{EntryKind, HoldState, Store, StoreError};

on_both_engines!(
    a_hundred_concurrent_holds_never_overdraw_a_wallet,
    every_ledger_operation_repeated_with_its_key_applies_once,
    a_key_reused_for_a_different_operation_is_refused,
    concurrent_capture_and_release_of_one_hold_have_exactly_one_winner,
    capturing_a_released_hold_is_refused_and_changes_nothing,
    a_hold_larger_than_the_available_balance_is_refused_and_changes_nothing,
    a_negative_adjustment_below_the_available_balance_is_refused,
    a_refund_cannot_take_held_money,
    check_reports_a_wallet_changed_behind_the_ledgers_back,
    ledger_entries_cannot_be_updated_or_deleted,
);

fn m(minor: i64) -> Money {
    Money::from_minor(minor)
}

async fn a_hundred_concurrent_holds_never_overdraw_a_wallet(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let tasks: Vec<_> = (1..=100)
        .map(|g| {
            let store = store.clone();
            tokio::spawn(async move { store.ledger().hold(user, GenerationId(g), m(30)).await })
        })
        .collect();
    let (mut held, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(applied) => {
                assert!(applied.fresh);
                held += 1;
            }
            Err(StoreError::InsufficientFunds {
                available,
                requested,
            }) => {
                assert!(available < requested && available >= Money::ZERO);
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((held, refused), (33, 67));
    assert_eq!(wallet(&store, user).await, (1000, 990));
    assert_eq!(entries_with_prefix(&store, "hold:").await, 33);
    assert_books_balance(&store).await;
}

async fn every_ledger_operation_repeated_with_its_key_applies_once(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    let admin = UserId(99);
    let ledger = store.ledger();

    let first = ledger.topup(user, m(500), "topup:c1", None).await.unwrap();
    let again = ledger.topup(user, m(500), "topup:c1", None).await.unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);

    let first = ledger
        .bonus(user, m(50), "promo:X:1", "promo X")
        .await
        .unwrap();
    let again = ledger
        .bonus(user, m(50), "promo:X:1", "promo X")
        .await
        .unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);

    let first = ledger
        .adjust(user, m(-20), "adjust:1", admin, "typo")
        .await
        .unwrap();
    let again = ledger
        .adjust(user, m(-20), "adjust:1", admin, "typo")
        .await
        .unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);
    assert_eq!(store.audit().recent(10).await.unwrap().len(), 1);

    let first = ledger.refund(user, m(30), "refund:c1", None).await.unwrap();
    let again = ledger.refund(user, m(30), "refund:c1", None).await.unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);

    let (g1, g2) = (GenerationId(1), GenerationId(2));
    for g in [g1, g2] {
        let first = ledger.hold(user, g, m(100)).await.unwrap();
        let again = ledger.hold(user, g, m(100)).await.unwrap();
        assert!(first.fresh && !again.fresh);
        assert_eq!(first.entry, again.entry);
    }
    let first = ledger.capture(g1).await.unwrap();
    let again = ledger.capture(g1).await.unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);
    assert_eq!(first.entry.kind, EntryKind::Capture);

    let first = ledger.release(g2).await.unwrap();
    let again = ledger.release(g2).await.unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);

    // 500 + 50 - 20 - 30 - 100 (captured); nothing held.
    assert_eq!(wallet(&store, user).await, (400, 0));
    assert_eq!(ledger.entries(user, 100).await.unwrap().len(), 8);
    assert_books_balance(&store).await;
}

async fn a_key_reused_for_a_different_operation_is_refused(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    let other = funded_user(&store, 2, 0).await;
    let ledger = store.ledger();
    ledger.topup(user, m(100), "topup:c1", None).await.unwrap();

    for outcome in [
        ledger.topup(user, m(200), "topup:c1", None).await,
        ledger.topup(other, m(100), "topup:c1", None).await,
        ledger
            .bonus(user, m(100), "topup:c1", "same key, other kind")
            .await,
    ] {
        assert!(
            matches!(&outcome, Err(StoreError::KeyConflict { key }) if key == "topup:c1"),
            "{outcome:?}"
        );
    }
    ledger.hold(user, GenerationId(7), m(10)).await.unwrap();
    let outcome = ledger.hold(user, GenerationId(7), m(11)).await;
    assert!(
        matches!(outcome, Err(StoreError::KeyConflict { .. })),
        "{outcome:?}"
    );

    assert_eq!(wallet(&store, user).await, (100, 10));
    assert_eq!(wallet(&store, other).await, (0, 0));
    assert_books_balance(&store).await;
}

async fn concurrent_capture_and_release_of_one_hold_have_exactly_one_winner(store: Store) {
    let user = funded_user(&store, 1, 10_000).await;
    let mut captured = 0;
    for g in 1..=20 {
        let generation = GenerationId(g);
        store.ledger().hold(user, generation, m(100)).await.unwrap();
        let (s1, s2) = (store.clone(), store.clone());
        let capture = tokio::spawn(async move { s1.ledger().capture(generation).await });
        let release = tokio::spawn(async move { s2.ledger().release(generation).await });
        let (capture, release) = (capture.await.unwrap(), release.await.unwrap());
        match (&capture, &release) {
            (Ok(c), Err(StoreError::HoldAlreadySettled { state, .. })) => {
                assert!(c.fresh);
                assert_eq!(*state, HoldState::Captured);
                captured += 1;
            }
            (Err(StoreError::HoldAlreadySettled { state, .. }), Ok(r)) => {
                assert!(r.fresh);
                assert_eq!(*state, HoldState::Released);
            }
            other => panic!("both or neither won: {other:?}"),
        }
        let hold = store.ledger().hold_of(generation).await.unwrap().unwrap();
        assert_ne!(hold.state, HoldState::Held);
    }
    assert_eq!(wallet(&store, user).await, (10_000 - captured * 100, 0));
    assert_books_balance(&store).await;
}

async fn capturing_a_released_hold_is_refused_and_changes_nothing(store: Store) {
    let user = funded_user(&store, 1, 500).await;
    let generation = GenerationId(1);
    store.ledger().hold(user, generation, m(200)).await.unwrap();
    store.ledger().release(generation).await.unwrap();
    let before = store.ledger().entries(user, 100).await.unwrap();

    let outcome = store.ledger().capture(generation).await;
    assert!(
        matches!(
            outcome,
            Err(StoreError::HoldAlreadySettled { state: HoldState::Released, generation: g }) if g == generation
        ),
        "{outcome:?}"
    );
    assert_eq!(store.ledger().entries(user, 100).await.unwrap(), before);
    assert_eq!(wallet(&store, user).await, (500, 0));
    let missing = store.ledger().capture(GenerationId(404)).await;
    assert!(
        matches!(missing, Err(StoreError::NoHold(GenerationId(404)))),
        "{missing:?}"
    );
    assert_books_balance(&store).await;
}

async fn a_hold_larger_than_the_available_balance_is_refused_and_changes_nothing(store: Store) {
    let user = funded_user(&store, 1, 100).await;
    store
        .ledger()
        .hold(user, GenerationId(1), m(70))
        .await
        .unwrap();

    let outcome = store.ledger().hold(user, GenerationId(2), m(31)).await;
    match outcome {
        Err(StoreError::InsufficientFunds {
            available,
            requested,
        }) => {
            assert_eq!((available, requested), (m(30), m(31)));
        }
        other => panic!("expected InsufficientFunds, got {other:?}"),
    }
    assert_eq!(wallet(&store, user).await, (100, 70));
    assert!(
        store
            .ledger()
            .hold_of(GenerationId(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.ledger().entry("hold:2").await.unwrap().is_none());
    // The refused key stays free: the same hold succeeds once money arrives.
    store
        .ledger()
        .topup(user, m(1), "topup:more", None)
        .await
        .unwrap();
    assert!(
        store
            .ledger()
            .hold(user, GenerationId(2), m(31))
            .await
            .unwrap()
            .fresh
    );
    assert_books_balance(&store).await;
}

async fn a_negative_adjustment_below_the_available_balance_is_refused(store: Store) {
    let user = funded_user(&store, 1, 100).await;
    let admin = UserId(99);
    store
        .ledger()
        .hold(user, GenerationId(1), m(60))
        .await
        .unwrap();

    let outcome = store
        .ledger()
        .adjust(user, m(-41), "adjust:a", admin, "too much")
        .await;
    assert!(
        matches!(outcome, Err(StoreError::InsufficientFunds { available, .. }) if available == m(40)),
        "{outcome:?}"
    );
    assert!(store.audit().recent(10).await.unwrap().is_empty());
    assert_eq!(wallet(&store, user).await, (100, 60));

    let applied = store
        .ledger()
        .adjust(user, m(-40), "adjust:b", admin, "fine")
        .await
        .unwrap();
    assert_eq!(applied.entry.amount, m(-40));
    assert_eq!(wallet(&store, user).await, (60, 60));
    let audit = store.audit().recent(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor, audit[0].target, audit[0].amount),
        (admin, Some(user), Some(m(-40)))
    );
    let zero = store
        .ledger()
        .adjust(user, Money::ZERO, "adjust:c", admin, "nothing")
        .await;
    assert!(
        matches!(zero, Err(StoreError::InvalidAmount { .. })),
        "{zero:?}"
    );
    assert_books_balance(&store).await;
}

async fn a_refund_cannot_take_held_money(store: Store) {
    let user = funded_user(&store, 1, 100).await;
    store
        .ledger()
        .hold(user, GenerationId(1), m(80))
        .await
        .unwrap();
    let outcome = store.ledger().refund(user, m(50), "refund:x", None).await;
    assert!(
        matches!(outcome, Err(StoreError::InsufficientFunds { .. })),
        "{outcome:?}"
    );
    assert_eq!(wallet(&store, user).await, (100, 80));
    store
        .ledger()
        .refund(user, m(20), "refund:y", None)
        .await
        .unwrap();
    assert_eq!(wallet(&store, user).await, (80, 80));
    assert_books_balance(&store).await;
}

async fn check_reports_a_wallet_changed_behind_the_ledgers_back(store: Store) {
    let user = funded_user(&store, 1, 300).await;
    let fine = funded_user(&store, 2, 300).await;
    store
        .ledger()
        .hold(user, GenerationId(1), m(100))
        .await
        .unwrap();
    assert_books_balance(&store).await;

    sqlx::query("UPDATE wallets SET balance = balance + 5 WHERE user_id = $1")
        .bind(user.0)
        .execute(store.pool())
        .await
        .unwrap();
    let drift = store.ledger().check().await.unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].user, user);
    assert_ne!(drift[0].user, fine);
    let stored = drift[0].stored.unwrap();
    assert_eq!((stored.balance, stored.held), (m(305), m(100)));
    assert_eq!(
        (drift[0].expected.balance, drift[0].expected.held),
        (m(300), m(100))
    );
    assert_eq!(drift[0].open_holds, m(100));
}

async fn ledger_entries_cannot_be_updated_or_deleted(store: Store) {
    let user = funded_user(&store, 1, 100).await;
    let update = sqlx::query("UPDATE ledger_entries SET amount = 1000000 WHERE user_id = $1")
        .bind(user.0)
        .execute(store.pool())
        .await;
    assert!(update.is_err());
    let delete = sqlx::query("DELETE FROM ledger_entries WHERE user_id = $1")
        .bind(user.0)
        .execute(store.pool())
        .await;
    assert!(delete.is_err());
    assert_eq!(wallet(&store, user).await, (100, 0));
    assert_books_balance(&store).await;
}
