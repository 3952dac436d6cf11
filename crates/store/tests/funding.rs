//! Generations not paid from the wallet: a daily free use and a limited
//! admin's budget are taken at confirm and count only for a generation that
//! does not fail: failing, expiring or canceling gives them back once, in the
//! transaction that ends the generation.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{
    assert_books_balance, confirm_funded, confirmation, funded_user, succeed_with, wallet,
};
use kiebot_domain::{GenerationId, GenerationStatus as S, ModelId, Money, UserId};
use kiebot_store::{Creation, Funding, Store, StoreError};

on_both_engines!(
    a_failed_free_generation_gives_its_use_back_once,
    a_succeeded_free_generation_keeps_its_use,
    expired_and_canceled_free_generations_give_their_use_back,
    the_free_quota_is_taken_in_the_confirm_transaction,
    a_budget_pays_for_a_limited_admin_and_is_refused_when_short,
    a_failed_budget_generation_gives_the_budget_back_once,
    concurrent_confirmations_never_overspend_a_budget,
    setting_a_budget_is_audited,
);

const DAY: &str = "2026-11-24";

fn model() -> ModelId {
    // The model `confirmation` uses.
    ModelId::parse("google/nano-banana").unwrap()
}

fn free(limit: u32) -> Funding {
    Funding::FreeQuota {
        day: DAY.to_owned(),
        limit,
    }
}

fn budget(minor: i64) -> Funding {
    Funding::AdminBudget {
        amount: Money::from_minor(minor),
    }
}

/// Confirms `n` free-priced drafts of `user` at once with `funding`;
/// returns how many were created and how many refused with the error
/// `refusal` expects (anything else fails the test).
async fn confirm_at_once(
    store: &Store,
    user: UserId,
    n: usize,
    funding: Funding,
    refusal: fn(&StoreError) -> bool,
) -> (usize, usize) {
    let confirms: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let funding = funding.clone();
            tokio::spawn(async move {
                confirm_funded(&store, &confirmation(user, &format!("d{i}"), 0), &funding).await
            })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for c in confirms {
        match c.await.unwrap() {
            Ok(Creation::Created(_)) => created += 1,
            Err(e) if refusal(&e) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    (created, refused)
}

async fn used(store: &Store, user: UserId) -> u32 {
    store
        .free_usage()
        .used_today(user, &model(), DAY)
        .await
        .unwrap()
}

async fn budget_of(store: &Store, user: UserId) -> Option<Money> {
    store.users().get(user).await.unwrap().unwrap().admin_budget
}

async fn create(store: &Store, user: UserId, draft: &str, funding: &Funding) -> GenerationId {
    match confirm_funded(store, &confirmation(user, draft, 0), funding)
        .await
        .unwrap()
    {
        Creation::Created(id) => id,
        other => panic!("not created: {other:?}"),
    }
}

async fn fail(store: &Store, id: GenerationId) -> bool {
    store
        .generations()
        .finish_failure(id, S::Failed, "500", "KIE failed")
        .await
        .unwrap()
}

async fn succeed(store: &Store, id: GenerationId) {
    let g = store.generations();
    assert!(
        g.mark_submitted(id, &format!("task-{id}"), 0, i64::MAX)
            .await
            .unwrap()
    );
    assert!(
        succeed_with(store, id, r#"{"resultUrls":[]}"#)
            .await
            .unwrap()
    );
}

async fn a_failed_free_generation_gives_its_use_back_once(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    let id = create(&store, user, "d1", &free(5)).await;
    assert_eq!(used(&store, user).await, 1);
    let g = store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.free_day.as_deref(), Some(DAY));
    assert_eq!(
        (g.price, g.budget_spent, g.funding_returned_at),
        (Money::ZERO, None, None)
    );

    // A double tap on the same draft takes nothing more.
    let again = confirm_funded(&store, &confirmation(user, "d1", 0), &free(5))
        .await
        .unwrap();
    assert_eq!(again, Creation::AlreadyExists(id));
    assert_eq!(used(&store, user).await, 1);

    assert!(fail(&store, id).await);
    assert_eq!(used(&store, user).await, 0);
    let g = store.generations().get(id).await.unwrap().unwrap();
    assert!(g.funding_returned_at.is_some());
    assert_eq!(
        g.free_day.as_deref(),
        Some(DAY),
        "the row still says which day it used"
    );

    // Another generation takes a use; failing the first one again (a
    // retried finalizer) gives back nothing more.
    let other = create(&store, user, "d2", &free(5)).await;
    assert_eq!(used(&store, user).await, 1);
    assert!(!fail(&store, id).await);
    assert!(
        !store
            .generations()
            .finish_failure(id, S::Expired, "deadline", "late")
            .await
            .unwrap()
    );
    assert_eq!(used(&store, user).await, 1);

    // Racing failures of one generation give back once.
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { fail(&store, other).await })
        })
        .collect();
    let mut moved = 0;
    for r in racers {
        moved += usize::from(r.await.unwrap());
    }
    assert_eq!(moved, 1);
    assert_eq!(used(&store, user).await, 0);
    assert_eq!(wallet(&store, user).await, (0, 0));
    assert_books_balance(&store).await;
}

async fn a_succeeded_free_generation_keeps_its_use(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    let id = create(&store, user, "d1", &free(1)).await;
    succeed(&store, id).await;
    assert_eq!(used(&store, user).await, 1);
    assert!(store.generations().mark_told(id, "[]").await.unwrap());
    assert_eq!(used(&store, user).await, 1);
    // A late failure report cannot end it, nor give the use back.
    let late = store
        .generations()
        .finish_failure(id, S::Failed, "500", "late")
        .await;
    assert!(
        matches!(late, Err(StoreError::IllegalTransition(_))),
        "{late:?}"
    );
    assert_eq!(used(&store, user).await, 1);
    let g = store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.funding_returned_at, None);
    // The one use of the day is spent.
    let refused = confirm_funded(&store, &confirmation(user, "d2", 0), &free(1)).await;
    assert!(
        matches!(refused, Err(StoreError::FreeQuotaUsedUp { limit: 1 })),
        "{refused:?}"
    );
}

async fn expired_and_canceled_free_generations_give_their_use_back(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    let expired = create(&store, user, "d1", &free(5)).await;
    let canceled = create(&store, user, "d2", &free(5)).await;
    let kept = create(&store, user, "d3", &free(5)).await;
    assert_eq!(used(&store, user).await, 3);
    assert!(
        store
            .generations()
            .finish_failure(expired, S::Expired, "deadline", "late")
            .await
            .unwrap()
    );
    assert_eq!(used(&store, user).await, 2);
    // An operator's cancel takes the same step.
    assert!(
        store
            .generations()
            .finish_failure(canceled, S::Canceled, "canceled", "canceled by an operator")
            .await
            .unwrap()
    );
    assert_eq!(used(&store, user).await, 1);
    succeed(&store, kept).await;
    assert_eq!(used(&store, user).await, 1);
}

async fn the_free_quota_is_taken_in_the_confirm_transaction(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    // Two drafts priced free on two screens, confirmed at once, with one use
    // left: one is created, the other refused, and nothing of it remains.
    let (created, refused) = confirm_at_once(&store, user, 2, free(1), |e| {
        matches!(e, StoreError::FreeQuotaUsedUp { .. })
    })
    .await;
    assert_eq!((created, refused), (1, 1));
    assert_eq!(used(&store, user).await, 1);
    let gens = store
        .generations()
        .list_for_user(user, 0, 10)
        .await
        .unwrap();
    assert_eq!(gens.len(), 1, "the refused confirmation left no row");

    // A free use and a wallet price at once is a caller's bug.
    let both = confirm_funded(&store, &confirmation(user, "x", 100), &free(5)).await;
    assert!(
        matches!(both, Err(StoreError::InvalidAmount { .. })),
        "{both:?}"
    );
}

async fn a_budget_pays_for_a_limited_admin_and_is_refused_when_short(store: Store) {
    let admin = funded_user(&store, 7, 5_000).await;
    store
        .users()
        .set_admin_budget(admin, Some(Money::from_minor(1_000)))
        .await
        .unwrap();
    let id = create(&store, admin, "d1", &budget(300)).await;
    assert_eq!(budget_of(&store, admin).await, Some(Money::from_minor(700)));
    // Paid by the budget: the admin's own money is not touched.
    assert_eq!(wallet(&store, admin).await, (5_000, 0));
    let g = store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(
        (g.price, g.budget_spent),
        (Money::ZERO, Some(Money::from_minor(300)))
    );
    assert!(store.ledger().hold_of(id).await.unwrap().is_none());

    let refused = confirm_funded(&store, &confirmation(admin, "d2", 0), &budget(701)).await;
    match refused {
        Err(StoreError::BudgetExhausted {
            available,
            requested,
        }) => {
            assert_eq!(available, Some(Money::from_minor(700)));
            assert_eq!(requested, Money::from_minor(701));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(budget_of(&store, admin).await, Some(Money::from_minor(700)));
    assert_eq!(
        store
            .generations()
            .list_for_user(admin, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Exactly what is left is enough.
    let last = create(&store, admin, "d3", &budget(700)).await;
    assert_eq!(budget_of(&store, admin).await, Some(Money::ZERO));
    succeed(&store, last).await;
    succeed(&store, id).await;
    assert_eq!(
        budget_of(&store, admin).await,
        Some(Money::ZERO),
        "spent on success"
    );

    // Someone without a budget cannot spend one.
    let user = funded_user(&store, 8, 5_000).await;
    let none = confirm_funded(&store, &confirmation(user, "u1", 0), &budget(1)).await;
    assert!(
        matches!(
            none,
            Err(StoreError::BudgetExhausted {
                available: None,
                ..
            })
        ),
        "{none:?}"
    );
    assert_eq!(wallet(&store, admin).await, (5_000, 0));
    assert_books_balance(&store).await;
}

async fn a_failed_budget_generation_gives_the_budget_back_once(store: Store) {
    let admin = funded_user(&store, 7, 0).await;
    store
        .users()
        .set_admin_budget(admin, Some(Money::from_minor(1_000)))
        .await
        .unwrap();
    let id = create(&store, admin, "d1", &budget(400)).await;
    let other = create(&store, admin, "d2", &budget(100)).await;
    assert_eq!(budget_of(&store, admin).await, Some(Money::from_minor(500)));
    assert!(fail(&store, id).await);
    assert_eq!(budget_of(&store, admin).await, Some(Money::from_minor(900)));
    assert!(!fail(&store, id).await);
    assert!(
        !store
            .generations()
            .finish_failure(id, S::Canceled, "canceled", "canceled by an operator")
            .await
            .unwrap()
    );
    assert_eq!(budget_of(&store, admin).await, Some(Money::from_minor(900)));
    let g = store.generations().get(id).await.unwrap().unwrap();
    assert!(g.funding_returned_at.is_some());

    // A budget the owner removed meanwhile stays removed.
    store.users().set_admin_budget(admin, None).await.unwrap();
    assert!(fail(&store, other).await);
    assert_eq!(budget_of(&store, admin).await, None);
}

async fn concurrent_confirmations_never_overspend_a_budget(store: Store) {
    let admin = funded_user(&store, 7, 0).await;
    store
        .users()
        .set_admin_budget(admin, Some(Money::from_minor(1_000)))
        .await
        .unwrap();
    let (created, refused) = confirm_at_once(&store, admin, 5, budget(300), |e| {
        matches!(e, StoreError::BudgetExhausted { .. })
    })
    .await;
    assert_eq!((created, refused), (3, 2));
    assert_eq!(budget_of(&store, admin).await, Some(Money::from_minor(100)));
}

async fn setting_a_budget_is_audited(store: Store) {
    let owner = funded_user(&store, 1, 0).await;
    let admin = funded_user(&store, 7, 0).await;
    let before = store
        .users()
        .set_admin_budget_audited(admin, Some(Money::from_minor(2_500)), owner, "November")
        .await
        .unwrap();
    assert_eq!(before, None);
    let before = store
        .users()
        .set_admin_budget_audited(admin, None, owner, "left the team")
        .await
        .unwrap();
    assert_eq!(before, Some(Money::from_minor(2_500)));
    assert_eq!(budget_of(&store, admin).await, None);
    let log = store.audit().recent(10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (
            log[1].actor,
            log[1].action.as_str(),
            log[1].target,
            log[1].amount,
            log[1].reason.as_str()
        ),
        (
            owner,
            "set_budget",
            Some(admin),
            Some(Money::from_minor(2_500)),
            "November"
        )
    );
    assert_eq!(
        (log[0].amount, log[0].reason.as_str()),
        (None, "left the team")
    );

    let negative = store
        .users()
        .set_admin_budget_audited(admin, Some(Money::from_minor(-1)), owner, "x")
        .await;
    assert!(matches!(negative, Err(StoreError::InvalidAmount { .. })));
    let missing = store
        .users()
        .set_admin_budget_audited(UserId(404), Some(Money::from_minor(1)), owner, "x")
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    assert_eq!(store.audit().recent(10).await.unwrap().len(), 2);
}
