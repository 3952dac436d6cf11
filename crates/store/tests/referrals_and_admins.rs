//! The referral rules and the admin limits in the store, on both engines: a
//! bonus is paid once, only for a qualifying top-up or spend, within the
//! inviter's monthly cap, never to a blocked inviter, and reversed once when
//! its payment is refunded; an admin's adjustment is audited with its ledger
//! entry, within the single cap and the daily budget, never on their own
//! wallet, and a refused one leaves no trace.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{
    assert_books_balance, confirmation, entries_with_prefix, funded_user, succeed_with, wallet,
};
use kiebot_domain::{Money, UserId};
use kiebot_store::{
    AdminRefusal, FinanceLimits, PaymentId, Permission, ReferralOutcome, ReferralRules, Role,
    Store, StoreError,
};

on_both_engines!(
    a_small_top_up_pays_nothing_and_the_first_qualifying_one_pays_once,
    spending_qualifies_when_configured,
    the_monthly_cap_and_a_blocked_inviter_settle_without_a_bonus,
    a_refund_of_the_qualifying_payment_reverses_the_bonus_once,
    a_reversal_takes_only_what_is_available_and_records_the_shortfall,
    an_adjustment_is_audited_with_its_entry_within_the_caps,
    concurrent_adjustments_never_exceed_the_daily_budget,
    grants_and_revocations_are_audited_and_set_the_role,
);

fn m(minor: i64) -> Money {
    Money::from_minor(minor)
}

fn rules() -> ReferralRules {
    ReferralRules {
        bonus: m(5_000),
        min_stars: 100,
        min_spend: None,
        monthly_cap: 10,
    }
}

async fn invited(store: &Store, invitee: i64, inviter: UserId) -> UserId {
    let invitee = funded_user(store, invitee, 0).await;
    assert!(store.referrals().record(invitee, inviter).await.unwrap());
    invitee
}

async fn pay(store: &Store, user: UserId, charge: &str, stars: i64) -> PaymentId {
    store
        .payments()
        .record_stars_payment(user, charge, stars, m(stars * 150), "p")
        .await
        .unwrap()
        .entry
        .payment
        .unwrap()
}

async fn audit_count(store: &Store, action: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM admin_audit WHERE action = $1")
        .bind(action)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn a_small_top_up_pays_nothing_and_the_first_qualifying_one_pays_once(store: Store) {
    let inviter = funded_user(&store, 1, 0).await;
    let invitee = invited(&store, 2, inviter).await;
    let refs = store.referrals();

    let small = pay(&store, invitee, "c-1", 1).await;
    assert!(
        refs.on_payment(invitee, small, 1, &rules())
            .await
            .unwrap()
            .is_none()
    );
    let small = pay(&store, invitee, "c-2", 99).await;
    assert!(
        refs.on_payment(invitee, small, 99, &rules())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(wallet(&store, inviter).await, (0, 0));
    assert_eq!(refs.get(invitee).await.unwrap().unwrap().outcome, None);

    let big = pay(&store, invitee, "c-3", 100).await;
    let s = refs
        .on_payment(invitee, big, 100, &rules())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.inviter, s.outcome), (inviter, ReferralOutcome::Paid));
    assert_eq!(wallet(&store, inviter).await, (5_000, 0));
    let r = refs.get(invitee).await.unwrap().unwrap();
    assert_eq!((r.payment, r.bonus), (Some(big), Some(m(5_000))));

    // Later qualifying top-ups pay nothing more.
    let again = pay(&store, invitee, "c-4", 500).await;
    assert!(
        refs.on_payment(invitee, again, 500, &rules())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(wallet(&store, inviter).await, (5_000, 0));
    assert_eq!(entries_with_prefix(&store, "referral:").await, 1);
    assert_books_balance(&store).await;
}

async fn spending_qualifies_when_configured(store: Store) {
    let inviter = funded_user(&store, 1, 0).await;
    let invitee = invited(&store, 2, inviter).await;
    store
        .ledger()
        .topup(invitee, m(10_000), "seed-invitee", None)
        .await
        .unwrap();
    let spend = ReferralRules {
        min_spend: Some(m(3_000)),
        ..rules()
    };
    let gens = store.generations();
    let mut spent = Vec::new();
    for (i, price) in [2_000, 1_500].into_iter().enumerate() {
        let id = gens
            .create_pending(&confirmation(invitee, &format!("d{i}"), price))
            .await
            .unwrap()
            .id();
        assert!(
            gens.mark_submitted(id, &format!("t{i}"), 0, i64::MAX)
                .await
                .unwrap()
        );
        spent.push(id);
    }
    // Held is not spent: nothing yet.
    assert!(
        store
            .referrals()
            .settle_spent(&spend, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Spending off: nothing whatever was spent.
    assert!(succeed_with(&store, spent[0], "{}").await.unwrap());
    assert!(
        store
            .referrals()
            .settle_spent(&rules(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // 20.00 captured, 30.00 needed.
    assert!(
        store
            .referrals()
            .settle_spent(&spend, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(succeed_with(&store, spent[1], "{}").await.unwrap());
    let settled = store.referrals().settle_spent(&spend, 100).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].0, invitee);
    assert_eq!(settled[0].1.outcome, ReferralOutcome::Paid);
    assert!(
        store
            .referrals()
            .settle_spent(&spend, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .referrals()
            .on_spend(invitee, &spend)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(wallet(&store, inviter).await, (5_000, 0));
    let r = store.referrals().get(invitee).await.unwrap().unwrap();
    assert_eq!(r.payment, None, "spending qualified, not a payment");
    assert_books_balance(&store).await;
}

async fn the_monthly_cap_and_a_blocked_inviter_settle_without_a_bonus(store: Store) {
    let inviter = funded_user(&store, 1, 0).await;
    let capped = ReferralRules {
        monthly_cap: 2,
        ..rules()
    };
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let invitee = invited(&store, 10 + i, inviter).await;
        let p = pay(&store, invitee, &format!("c-{i}"), 100).await;
        let s = store
            .referrals()
            .on_payment(invitee, p, 100, &capped)
            .await
            .unwrap()
            .unwrap();
        outcomes.push(s.outcome);
    }
    assert_eq!(
        outcomes,
        vec![
            ReferralOutcome::Paid,
            ReferralOutcome::Paid,
            ReferralOutcome::Capped
        ]
    );
    assert_eq!(wallet(&store, inviter).await, (10_000, 0));
    // The capped referral is settled: a later top-up does not pay it.
    let p = pay(&store, UserId(12), "c-late", 1_000).await;
    assert!(
        store
            .referrals()
            .on_payment(UserId(12), p, 1_000, &capped)
            .await
            .unwrap()
            .is_none()
    );

    // A blocked inviter gets nothing, and nothing later either.
    let blocked = funded_user(&store, 2, 0).await;
    store.users().set_blocked(blocked, true).await.unwrap();
    let invitee = invited(&store, 20, blocked).await;
    let p = pay(&store, invitee, "b-1", 100).await;
    let s = store
        .referrals()
        .on_payment(invitee, p, 100, &rules())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.outcome, s.bonus), (ReferralOutcome::Blocked, None));
    store.users().set_blocked(blocked, false).await.unwrap();
    let p = pay(&store, invitee, "b-2", 100).await;
    assert!(
        store
            .referrals()
            .on_payment(invitee, p, 100, &rules())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(wallet(&store, blocked).await, (0, 0));

    // Inviting oneself is not recorded.
    assert!(!store.referrals().record(blocked, blocked).await.unwrap());
    assert_books_balance(&store).await;
}

async fn a_refund_of_the_qualifying_payment_reverses_the_bonus_once(store: Store) {
    let inviter = funded_user(&store, 1, 1_000).await;
    let invitee = invited(&store, 2, inviter).await;
    let small = pay(&store, invitee, "small", 10).await;
    let _ = small;
    let p = pay(&store, invitee, "big", 100).await;
    store
        .referrals()
        .on_payment(invitee, p, 100, &rules())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wallet(&store, inviter).await, (6_000, 0));

    // Refunding another payment changes nothing for the inviter.
    store.payments().mark_refunded("small").await.unwrap();
    assert_eq!(wallet(&store, inviter).await, (6_000, 0));

    let refunds: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.payments().mark_refunded("big").await })
        })
        .collect();
    let mut fresh = 0;
    for r in refunds {
        fresh += usize::from(r.await.unwrap().unwrap().fresh);
    }
    assert_eq!(fresh, 1);
    assert_eq!(wallet(&store, inviter).await, (1_000, 0));
    assert_eq!(entries_with_prefix(&store, "referral-reversal:").await, 1);
    let r = store.referrals().get(invitee).await.unwrap().unwrap();
    assert!(r.reversed_at.is_some());
    assert_eq!(r.shortfall, Some(Money::ZERO));
    assert_books_balance(&store).await;
}

async fn a_reversal_takes_only_what_is_available_and_records_the_shortfall(store: Store) {
    let inviter = funded_user(&store, 1, 0).await;
    let invitee = invited(&store, 2, inviter).await;
    let p = pay(&store, invitee, "big", 100).await;
    store
        .referrals()
        .on_payment(invitee, p, 100, &rules())
        .await
        .unwrap()
        .unwrap();
    // The inviter holds 30.00 of the 50.00 for a generation in flight.
    store
        .generations()
        .create_pending(&confirmation(inviter, "d", 3_000))
        .await
        .unwrap();
    assert_eq!(wallet(&store, inviter).await, (5_000, 3_000));

    store.payments().mark_refunded("big").await.unwrap();
    // 20.00 taken, the held 30.00 untouched, the rest recorded.
    assert_eq!(wallet(&store, inviter).await, (3_000, 3_000));
    let r = store.referrals().get(invitee).await.unwrap().unwrap();
    assert_eq!(r.shortfall, Some(m(3_000)));
    // A repeat takes nothing more.
    assert!(!store.payments().mark_refunded("big").await.unwrap().fresh);
    assert_eq!(wallet(&store, inviter).await, (3_000, 3_000));
    assert_books_balance(&store).await;

    // With nothing available, nothing is taken and nothing breaks.
    let poor = funded_user(&store, 3, 0).await;
    let other = invited(&store, 4, poor).await;
    let p = pay(&store, other, "other", 200).await;
    store
        .referrals()
        .on_payment(other, p, 200, &rules())
        .await
        .unwrap()
        .unwrap();
    store
        .generations()
        .create_pending(&confirmation(poor, "d2", 5_000))
        .await
        .unwrap();
    assert!(store.payments().mark_refunded("other").await.unwrap().fresh);
    assert_eq!(wallet(&store, poor).await, (5_000, 5_000));
    assert_eq!(
        store
            .referrals()
            .get(other)
            .await
            .unwrap()
            .unwrap()
            .shortfall,
        Some(m(5_000))
    );
    assert_books_balance(&store).await;
}

fn limits() -> Option<FinanceLimits> {
    Some(FinanceLimits {
        max_single: m(10_000),
        daily_budget: m(25_000),
    })
}

async fn an_adjustment_is_audited_with_its_entry_within_the_caps(store: Store) {
    let admin = funded_user(&store, 2, 0).await;
    let user = funded_user(&store, 300, 5_000).await;
    let admins = store.admins();

    // Its own wallet: refused, nothing written.
    let e = admins
        .adjust(admin, admin, m(100), "k-self", "me", limits())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::AdminRefused(AdminRefusal::SelfTarget)),
        "{e}"
    );
    // Above the single cap, either sign.
    for a in [10_001, -10_001] {
        let e = admins
            .adjust(admin, user, m(a), &format!("k{a}"), "x", limits())
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::AdminRefused(AdminRefusal::OverSingleCap { max }) if max == m(10_000)),
            "{e}"
        );
    }
    assert_eq!(audit_count(&store, "adjust").await, 0);
    assert_eq!(entries_with_prefix(&store, "k").await, 0);

    // Within: audited with its entry; a retry applies once and costs nothing.
    let a = admins
        .adjust(admin, user, m(10_000), "k1", "goodwill", limits())
        .await
        .unwrap();
    assert!(a.fresh);
    assert!(
        !admins
            .adjust(admin, user, m(10_000), "k1", "goodwill", limits())
            .await
            .unwrap()
            .fresh
    );
    admins
        .adjust(admin, user, m(-5_000), "k2", "correction", limits())
        .await
        .unwrap();
    assert_eq!(audit_count(&store, "adjust").await, 2);
    assert_eq!(
        admins.spent(admin, kiebot_store::now_ms()).await.unwrap(),
        m(15_000)
    );
    // 25.00 budget, 15.00 spent (both signs count): 10.01 is refused...
    let e = admins
        .adjust(admin, user, m(10_001), "k3", "x", limits())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::AdminRefused(AdminRefusal::OverSingleCap { .. })
        ),
        "{e}"
    );
    // ... and a refund of 10.01 too; 10.00 fits, then nothing.
    let e = admins
        .authorize_refund(admin, user, m(10_001), "ch", limits())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::AdminRefused(AdminRefusal::OverSingleCap { .. })
        ),
        "{e}"
    );
    admins
        .authorize_refund(admin, user, m(10_000), "ch", limits())
        .await
        .unwrap();
    let e = admins
        .adjust(admin, user, m(1), "k4", "x", limits())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::AdminRefused(AdminRefusal::OverDailyBudget { left, .. }) if left == Money::ZERO),
        "{e}"
    );
    assert_eq!(audit_count(&store, "adjust").await, 2);
    assert_eq!(audit_count(&store, "refund_request").await, 1);
    // The owner (no limits) may, but not on their own wallet either.
    admins
        .adjust(UserId(1), user, m(100_000), "k5", "owner", None)
        .await
        .unwrap();
    let e = admins
        .adjust(UserId(1), UserId(1), m(1), "k6", "x", None)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        StoreError::AdminRefused(AdminRefusal::SelfTarget)
    ));
    assert_eq!(
        wallet(&store, user).await,
        (5_000 + 10_000 - 5_000 + 100_000, 0)
    );
    // Blocking: audited in the same transaction; oneself refused.
    admins.set_blocked(admin, user, true).await.unwrap();
    assert!(store.users().get(user).await.unwrap().unwrap().blocked);
    assert!(admins.set_blocked(admin, admin, true).await.is_err());
    assert_eq!(audit_count(&store, "block").await, 1);
    assert_books_balance(&store).await;
}

async fn concurrent_adjustments_never_exceed_the_daily_budget(store: Store) {
    let admin = funded_user(&store, 2, 0).await;
    let user = funded_user(&store, 300, 0).await;
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .admins()
                    .adjust(admin, user, m(10_000), &format!("c{i}"), "x", limits())
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::AdminRefused(AdminRefusal::OverDailyBudget { .. })) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 2, "25.00 a day holds two adjustments of 10.00");
    assert_eq!(wallet(&store, user).await, (20_000, 0));
    assert_eq!(audit_count(&store, "adjust").await, 2);

    // One command delivered four times at once: applied and audited once.
    funded_user(&store, 1, 0).await;
    let retries: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .admins()
                    .adjust(UserId(1), user, m(700), "same-update", "x", None)
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for r in retries {
        fresh += usize::from(r.await.unwrap().unwrap().fresh);
    }
    assert_eq!(fresh, 1);
    assert_eq!(wallet(&store, user).await, (20_700, 0));
    assert_eq!(audit_count(&store, "adjust").await, 3);
    assert_books_balance(&store).await;
}

async fn grants_and_revocations_are_audited_and_set_the_role(store: Store) {
    let owner = funded_user(&store, 1, 0).await;
    let admin = funded_user(&store, 2, 0).await;
    let admins = store.admins();
    assert!(
        admins
            .grant(owner, admin, Permission::Finance)
            .await
            .unwrap()
    );
    assert!(
        !admins
            .grant(owner, admin, Permission::Finance)
            .await
            .unwrap()
    );
    assert!(
        admins
            .grant(owner, admin, Permission::Support)
            .await
            .unwrap()
    );
    assert!(matches!(
        admins.grant(owner, UserId(404), Permission::Support).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        admins.grant(owner, owner, Permission::Support).await,
        Err(StoreError::AdminRefused(AdminRefusal::SelfTarget))
    ));
    assert_eq!(
        admins
            .permissions(admin)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![Permission::Support, Permission::Finance]
    );
    assert_eq!(
        store.users().get(admin).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert_eq!(audit_count(&store, "grant").await, 2);

    assert!(
        admins
            .revoke(owner, admin, Permission::Finance, false)
            .await
            .unwrap()
    );
    assert!(
        !admins
            .revoke(owner, admin, Permission::Finance, false)
            .await
            .unwrap()
    );
    assert_eq!(
        store.users().get(admin).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert!(
        admins
            .revoke(owner, admin, Permission::Support, false)
            .await
            .unwrap()
    );
    assert_eq!(
        store.users().get(admin).await.unwrap().unwrap().role,
        Role::User
    );
    assert!(admins.permissions(admin).await.unwrap().is_empty());
    assert_eq!(audit_count(&store, "revoke").await, 2);
}
