//! Storage for kiebot: one code path for SQLite and PostgreSQL.
//!
//! # Map
//!
//! - [`Store`]: the pool, the engine, migrations; every repository hangs off it
//!   (`store.ledger()`, `store.generations()`, ...).
//! - [`ledger`]: the money rules. Every money movement is one transaction
//!   that appends an entry with a unique key and changes the wallet with a
//!   conditional `UPDATE`. On SQLite the ledger's Rust code is the only writer
//!   of `wallets` and `ledger_entries`. On PostgreSQL three server-side
//!   functions write them too, with the same entries, keys and conditions:
//!   `kiebot_create_generation` and `kiebot_create_generations` (confirm:
//!   the hold) and `kiebot_finish_generation` (capture or release). Their
//!   current text is in `crates/store/sql/postgres/`, and a test holds the
//!   migrated database to it.
//! - [`generations`]: the generation rows and their lifecycle; the state change
//!   and its money step (hold, capture, release) share one transaction.
//! - [`payments`], [`promos`], [`referrals`]: where money comes from; each
//!   credits through the ledger, once per external key (a referral bonus
//!   only under the referral rules, and taken back with its payment's
//!   refund).
//! - [`admins`]: admin permissions, and the admin actions that are capped
//!   and audited in the transaction that makes them.
//! - [`users`], [`free_usage`], [`audit`], [`dialogues`], [`updates`],
//!   [`settings`]: the rest of the bot's state.
//! - [`broadcasts`]: admin broadcasts and the lease that lets exactly one
//!   front process send them.
//! - [`model_holds`]: models taken off sale (by the catalog check or an
//!   operator) until an operator puts them back.
//!
//! # One SQL text, two engines
//!
//! Everything goes through sqlx's `Any` driver, so each query is written once
//! and the test suite runs every case on both engines. That fixes a few
//! conventions:
//!
//! - placeholders are `$1, $2, ...` (SQLite accepts them and binds by number);
//! - ids and money are 64-bit integers, money in minor units ([`Money`]);
//!   timestamps are unix **milliseconds** (`i64`), so no date type has to
//!   survive the driver; JSON is stored as TEXT and never queried inside;
//! - booleans are `BOOLEAN` on Postgres and `INTEGER` 0/1 on SQLite (Any cannot
//!   read a SQLite column declared BOOLEAN); they are bound as `bool` and read
//!   with a helper that accepts either;
//! - every `SUM` is `CAST(.. AS BIGINT)`: Postgres sums BIGINT into NUMERIC,
//!   which Any cannot decode;
//! - the DDL differs (identity columns, STRICT tables, trigger syntax), so
//!   migrations live in one folder per engine with the same tables and columns.
//!
//! `tests/the_any_driver_behaves_as_the_store_assumes.rs` pins these down.
//!
//! One exception: the confirmation (`Generations::confirm`, the front bot's
//! hottest write) runs on PostgreSQL as the server-side function
//! `kiebot_create_generation` (PostgreSQL's own migration), one round trip
//! instead of eight; SQLite runs the same steps statement by statement. The
//! store's tests run every confirmation case on both, so the two cannot
//! drift apart unnoticed.
//!
//! # Transactions and concurrency
//!
//! Every write transaction starts with the write that decides it (an
//! insert-or-ignore on an idempotency key, or a conditional `UPDATE`). On
//! Postgres that takes the deciding row lock first, so concurrent operations
//! on the same wallet or hold queue up instead of deciding on stale reads; on
//! SQLite the transaction is also opened with `BEGIN IMMEDIATE`, so the write
//! lock is taken up front, under the 10 s busy handler, and never by a lock
//! upgrade that would fail at once with `SQLITE_BUSY`. If the database still
//! answers busy (or Postgres reports a deadlock or serialization failure), the
//! whole transaction is retried a bounded number of times.
//!
//! Idempotency is by key: a repeated operation finds its first result and
//! returns it (`fresh: false`) without changing anything, and a repeat that
//! differs (another amount, another user) is refused as
//! [`StoreError::KeyConflict`].
//!
//! SQLite connections run with WAL, `foreign_keys = ON` and
//! `busy_timeout = 10000`; `synchronous` stays at its FULL default, because a
//! committed payment must survive a power cut.

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use kiebot_domain::{GenerationId, GenerationStatus, Money, UserId};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection as _, Executor};

#[macro_use]
mod tx;
mod sql;

pub mod admins;
pub mod audit;
pub mod broadcasts;
pub mod dialogues;
mod error;
pub mod free_usage;
pub mod generations;
pub mod invoices;
pub mod ledger;
pub mod model_holds;
pub mod payments;
pub mod promos;
pub mod referrals;
pub mod settings;
pub mod updates;
pub mod users;

pub use admins::{Admins, FinanceLimits, Permission};
pub use audit::{Audit, AuditEntry};
pub use broadcasts::{Broadcast, BroadcastId, BroadcastStatus, Broadcasts, Claim, NewBroadcast};
pub use dialogues::Dialogues;
pub use error::{AdminRefusal, PromoRefusal, Result, StoreError};
pub use free_usage::FreeUsage;
pub use generations::{
    Creation, DeliveryClaim, DialogueAfter, Funding, Generation, Generations, NewGeneration,
    TaskOutcome,
};
pub use invoices::{Invoice, InvoiceId, Invoices};
pub use ledger::{
    Applied, Drift, Entry, EntryId, EntryKind, Hold, HoldState, Ledger, MoneyTotals, Wallet,
};
pub use payments::{Payment, PaymentId, PaymentStatus, Payments, StarsCredit};
pub use promos::{Promo, Promos};
pub use referrals::{ReferralOutcome, ReferralRules, Referrals, Settled};
pub use settings::Settings;
pub use updates::Updates;
pub use users::{Role, User, UserCounts, Users};

/// The database engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// A SQLite file (embedded mode).
    Sqlite,
    /// A PostgreSQL server (fleet mode).
    Postgres,
}

impl Engine {
    /// The engine a sqlx URL names, if it is one we run on.
    pub fn of_url(url: &str) -> Option<Engine> {
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Engine::Postgres)
        } else {
            None
        }
    }
}

/// The table that records our migrations. Not sqlx's default: in the
/// embedded mode the job queue (apalis-sqlite) shares the database file and
/// records its own migrations in `_sqlx_migrations`; each side keeping its
/// own table means neither sees the other's entries as "missing".
pub const MIGRATIONS_TABLE: &str = "_kiebot_migrations";

fn migrator(engine: Engine) -> Migrator {
    let mut m = match engine {
        Engine::Sqlite => sqlx::migrate!("../../migrations/sqlite"),
        Engine::Postgres => sqlx::migrate!("../../migrations/postgres"),
    };
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m
}

/// Connections a pool opens by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// How many connections a pool may open, and how many of them it keeps
/// open while idle.
///
/// A connection opened when work arrives makes that work wait for the
/// server to start a backend, the TLS handshake and its first cold
/// statements: tens of milliseconds. A pool opens its connections when it
/// first needs them and closes the ones idle for ten minutes, so a burst
/// after a quiet spell (or right after start) waits on all of that.
/// Connections kept warm are opened in the background at start and
/// replaced in the background when one is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    max: u32,
    warm: u32,
}

impl PoolSize {
    /// At most `max` connections (at least one), opened on demand.
    pub fn new(max: u32) -> PoolSize {
        PoolSize {
            max: max.max(1),
            warm: 0,
        }
    }

    /// Keeps `warm` connections open while idle (at most the pool's size).
    #[must_use]
    pub fn warm(self, warm: u32) -> PoolSize {
        PoolSize {
            warm: warm.min(self.max),
            ..self
        }
    }

    /// The most connections the pool opens.
    pub fn max(self) -> u32 {
        self.max
    }

    /// The connections kept open while idle.
    pub fn kept_warm(self) -> u32 {
        self.warm
    }
}

impl From<u32> for PoolSize {
    fn from(max: u32) -> PoolSize {
        PoolSize::new(max)
    }
}

/// The database: a connection pool plus the repositories that use it.
///
/// Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// Settings read through [`Settings::get_recent`], shared by clones.
    recent_settings: std::sync::Arc<settings::RecentSettings>,
    recent_holds: std::sync::Arc<model_holds::RecentHolds>,
    /// Confirmations waiting to be written together (PostgreSQL).
    confirms: std::sync::Arc<generations::batch::ConfirmBatcher>,
}

impl Store {
    /// Connects with [`DEFAULT_MAX_CONNECTIONS`].
    ///
    /// A `sqlite:` URL creates the file if it is missing (`mode=rwc` is added
    /// unless the URL sets a mode); in-memory SQLite is refused, because every
    /// pooled connection would see a database of its own.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connects with a pool of `size` (a plain number: at most that many
    /// connections, opened on demand).
    pub async fn connect_with(url: &str, size: impl Into<PoolSize>) -> Result<Store> {
        let size = size.into();
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(install_default_drivers);

        let engine = Engine::of_url(url).ok_or_else(|| {
            StoreError::UnsupportedUrl("expected a sqlite: or postgres: URL".into())
        })?;
        let mut url = url.to_owned();
        if engine == Engine::Sqlite {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err(StoreError::UnsupportedUrl(
                    "in-memory SQLite gives every pooled connection its own database; use a file"
                        .into(),
                ));
            }
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("mode=rwc");
            }
        }

        let pool = AnyPoolOptions::new()
            .max_connections(size.max)
            .min_connections(size.warm)
            // sqlx pings every connection it hands out by default: one more
            // round trip for every query and transaction, which on a busy
            // PostgreSQL is a large share of all round trips. Only a
            // connection that sat idle long enough to have been dropped (a
            // server restart, a proxy timeout) is checked first; a hot one
            // that broke fails its query, and the pool discards it.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // busy_timeout first, so that switching to WAL (which
                        // needs a lock) already waits instead of failing.
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store {
            pool,
            engine,
            recent_settings: Default::default(),
            recent_holds: Default::default(),
            confirms: Default::default(),
        })
    }

    /// Applies the migrations of this engine that have not run yet (recorded
    /// in [`MIGRATIONS_TABLE`]).
    pub async fn migrate(&self) -> Result<()> {
        migrator(self.engine).run(&self.pool).await?;
        Ok(())
    }

    /// The engine behind this store.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The connection pool, for what the repositories do not cover (the
    /// queue, readiness probes). Money rows are written through [`Ledger`]
    /// only.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection of the pool (shared by all clones) and waits
    /// for them to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Users and their settings.
    pub fn users(&self) -> Users<'_> {
        Users::new(self)
    }

    /// Wallets and the append-only ledger.
    pub fn ledger(&self) -> Ledger<'_> {
        Ledger::new(self)
    }

    /// Generations and their lifecycle.
    pub fn generations(&self) -> Generations<'_> {
        Generations::new(self)
    }

    /// Telegram Stars payments.
    pub fn payments(&self) -> Payments<'_> {
        Payments::new(self)
    }

    /// Stars invoices we issued.
    pub fn invoices(&self) -> Invoices<'_> {
        Invoices::new(self)
    }

    /// Promo codes.
    pub fn promos(&self) -> Promos<'_> {
        Promos::new(self)
    }

    /// Referrals and their bonus.
    pub fn referrals(&self) -> Referrals<'_> {
        Referrals::new(self)
    }

    /// Admin permissions and the admin actions that are capped and audited.
    pub fn admins(&self) -> Admins<'_> {
        Admins::new(self)
    }

    /// Daily free quota.
    pub fn free_usage(&self) -> FreeUsage<'_> {
        FreeUsage::new(self)
    }

    /// Admin broadcasts and their lease.
    pub fn broadcasts(&self) -> Broadcasts<'_> {
        Broadcasts::new(self)
    }

    /// The admin audit log.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    /// Per-user dialogue state.
    pub fn dialogues(&self) -> Dialogues<'_> {
        Dialogues::new(self)
    }

    /// Telegram update de-duplication.
    pub fn updates(&self) -> Updates<'_> {
        Updates::new(self)
    }

    /// Operator settings (maintenance mode, FX rate).
    pub fn settings(&self) -> Settings<'_> {
        Settings::new(self)
    }

    /// Models taken off sale.
    pub fn model_holds(&self) -> model_holds::ModelHolds<'_> {
        model_holds::ModelHolds::new(self)
    }

    /// Opens a write transaction: `BEGIN IMMEDIATE` on SQLite (the write lock
    /// is taken now, under the busy handler), a plain `BEGIN` on Postgres.
    pub(crate) async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
    }
}

/// A pooled connection idle at least this long is pinged before use.
const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

/// Now, in unix milliseconds: the store's only clock for `created_at` and
/// friends. Queries that compare with "now" (due polls, dialogue expiry) take
/// it as an argument instead, so callers and tests control it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
