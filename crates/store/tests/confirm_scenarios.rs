//! One table of confirm scenarios, run on both engines and on every path a
//! confirmation can take: alone (SQLite's transaction, PostgreSQL's single
//! function) and inside a burst (PostgreSQL's batch function, which writes
//! the plain elements itself and hands the rest to the single function).
//! Each scenario must end the same way everywhere: the same refusal or
//! creation, and the same money held.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{confirm_funded, confirmation, funded_user, wallet};
use kiebot_domain::{Money, UserId};
use kiebot_store::{Creation, Funding, Store, StoreError};

on_both_engines!(
    every_scenario_ends_the_same_alone,
    every_scenario_ends_the_same_in_a_burst,
);

/// How a scenario must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Created,
    AlreadyExists,
    NoUser,
    Blocked,
    TooManyActive,
    FreeQuotaUsedUp,
    BudgetExhausted,
    InsufficientFunds,
}

fn outcome(r: &Result<Creation, StoreError>) -> Expect {
    match r {
        Ok(Creation::Created(_)) => Expect::Created,
        Ok(Creation::AlreadyExists(_)) => Expect::AlreadyExists,
        Err(StoreError::NotFound { .. }) => Expect::NoUser,
        Err(StoreError::Blocked { .. }) => Expect::Blocked,
        Err(StoreError::TooManyActive { .. }) => Expect::TooManyActive,
        Err(StoreError::FreeQuotaUsedUp { .. }) => Expect::FreeQuotaUsedUp,
        Err(StoreError::BudgetExhausted { .. }) => Expect::BudgetExhausted,
        Err(StoreError::InsufficientFunds { .. }) => Expect::InsufficientFunds,
        Err(e) => panic!("not a confirm outcome: {e:?}"),
    }
}

/// A scenario: what the user has, what they confirm, how it ends and what is
/// held afterwards.
struct Scenario {
    name: &'static str,
    /// Money on the wallet (`None`: the user does not exist).
    balance: Option<i64>,
    blocked: bool,
    /// Generations already active (each held at 100).
    active: u32,
    /// Free uses already taken today (for `Funding::FreeQuota` with limit 1).
    free_used: bool,
    /// The admin budget, if any.
    budget: Option<i64>,
    /// The confirmation: wallet price and funding.
    price: i64,
    funding: fn() -> Funding,
    /// Confirm the same draft a second time first.
    repeat: bool,
    expect: Expect,
    /// Money held after the confirmation.
    held_after: i64,
}

const DAY: &str = "2026-11-24";

fn wallet_funding() -> Funding {
    Funding::Wallet
}
fn free_use() -> Funding {
    Funding::FreeQuota {
        day: DAY.to_owned(),
        limit: 1,
    }
}
fn budget_300() -> Funding {
    Funding::AdminBudget {
        amount: Money::from_minor(300),
    }
}

fn scenarios() -> Vec<Scenario> {
    let base = |name, expect, held_after| Scenario {
        name,
        balance: Some(1_000),
        blocked: false,
        active: 0,
        free_used: false,
        budget: None,
        price: 100,
        funding: wallet_funding,
        repeat: false,
        expect,
        held_after,
    };
    vec![
        base("plain", Expect::Created, 100),
        Scenario {
            repeat: true,
            ..base("the same draft twice", Expect::AlreadyExists, 100)
        },
        Scenario {
            balance: None,
            ..base("no such user", Expect::NoUser, 0)
        },
        Scenario {
            blocked: true,
            ..base("blocked", Expect::Blocked, 0)
        },
        Scenario {
            active: 5,
            ..base("five already active", Expect::TooManyActive, 500)
        },
        Scenario {
            active: 4,
            ..base("four already active", Expect::Created, 500)
        },
        Scenario {
            balance: Some(99),
            ..base("one short", Expect::InsufficientFunds, 0)
        },
        Scenario {
            balance: Some(100),
            ..base("exactly enough", Expect::Created, 100)
        },
        Scenario {
            price: 0,
            funding: free_use,
            ..base("a free use", Expect::Created, 0)
        },
        Scenario {
            price: 0,
            funding: free_use,
            free_used: true,
            ..base("the day's free use taken", Expect::FreeQuotaUsedUp, 0)
        },
        Scenario {
            price: 0,
            funding: budget_300,
            budget: Some(300),
            ..base("a budget that covers it", Expect::Created, 0)
        },
        Scenario {
            price: 0,
            funding: budget_300,
            budget: Some(299),
            ..base("a budget one short", Expect::BudgetExhausted, 0)
        },
        Scenario {
            price: 0,
            funding: budget_300,
            ..base("no budget at all", Expect::BudgetExhausted, 0)
        },
    ]
}

/// Sets up scenario `i`'s user (id 1000 + i) and returns it.
async fn arrange(store: &Store, i: usize, s: &Scenario) -> UserId {
    let user = UserId(1_000 + i64::try_from(i).unwrap());
    let Some(balance) = s.balance else {
        return user;
    };
    funded_user(store, user.0, balance + i64::from(s.active) * 100).await;
    for n in 0..s.active {
        let new = confirmation(user, &format!("{i}:active:{n}"), 100);
        assert!(matches!(
            store.generations().create_pending(&new).await,
            Ok(Creation::Created(_))
        ));
    }
    if s.free_used {
        let used = confirm_funded(
            store,
            &confirmation(user, &format!("{i}:free"), 0),
            &free_use(),
        )
        .await;
        assert!(matches!(used, Ok(Creation::Created(_))), "{used:?}");
    }
    if let Some(b) = s.budget {
        store
            .users()
            .set_admin_budget(user, Some(Money::from_minor(b)))
            .await
            .unwrap();
    }
    if s.blocked {
        store.users().set_blocked(user, true).await.unwrap();
    }
    user
}

async fn confirm(store: &Store, i: usize, user: UserId, s: &Scenario) -> Expect {
    let new = confirmation(user, &format!("{i}:draft"), s.price);
    let funding = (s.funding)();
    if s.repeat {
        let first = confirm_funded(store, &new, &funding).await;
        assert_eq!(outcome(&first), Expect::Created, "{}", s.name);
    }
    outcome(&confirm_funded(store, &new, &funding).await)
}

async fn check(store: &Store, user: UserId, s: &Scenario, got: Expect, path: &str) {
    assert_eq!(got, s.expect, "{} ({path})", s.name);
    if s.balance.is_some() {
        let held = wallet(store, user).await.1;
        // The free use taken in setup holds nothing; the active ones hold
        // 100 each.
        assert_eq!(held, s.held_after, "{} ({path}): held", s.name);
    }
}

async fn every_scenario_ends_the_same_alone(store: Store) {
    for (i, s) in scenarios().iter().enumerate() {
        let user = arrange(&store, i, s).await;
        let got = confirm(&store, i, user, s).await;
        check(&store, user, s, got, "alone").await;
    }
}

async fn every_scenario_ends_the_same_in_a_burst(store: Store) {
    let all = scenarios();
    let mut users = Vec::new();
    for (i, s) in all.iter().enumerate() {
        users.push(arrange(&store, i, s).await);
    }
    // Every scenario at once, with plain confirmations of other users
    // around them: beyond three confirmations in flight, PostgreSQL queues
    // them for its batch writer.
    let mut plain = Vec::new();
    for n in 0..24 {
        plain.push(funded_user(&store, 5_000 + n, 1_000).await);
    }
    let mut tasks = Vec::new();
    for (i, user) in users.iter().copied().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = &scenarios()[i];
            confirm(&store, i, user, s).await
        }));
    }
    let mut others = Vec::new();
    for user in plain.iter().copied() {
        let store = store.clone();
        others.push(tokio::spawn(async move {
            let new = confirmation(user, &format!("{}:plain", user.0), 100);
            outcome(&store.generations().create_pending(&new).await)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let got = t.await.unwrap();
        check(&store, users[i], &all[i], got, "in a burst").await;
    }
    for o in others {
        assert_eq!(o.await.unwrap(), Expect::Created);
    }
}
