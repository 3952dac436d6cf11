//! Where money comes from: Stars payments, promo codes and referrals each
//! credit once, however often the update arrives.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{assert_books_balance, entries_with_prefix, funded_user, wallet};
use kiebot_domain::{GenerationId, Money, UserId};
use kiebot_store::{PaymentStatus, PromoRefusal, Store, StoreError, now_ms};

on_both_engines!(
    a_duplicate_stars_payment_is_credited_once,
    a_refund_debits_once_and_never_takes_spent_money,
    a_promo_code_is_redeemed_once_per_user_within_its_limits,
    a_referral_is_recorded_once_and_its_bonus_paid_once,
);

fn m(minor: i64) -> Money {
    Money::from_minor(minor)
}

async fn a_duplicate_stars_payment_is_credited_once(store: Store) {
    // The payer has never been seen: the payment creates them.
    let user = UserId(1);
    let payments: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .payments()
                    .record_stars_payment(user, "charge-1", 50, m(7_500), "topup:50")
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    let mut entries = vec![];
    for p in payments {
        let applied = p.await.unwrap().unwrap();
        fresh += usize::from(applied.fresh);
        entries.push(applied.entry);
    }
    assert_eq!(fresh, 1);
    assert!(entries.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(entries[0].key, "topup:charge-1");
    assert_eq!(wallet(&store, user).await, (7_500, 0));

    let payment = store.payments().get("charge-1").await.unwrap().unwrap();
    assert_eq!(
        (payment.user, payment.stars, payment.amount),
        (user, 50, m(7_500))
    );
    assert_eq!(payment.status, PaymentStatus::Paid);
    assert_eq!(entries[0].payment, Some(payment.id));

    // The same charge id claiming another amount or payer is refused.
    let forged = store
        .payments()
        .record_stars_payment(user, "charge-1", 50, m(9_999), "x")
        .await;
    assert!(
        matches!(forged, Err(StoreError::KeyConflict { .. })),
        "{forged:?}"
    );
    let forged = store
        .payments()
        .record_stars_payment(UserId(2), "charge-1", 50, m(7_500), "x")
        .await;
    assert!(
        matches!(forged, Err(StoreError::KeyConflict { .. })),
        "{forged:?}"
    );
    assert_eq!(wallet(&store, user).await, (7_500, 0));
    assert_eq!(
        store
            .payments()
            .list_for_user(user, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_books_balance(&store).await;
}

async fn a_refund_debits_once_and_never_takes_spent_money(store: Store) {
    let user = UserId(1);
    store
        .payments()
        .record_stars_payment(user, "c1", 10, m(1_000), "p")
        .await
        .unwrap();
    store
        .payments()
        .record_stars_payment(user, "c2", 10, m(1_000), "p")
        .await
        .unwrap();
    store
        .ledger()
        .hold(user, GenerationId(1), m(1_500))
        .await
        .unwrap();

    // c1 can be paid back only from the 500 not held.
    let refused = store.payments().mark_refunded("c1").await;
    assert!(
        matches!(refused, Err(StoreError::InsufficientFunds { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.payments().get("c1").await.unwrap().unwrap().status,
        PaymentStatus::Paid
    );

    store.ledger().release(GenerationId(1)).await.unwrap();
    let first = store.payments().mark_refunded("c1").await.unwrap();
    let again = store.payments().mark_refunded("c1").await.unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);
    assert_eq!(wallet(&store, user).await, (1_000, 0));
    let payment = store.payments().get("c1").await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert!(payment.refunded_at.is_some());

    let missing = store.payments().mark_refunded("nope").await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    assert_books_balance(&store).await;
}

async fn a_promo_code_is_redeemed_once_per_user_within_its_limits(store: Store) {
    let admin = UserId(99);
    let (a, b, c) = (
        funded_user(&store, 1, 0).await,
        funded_user(&store, 2, 0).await,
        funded_user(&store, 3, 0).await,
    );
    let promos = store.promos();
    assert!(
        promos
            .create("SPRING", m(300), Some(2), None, admin)
            .await
            .unwrap()
    );
    assert!(
        !promos
            .create("SPRING", m(999), None, None, admin)
            .await
            .unwrap()
    );

    let first = promos.redeem("SPRING", a).await.unwrap();
    let again = promos.redeem("SPRING", a).await.unwrap();
    assert!(first.fresh && !again.fresh);
    assert_eq!(first.entry, again.entry);
    assert_eq!(first.entry.key, "promo:SPRING:1");
    assert!(promos.redeem("SPRING", b).await.unwrap().fresh);
    let used_up = promos.redeem("SPRING", c).await;
    assert!(
        matches!(
            used_up,
            Err(StoreError::PromoRefused {
                reason: PromoRefusal::Exhausted,
                ..
            })
        ),
        "{used_up:?}"
    );
    // A user who redeemed it still hears "already redeemed", not "used up".
    assert!(!promos.redeem("SPRING", a).await.unwrap().fresh);
    assert_eq!(promos.get("SPRING").await.unwrap().unwrap().uses, 2);

    promos
        .create("OLD", m(100), None, Some(now_ms() - 1), admin)
        .await
        .unwrap();
    let expired = promos.redeem("OLD", c).await;
    assert!(
        matches!(
            expired,
            Err(StoreError::PromoRefused {
                reason: PromoRefusal::Expired,
                ..
            })
        ),
        "{expired:?}"
    );
    let unknown = promos.redeem("NOPE", c).await;
    assert!(
        matches!(
            unknown,
            Err(StoreError::PromoRefused {
                reason: PromoRefusal::Unknown,
                ..
            })
        ),
        "{unknown:?}"
    );

    assert_eq!(wallet(&store, a).await, (300, 0));
    assert_eq!(wallet(&store, b).await, (300, 0));
    assert_eq!(wallet(&store, c).await, (0, 0));
    assert_eq!(promos.get("OLD").await.unwrap().unwrap().uses, 0);
    assert_books_balance(&store).await;
}

async fn a_referral_is_recorded_once_and_its_bonus_paid_once(store: Store) {
    let inviter = funded_user(&store, 1, 0).await;
    let invitee = funded_user(&store, 2, 0).await;
    let late = funded_user(&store, 3, 0).await;
    let referrals = store.referrals();

    assert!(referrals.record(invitee, inviter).await.unwrap());
    assert!(!referrals.record(invitee, late).await.unwrap());
    assert!(!referrals.record(late, late).await.unwrap());
    assert!(!referrals.record(late, UserId(404)).await.unwrap());
    assert_eq!(referrals.inviter_of(invitee).await.unwrap(), Some(inviter));
    assert_eq!(
        store.users().get(invitee).await.unwrap().unwrap().referrer,
        Some(inviter)
    );

    let paid = store
        .payments()
        .record_stars_payment(invitee, "ref-charge", 100, m(15_000), "p")
        .await
        .unwrap();
    let payment = paid.entry.payment.unwrap();
    let rules = kiebot_store::ReferralRules {
        bonus: m(500),
        min_stars: 100,
        min_spend: None,
        monthly_cap: 10,
    };
    let bonuses: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .referrals()
                    .on_payment(invitee, payment, 100, &rules)
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for b in bonuses {
        fresh += usize::from(b.await.unwrap().unwrap().is_some_and(|s| s.bonus.is_some()));
    }
    assert_eq!(fresh, 1);
    assert!(
        referrals
            .on_payment(late, payment, 100, &rules)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(wallet(&store, inviter).await, (500, 0));
    assert_eq!(entries_with_prefix(&store, "referral:").await, 1);
    assert_books_balance(&store).await;
}
