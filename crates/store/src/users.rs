//! Users: one row per Telegram user, created on first contact.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use kiebot_domain::{Money, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::sql::{count, get_bool, get_parsed};
use crate::{Result, Store, StoreError, audit, ledger, now_ms};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// A customer.
    #[default]
    User,
    /// A limited admin (spends a budget).
    Admin,
    /// The owner (is not charged).
    Owner,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            _ => Err(()),
        }
    }
}

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The Telegram user id.
    pub id: UserId,
    /// Chosen interface language (`None` until they pick one).
    pub language: Option<String>,
    /// What they may do.
    pub role: Role,
    /// Blocked users cannot start generations.
    pub blocked: bool,
    /// Who invited them (`/start ref_<id>`).
    pub referrer: Option<UserId>,
    /// A limited admin's spending budget.
    pub admin_budget: Option<Money>,
    /// First contact, unix milliseconds.
    pub created_at: i64,
    /// Last activity, unix milliseconds.
    pub last_seen_at: i64,
}

/// Numbers for the admin stats screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserCounts {
    /// Every user.
    pub total: u64,
    /// Blocked users.
    pub blocked: u64,
    /// Users seen at or after the given time.
    pub seen_since: u64,
}

/// Users. See [`Store::users`].
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    store: &'a Store,
}

macro_rules! user_columns {
    () => {
        "id, language, role, blocked, referrer_id, admin_budget, created_at, last_seen_at"
    };
}

impl<'a> Users<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Users { store }
    }

    /// The user, created (with an empty wallet) if this is their first
    /// contact. Safe to call on every update.
    pub async fn ensure(&self, user: UserId) -> Result<User> {
        write_tx!(self.store, |conn| {
            ensure_in(conn, user, now_ms()).await?;
            get_in(conn, user)
                .await?
                .ok_or_else(|| StoreError::not_found("user", user))
        })
    }

    /// The user, if they have been seen.
    pub async fn get(&self, user: UserId) -> Result<Option<User>> {
        let mut conn = self.store.pool().acquire().await?;
        get_in(&mut conn, user).await
    }

    /// The user with their dialogue state (JSON, `None` when there is none
    /// or it expired at `now`), in one read: what every update needs first.
    pub async fn get_with_dialogue(
        &self,
        user: UserId,
        now: i64,
    ) -> Result<Option<(User, Option<String>)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            ", d.state AS dialogue FROM users \
             LEFT JOIN dialogues d ON d.user_id = users.id AND d.expires_at > $2 \
             WHERE users.id = $1"
        ))
        .bind(user.0)
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?;
        row.as_ref()
            .map(|r| Ok((user_from_row(r)?, r.try_get("dialogue")?)))
            .transpose()
    }

    /// [`get_with_dialogue`](Self::get_with_dialogue) for many users in one
    /// read (the senders of one getUpdates batch). Users that do not exist
    /// are absent from the map.
    pub async fn get_with_dialogue_many(
        &self,
        users: &[UserId],
        now: i64,
    ) -> Result<HashMap<UserId, (User, Option<String>)>> {
        let mut found = HashMap::with_capacity(users.len());
        if users.is_empty() {
            return Ok(found);
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(many_with_dialogue_sql(
            self.store.engine(),
        )))
        .bind(now)
        .bind(crate::sql::json_array(users.iter().map(|u| u.0)))
        .fetch_all(self.store.pool())
        .await?;
        for r in rows {
            let user = user_from_row(&r)?;
            found.insert(user.id, (user, r.try_get("dialogue")?));
        }
        Ok(found)
    }

    /// Sets the interface language.
    pub async fn set_language(&self, user: UserId, language: &str) -> Result<()> {
        self.update(
            user,
            sqlx::query("UPDATE users SET language = $2 WHERE id = $1")
                .bind(user.0)
                .bind(language),
        )
        .await
    }

    /// Sets the role.
    pub async fn set_role(&self, user: UserId, role: Role) -> Result<()> {
        self.update(
            user,
            sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
                .bind(user.0)
                .bind(role.as_str()),
        )
        .await
    }

    /// Blocks or unblocks.
    pub async fn set_blocked(&self, user: UserId, blocked: bool) -> Result<()> {
        self.update(
            user,
            sqlx::query("UPDATE users SET blocked = $2 WHERE id = $1")
                .bind(user.0)
                .bind(blocked),
        )
        .await
    }

    /// Sets (or with `None` removes) a limited admin's budget.
    pub async fn set_admin_budget(&self, user: UserId, budget: Option<Money>) -> Result<()> {
        self.update(
            user,
            sqlx::query("UPDATE users SET admin_budget = $2 WHERE id = $1")
                .bind(user.0)
                .bind(budget.map(Money::minor)),
        )
        .await
    }

    /// An admin sets (or with `None` removes) a limited admin's budget,
    /// audited in the same transaction as `set_budget` with the new amount.
    /// The budget is what is left to spend: generations in flight took their
    /// price already and give it back (on top of this) if they fail.
    /// Returns the budget it replaced.
    pub async fn set_admin_budget_audited(
        &self,
        user: UserId,
        budget: Option<Money>,
        actor: UserId,
        reason: &str,
    ) -> Result<Option<Money>> {
        if let Some(b) = budget
            && b < Money::ZERO
        {
            return Err(StoreError::InvalidAmount {
                amount: b,
                why: "a budget cannot be negative",
            });
        }
        write_tx!(self.store, |conn| {
            let now = now_ms();
            // Postgres: the row lock orders this after a confirmation that is
            // spending the budget, so the previous value read is current.
            let previous: Option<Option<i64>> = sqlx::query_scalar(
                "UPDATE users SET last_seen_at = last_seen_at WHERE id = $1 RETURNING admin_budget",
            )
            .bind(user.0)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(previous) = previous else {
                return Err(StoreError::not_found("user", user));
            };
            sqlx::query("UPDATE users SET admin_budget = $2 WHERE id = $1")
                .bind(user.0)
                .bind(budget.map(Money::minor))
                .execute(&mut *conn)
                .await?;
            audit::record_in(conn, actor, "set_budget", Some(user), budget, reason, now).await?;
            Ok(previous.map(Money::from_minor))
        })
    }

    /// Records activity now.
    pub async fn touch(&self, user: UserId) -> Result<()> {
        self.update(
            user,
            sqlx::query("UPDATE users SET last_seen_at = $2 WHERE id = $1")
                .bind(user.0)
                .bind(now_ms()),
        )
        .await
    }

    /// How many users there are, are blocked, and were seen at or after
    /// `seen_since` (unix milliseconds).
    pub async fn counts(&self, seen_since: i64) -> Result<UserCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, \
                 COUNT(CASE WHEN blocked THEN 1 END) AS blocked, \
                 COUNT(CASE WHEN last_seen_at >= $1 THEN 1 END) AS seen_since \
             FROM users",
        )
        .bind(seen_since)
        .fetch_one(self.store.pool())
        .await?;
        Ok(UserCounts {
            total: count(row.try_get("total")?),
            blocked: count(row.try_get("blocked")?),
            seen_since: count(row.try_get("seen_since")?),
        })
    }

    async fn update(
        &self,
        user: UserId,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<()> {
        let changed = query.execute(self.store.pool()).await?.rows_affected();
        if changed == 0 {
            return Err(StoreError::not_found("user", user));
        }
        Ok(())
    }
}

/// Creates the user and their wallet if missing.
pub(crate) async fn ensure_in(conn: &mut AnyConnection, user: UserId, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, role, blocked, created_at, last_seen_at) \
         VALUES ($1, 'user', $2, $3, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(user.0)
    .bind(false)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    ledger::open_wallet_in(conn, user).await
}

async fn get_in(conn: &mut AnyConnection, user: UserId) -> Result<Option<User>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1"
    ))
    .bind(user.0)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// [`Users::get_with_dialogue_many`]'s statement: `$1` the time, `$2` the
/// user ids as a JSON array.
///
/// The dialogue is a correlated subquery, not a join: a connection keeps
/// the generic plan it made when the tables were small, and for a join
/// PostgreSQL then hashes a scan of every dialogue, which it goes on doing
/// on every batch as the table grows. A subquery keyed by one user is
/// looked up in the index whatever the table's size.
fn many_with_dialogue_sql(engine: crate::Engine) -> String {
    format!(
        concat!(
            "SELECT ",
            user_columns!(),
            ", (SELECT d.state FROM dialogues d \
                WHERE d.user_id = users.id AND d.expires_at > $1) AS dialogue \
             FROM users WHERE {}"
        ),
        crate::sql::in_json_ids(engine, "users.id", 2)
    )
}

fn user_from_row(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: UserId(r.try_get("id")?),
        language: r.try_get("language")?,
        role: get_parsed(r, "role")?,
        blocked: get_bool(r, "blocked")?,
        referrer: r.try_get::<Option<i64>, _>("referrer_id")?.map(UserId),
        admin_budget: r
            .try_get::<Option<i64>, _>("admin_budget")?
            .map(Money::from_minor),
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The senders of every getUpdates batch are read with this statement,
    /// in the generic plan a connection keeps from its first uses. Each
    /// user and their dialogue must be looked up in the index at every size
    /// the plan may be made at: a fresh deployment's empty tables, a few
    /// hundred users, and many without statistics (autovacuum not yet run).
    /// A scan of every user or dialogue per batch grows with the user base.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_batch_read_looks_users_up_by_index_at_every_size() {
        let db = kiebot_testkit::TestDb::postgres().await;
        let store = crate::Store::connect(db.url()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let mut users = 0;
        for size in [0, 200, 20_000] {
            let plan = db
                .generic_plan(
                    &format!(
                        "INSERT INTO users (id, role, blocked, created_at, last_seen_at) \
                         SELECT g, 'user', FALSE, 0, 0 FROM generate_series({from}, {size}) g; \
                         INSERT INTO dialogues (user_id, state, updated_at, expires_at) \
                         SELECT g, '{{}}', 0, 0 FROM generate_series({from}, {size}) g",
                        from = users + 1,
                    ),
                    &many_with_dialogue_sql(crate::Engine::Postgres),
                    "BIGINT, TEXT",
                    "0, '[5, 6, 7]'",
                )
                .await;
            users = size;
            assert!(
                !plan.contains("Seq Scan")
                    && plan.contains("users_pkey")
                    && plan.contains("dialogues_pkey"),
                "with {size} users the batch read scans a table:\n{plan}"
            );
        }
        store.close().await;
    }
}
