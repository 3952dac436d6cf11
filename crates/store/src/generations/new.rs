//! A new generation: what a confirmation carries, how it is paid, what it
//! answers, and the pieces both confirmation paths (`confirm` on SQLite,
//! `batch` on PostgreSQL) share.

use kiebot_domain::{GenerationId, ModelId, Money, UserId};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// What the bot knows when the user confirms a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGeneration {
    /// Who pays.
    pub user: UserId,
    /// The confirm button's draft id: a second tap finds the first generation.
    pub draft_key: String,
    /// The KIE model.
    pub model: ModelId,
    /// The wizard's parameters (JSON), for history and "repeat".
    pub params_json: String,
    /// The exact KIE `createTask` body (JSON).
    pub request_json: String,
    /// The price; zero places no hold.
    pub price: Money,
    /// Where to deliver the result.
    pub chat_id: i64,
    /// The model's deadline, counted from now.
    pub deadline_secs: u32,
    /// The most active (pending or submitted) generations a user may have.
    pub max_active: u32,
    /// The confirmation's W3C traceparent, so the jobs that carry the
    /// generation on link their spans to it (`None` when traces are off).
    pub traceparent: Option<String>,
}

/// Who pays for a generation, besides a wallet hold of its `price`. The bot
/// decides; the store takes it in the confirm transaction, or refuses.
/// Serializable so the bot can keep, with a draft, the funding its confirm
/// screen showed and refuse a confirmation whose funding has since changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Funding {
    /// The user's wallet: `price` is held (nothing when it is zero: the owner,
    /// a dry run).
    #[default]
    Wallet,
    /// One of the day's free uses of the model, if fewer than `limit` were
    /// used ([`StoreError::FreeQuotaUsedUp`] otherwise). The price must be
    /// zero.
    FreeQuota {
        /// `YYYY-MM-DD`, as [`crate::FreeUsage`] counts days.
        day: String,
        /// Free uses a day.
        limit: u32,
    },
    /// `amount` from the user's admin budget, if that much remains
    /// ([`StoreError::BudgetExhausted`] otherwise). The price must be zero:
    /// the budget pays instead of the wallet.
    AdminBudget {
        /// What the generation costs.
        amount: Money,
    },
}

/// The dialogue a confirmation leaves the user in ([`Generations::confirm`](super::Generations::confirm)).
#[derive(Debug, Clone, Copy)]
pub struct DialogueAfter<'a> {
    /// The state, a JSON object.
    pub state_json: &'a str,
    /// The field of `state_json` that receives the new generation's id.
    pub id_field: &'a str,
    /// How long the state is valid.
    pub ttl: std::time::Duration,
}

/// The outcome of [`Generations::confirm`](super::Generations::confirm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// A new pending generation, with its hold placed.
    Created(GenerationId),
    /// The draft was confirmed before; nothing changed.
    AlreadyExists(GenerationId),
}

impl Creation {
    /// The generation, new or old.
    pub fn id(self) -> GenerationId {
        match self {
            Creation::Created(id) | Creation::AlreadyExists(id) => id,
        }
    }
}

/// Binds `$1`..`$9` of both confirmation paths: the new row's user, draft
/// key, model, params, request, price, chat, deadline and `now`.
pub(crate) fn bind_new_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    new: &'q NewGeneration,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(new.user.0)
        .bind(new.draft_key.as_str())
        .bind(new.model.as_str())
        .bind(new.params_json.as_str())
        .bind(new.request_json.as_str())
        .bind(new.price.minor())
        .bind(new.chat_id)
        .bind(deadline_at(new, now))
        .bind(now)
}

/// The funding as `kiebot_create_generation`'s `free_day`, `free_limit` and
/// `budget` arguments.
pub(crate) fn funding_args(funding: &Funding) -> (Option<&str>, Option<i64>, Option<i64>) {
    match funding {
        Funding::Wallet => (None, None, None),
        Funding::FreeQuota { day, limit } => (Some(day.as_str()), Some(i64::from(*limit)), None),
        Funding::AdminBudget { amount } => (None, None, Some(amount.minor())),
    }
}

/// When a generation confirmed at `now` is given up on.
pub(crate) fn deadline_at(new: &NewGeneration, now: i64) -> i64 {
    now.saturating_add(i64::from(new.deadline_secs) * 1000)
}

/// The typed error behind a refusal message of `kiebot_create_generation`
/// (`<kind>[ <number>]`); `None` for a message it never gives.
pub(crate) fn refusal_of_message(
    message: &str,
    new: &NewGeneration,
    funding: &Funding,
) -> Option<StoreError> {
    let (kind, number) = message.split_once(' ').unwrap_or((message, ""));
    let number = number.parse::<i64>().ok();
    Some(match kind {
        "key_conflict" => StoreError::KeyConflict {
            key: new.draft_key.clone(),
        },
        "no_user" => StoreError::not_found("user", new.user),
        "blocked" => StoreError::Blocked { user: new.user },
        "too_many_active" => StoreError::TooManyActive {
            limit: new.max_active,
        },
        "free_quota_used_up" => StoreError::FreeQuotaUsedUp {
            limit: match funding {
                Funding::FreeQuota { limit, .. } => *limit,
                Funding::Wallet | Funding::AdminBudget { .. } => 0,
            },
        },
        "budget_exhausted" => StoreError::BudgetExhausted {
            available: number.map(Money::from_minor),
            requested: match funding {
                Funding::AdminBudget { amount } => *amount,
                Funding::Wallet | Funding::FreeQuota { .. } => Money::ZERO,
            },
        },
        "no_wallet" => StoreError::not_found("wallet", new.user),
        "insufficient_funds" => StoreError::InsufficientFunds {
            available: Money::from_minor(number.unwrap_or(0)),
            requested: new.price,
        },
        _ => return None,
    })
}
