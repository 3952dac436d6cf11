//! Admin permissions, and the admin actions that are capped and audited.
//!
//! The owner has every permission; other admins have what the owner granted
//! (`admin_permissions`). Each action here writes its audit row in the same
//! transaction as the change, ahead of it, so an action is never in effect
//! without its audit row, and a refused action leaves neither.
//!
//! Finance limits ([`FinanceLimits`]) bound a finance admin: the largest
//! single adjustment or refund, and what their adjustments (either sign) and
//! refunds may add up to over the last 24 hours, summed from their own audit
//! rows with their row locked, so two actions at once cannot both fit in
//! what is left for one. The owner passes `None`: no limits.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use kiebot_domain::{Money, UserId};
use sqlx::AnyConnection;

use crate::error::AdminRefusal;
use crate::ledger::{self, Applied, EntryKind, NewEntry};
use crate::{Result, Store, StoreError, audit, now_ms};

/// What the owner may grant an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Look up users, their generations and failures; resend; block and
    /// unblock.
    Support,
    /// Adjust balances and refund payments, within the finance limits.
    Finance,
    /// Message every user.
    Broadcast,
    /// Switch maintenance mode.
    Maintenance,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 4] = [
        Permission::Support,
        Permission::Finance,
        Permission::Broadcast,
        Permission::Maintenance,
    ];

    /// The name stored in the database and typed in `/grant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Support => "support",
            Permission::Finance => "finance",
            Permission::Broadcast => "broadcast",
            Permission::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// What a finance admin may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinanceLimits {
    /// The largest single adjustment (either sign) or refund.
    pub max_single: Money,
    /// What adjustments and refunds may add up to over 24 hours.
    pub daily_budget: Money,
}

/// The window of the daily budget.
pub const BUDGET_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Audit actions that spend a finance admin's daily budget.
const SPENDING: &str = "('adjust', 'refund_request')";

/// Admins. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Admins<'a> {
    store: &'a Store,
}

impl<'a> Admins<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Admins { store }
    }

    /// The permissions granted to `user`.
    pub async fn permissions(&self, user: UserId) -> Result<BTreeSet<Permission>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT permission FROM admin_permissions WHERE user_id = $1")
                .bind(user.0)
                .fetch_all(self.store.pool())
                .await?;
        rows.iter()
            .map(|p| {
                p.parse()
                    .map_err(|()| StoreError::Corrupt(format!("admin permission {p:?}")))
            })
            .collect()
    }

    /// Every admin with a granted permission, with their permissions.
    pub async fn granted(&self) -> Result<Vec<(UserId, Vec<Permission>)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT user_id, permission FROM admin_permissions ORDER BY user_id, permission",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut out: Vec<(UserId, Vec<Permission>)> = Vec::new();
        for (u, p) in rows {
            let p = p
                .parse()
                .map_err(|()| StoreError::Corrupt(format!("admin permission {p:?}")))?;
            match out.last_mut() {
                Some((last, ps)) if last.0 == u => ps.push(p),
                _ => out.push((UserId(u), vec![p])),
            }
        }
        Ok(out)
    }

    /// Grants `permission` to `user` (who becomes an admin), audited.
    /// `Ok(false)`: they had it (nothing written).
    pub async fn grant(&self, actor: UserId, user: UserId, permission: Permission) -> Result<bool> {
        if actor == user {
            return Err(StoreError::AdminRefused(AdminRefusal::SelfTarget));
        }
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let inserted = sqlx::query(
                "INSERT INTO admin_permissions (user_id, permission, granted_by, granted_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) \
                 ON CONFLICT (user_id, permission) DO NOTHING",
            )
            .bind(user.0)
            .bind(permission.as_str())
            .bind(actor.0)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                return match user_exists(conn, user).await? {
                    true => Ok(false),
                    false => Err(StoreError::not_found("user", user)),
                };
            }
            audit::record_in(
                conn,
                actor,
                "grant",
                Some(user),
                None,
                permission.as_str(),
                now,
            )
            .await?;
            sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1 AND role = 'user'")
                .bind(user.0)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        })
    }

    /// Takes `permission` from `user`, audited. When it was their last and
    /// `keep_admin` is false (they are not an admin by configuration), they
    /// are a plain user again. `Ok(false)`: they did not have it.
    pub async fn revoke(
        &self,
        actor: UserId,
        user: UserId,
        permission: Permission,
        keep_admin: bool,
    ) -> Result<bool> {
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let deleted =
                sqlx::query("DELETE FROM admin_permissions WHERE user_id = $1 AND permission = $2")
                    .bind(user.0)
                    .bind(permission.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            audit::record_in(
                conn,
                actor,
                "revoke",
                Some(user),
                None,
                permission.as_str(),
                now,
            )
            .await?;
            if !keep_admin {
                sqlx::query(
                    "UPDATE users SET role = 'user' WHERE id = $1 AND role = 'admin' \
                     AND NOT EXISTS (SELECT 1 FROM admin_permissions WHERE user_id = $1)",
                )
                .bind(user.0)
                .execute(&mut *conn)
                .await?;
            }
            Ok(true)
        })
    }

    /// What `actor` adjusted and refunded over the 24 hours before `now`.
    pub async fn spent(&self, actor: UserId, now: i64) -> Result<Money> {
        let mut conn = self.store.pool().acquire().await?;
        spent_in(&mut conn, actor, now).await
    }

    /// An admin's signed adjustment of `user`'s balance (key `key`, so a
    /// retry applies once), audited ahead of it in the same transaction,
    /// within `limits` (`None`: the owner, unlimited). A negative adjustment
    /// cannot take the available balance below zero.
    pub async fn adjust(
        &self,
        actor: UserId,
        user: UserId,
        amount: Money,
        key: &str,
        reason: &str,
        limits: Option<FinanceLimits>,
    ) -> Result<Applied> {
        if actor == user {
            return Err(StoreError::AdminRefused(AdminRefusal::SelfTarget));
        }
        let size = Money::from_minor(amount.minor().saturating_abs());
        let e = NewEntry {
            note: Some(reason),
            ..NewEntry::new(user, EntryKind::Adjust, amount, key)
        };
        write_tx!(self.store, |conn| {
            let now = now_ms();
            // The actor's row first: a retry racing its original waits for
            // it here, and then finds its entry.
            lock_actor(conn, actor).await?;
            // A retry of an adjustment that was applied returns it as it was,
            // whatever is left of the budget now.
            if ledger::entry_by_key(conn, key).await?.is_some() {
                return ledger::repeat_of(conn, &e).await;
            }
            within_limits(conn, actor, size, limits, now).await?;
            audit::record_in(conn, actor, "adjust", Some(user), Some(amount), reason, now).await?;
            ledger::change_balance_in(conn, &e, now).await
        })
    }

    /// Authorises `actor` to refund `amount` paid by `payer` (charge
    /// `charge`): checks the limits and writes the `refund_request` audit
    /// row, which spends the budget, before any money moves.
    pub async fn authorize_refund(
        &self,
        actor: UserId,
        payer: UserId,
        amount: Money,
        charge: &str,
        limits: Option<FinanceLimits>,
    ) -> Result<i64> {
        if actor == payer {
            return Err(StoreError::AdminRefused(AdminRefusal::SelfTarget));
        }
        write_tx!(self.store, |conn| {
            let now = now_ms();
            within_limits(conn, actor, amount, limits, now).await?;
            audit::record_in(
                conn,
                actor,
                "refund_request",
                Some(payer),
                Some(amount),
                charge,
                now,
            )
            .await
        })
    }

    /// Blocks or unblocks `user`, audited in the same transaction.
    pub async fn set_blocked(&self, actor: UserId, user: UserId, blocked: bool) -> Result<()> {
        if actor == user {
            return Err(StoreError::AdminRefused(AdminRefusal::SelfTarget));
        }
        let action = if blocked { "block" } else { "unblock" };
        write_tx!(self.store, |conn| {
            let now = now_ms();
            if !user_exists(conn, user).await? {
                return Err(StoreError::not_found("user", user));
            }
            audit::record_in(conn, actor, action, Some(user), None, "", now).await?;
            sqlx::query("UPDATE users SET blocked = $2 WHERE id = $1")
                .bind(user.0)
                .bind(blocked)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    /// Turns the flag setting `key` on (`"1"`) or off (removed), audited as
    /// `action` in the same transaction. Returns whether it was on before.
    pub async fn switch(&self, actor: UserId, key: &str, action: &str, on: bool) -> Result<bool> {
        let was = write_tx!(self.store, |conn| {
            let now = now_ms();
            let before: Option<String> =
                sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await?;
            audit::record_in(conn, actor, action, None, None, "", now).await?;
            if on {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, '1') \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query("DELETE FROM settings WHERE key = $1")
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(before.as_deref() == Some("1"))
        })?;
        self.store.recent_settings.forget(key);
        Ok(was)
    }
}

/// Locks the admin's user row until the transaction ends (PostgreSQL; a
/// SQLite write transaction holds the whole database): their actions are
/// checked and applied one at a time.
async fn lock_actor(conn: &mut AnyConnection, actor: UserId) -> Result<()> {
    sqlx::query("UPDATE users SET last_seen_at = last_seen_at WHERE id = $1")
        .bind(actor.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn user_exists(conn: &mut AnyConnection, user: UserId) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

async fn spent_in(conn: &mut AnyConnection, actor: UserId, now: i64) -> Result<Money> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE amount END), 0) AS BIGINT) \
         FROM admin_audit WHERE actor_id = $1 AND created_at > $2 AND action IN {SPENDING}"
    );
    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(actor.0)
        .bind(now - BUDGET_WINDOW_MS)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Money::from_minor(v))
}

/// Refuses `size` when it is above the single cap or what is left of the
/// daily budget. Locks the actor's user row first, so that two actions of
/// one admin are checked one after the other.
async fn within_limits(
    conn: &mut AnyConnection,
    actor: UserId,
    size: Money,
    limits: Option<FinanceLimits>,
    now: i64,
) -> Result<()> {
    let Some(limits) = limits else {
        return Ok(());
    };
    if size > limits.max_single {
        return Err(StoreError::AdminRefused(AdminRefusal::OverSingleCap {
            max: limits.max_single,
        }));
    }
    lock_actor(conn, actor).await?;
    let spent = spent_in(conn, actor, now).await?;
    let left = Money::from_minor((limits.daily_budget.minor() - spent.minor()).max(0));
    if size > left {
        return Err(StoreError::AdminRefused(AdminRefusal::OverDailyBudget {
            left,
            budget: limits.daily_budget,
        }));
    }
    Ok(())
}
