//! The store's errors.
//!
//! Two families: refusals that follow from the request and the data (not
//! enough money, a blocked user, an illegal transition; the caller turns them
//! into a message), and failures of the database itself ([`StoreError::Db`],
//! [`StoreError::Corrupt`]; logged, and the operation retried later).

use kiebot_domain::{GenerationId, Money, TransitionError, UserId};

use crate::Engine;
use crate::ledger::HoldState;

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused the statement.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The wallet's available balance (balance minus held) is too small.
    #[error("insufficient funds: {available} available, {requested} requested")]
    InsufficientFunds {
        /// Balance minus held, now.
        available: Money,
        /// What the operation needed.
        requested: Money,
    },
    /// The hold was already captured or released the other way.
    #[error("the hold of generation {generation} is already {state}")]
    HoldAlreadySettled {
        /// The generation whose hold it is.
        generation: GenerationId,
        /// What happened to it.
        state: HoldState,
    },
    /// The generation has no hold (it was free, or never held).
    #[error("generation {0} has no hold")]
    NoHold(GenerationId),
    /// An idempotency key was reused for a different operation (another user,
    /// kind or amount). Nothing was changed.
    #[error("key {key:?} was already used for a different operation")]
    KeyConflict {
        /// The reused key.
        key: String,
    },
    /// The user is blocked.
    #[error("user {user} is blocked")]
    Blocked {
        /// Who.
        user: UserId,
    },
    /// The day's free uses of the model are used up (taken by another
    /// confirmation since the price was shown). Nothing was changed.
    #[error("the free uses of the day are used up (limit {limit})")]
    FreeQuotaUsedUp {
        /// Free uses a day.
        limit: u32,
    },
    /// A limited admin's budget does not cover the generation. Nothing was
    /// changed.
    #[error("admin budget exhausted: {requested} requested, {available:?} left")]
    BudgetExhausted {
        /// What is left (`None`: the user has no budget).
        available: Option<Money>,
        /// What the generation costs.
        requested: Money,
    },
    /// An admin's action is outside what they may do (their own wallet, a
    /// cap, their daily budget). Nothing was changed and nothing audited.
    #[error("admin action refused: {0}")]
    AdminRefused(AdminRefusal),
    /// The user already has `limit` active generations.
    #[error("too many active generations (limit {limit})")]
    TooManyActive {
        /// The limit that was reached.
        limit: u32,
    },
    /// The lifecycle does not allow the requested step.
    #[error(transparent)]
    IllegalTransition(#[from] TransitionError),
    /// A row the operation needs does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of row (`"user"`, `"wallet"`, `"generation"`, ...).
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// An amount the operation cannot take (zero, or negative where only a
    /// positive amount makes sense).
    #[error("invalid amount {amount}: {why}")]
    InvalidAmount {
        /// The amount given.
        amount: Money,
        /// What was expected.
        why: &'static str,
    },
    /// The promo code cannot be redeemed.
    #[error("promo code {code:?} {reason}")]
    PromoRefused {
        /// The code as given.
        code: String,
        /// Why not.
        reason: PromoRefusal,
    },
    /// The database URL names no engine the store runs on.
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// The database holds a value that cannot be (an unknown status name, a
    /// settled hold without its entry). Needs an operator.
    #[error("inconsistent data: {0}")]
    Corrupt(String),
}

/// Why a promo code was not redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PromoRefusal {
    /// No such code.
    #[error("does not exist")]
    Unknown,
    /// Past its expiry time.
    #[error("has expired")]
    Expired,
    /// Redeemed `max_uses` times already.
    #[error("has been used up")]
    Exhausted,
}

/// Why an admin action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    /// The admin named their own wallet, payment or account.
    #[error("an admin cannot act on their own account")]
    SelfTarget,
    /// Above the largest single amount a finance admin may move.
    #[error("above the single-action cap of {max}")]
    OverSingleCap {
        /// The cap.
        max: Money,
    },
    /// Above what is left of the admin's budget for the last 24 hours.
    #[error("above the daily budget: {left} of {budget} left")]
    OverDailyBudget {
        /// What is left now.
        left: Money,
        /// The whole budget.
        budget: Money,
    },
}

impl StoreError {
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> StoreError {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Whether retrying the whole transaction may succeed: SQLite busy or
    /// locked, a Postgres deadlock or serialization failure.
    pub(crate) fn is_retryable(&self, engine: Engine) -> bool {
        let StoreError::Db(sqlx::Error::Database(e)) = self else {
            return false;
        };
        let code = e.code();
        let code = code.as_deref().unwrap_or("");
        match engine {
            // Extended result codes: the primary code is the low byte.
            // SQLITE_BUSY = 5 (and _RECOVERY, _SNAPSHOT, _TIMEOUT), SQLITE_LOCKED = 6.
            Engine::Sqlite => {
                matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
                    || e.message().contains("database is locked")
            }
            Engine::Postgres => matches!(code, "40001" | "40P01"),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, SqliteConnection};

    use super::*;

    #[tokio::test]
    async fn a_busy_sqlite_database_is_retryable_and_a_refusal_is_not() {
        let db = kiebot_testkit::TestDb::sqlite();
        let mut holder = SqliteConnection::connect(db.url()).await.unwrap();
        holder.execute("BEGIN IMMEDIATE").await.unwrap();
        let mut waiter = SqliteConnection::connect(db.url()).await.unwrap();
        waiter.execute("PRAGMA busy_timeout = 0").await.unwrap();
        let busy = waiter.execute("BEGIN IMMEDIATE").await.unwrap_err();
        assert!(StoreError::from(busy).is_retryable(Engine::Sqlite));
        holder.execute("ROLLBACK").await.unwrap();

        let refusal = StoreError::TooManyActive { limit: 5 };
        assert!(!refusal.is_retryable(Engine::Sqlite));
        assert!(!refusal.is_retryable(Engine::Postgres));
    }
}
