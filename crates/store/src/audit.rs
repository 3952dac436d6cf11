//! The admin audit log: who did what to whom, and why.

use kiebot_domain::{Money, UserId};
use sqlx::{AnyConnection, Row};

use crate::{Result, Store, now_ms};

/// One audited admin action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// The admin.
    pub actor: UserId,
    /// What they did (`adjust`, `block`, `refund`, ...).
    pub action: String,
    /// The user it was done to.
    pub target: Option<UserId>,
    /// The money involved.
    pub amount: Option<Money>,
    /// The admin's reason.
    pub reason: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The audit log. See [`Store::audit`].
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    store: &'a Store,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Audit { store }
    }

    /// Records an action; returns its row id. (Balance adjustments are
    /// recorded by [`Ledger::adjust`](crate::Ledger::adjust) itself.)
    pub async fn record(
        &self,
        actor: UserId,
        action: &str,
        target: Option<UserId>,
        amount: Option<Money>,
        reason: &str,
    ) -> Result<i64> {
        let mut conn = self.store.pool().acquire().await?;
        record_in(&mut conn, actor, action, target, amount, reason, now_ms()).await
    }

    /// The latest actions, newest first.
    pub async fn recent(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, actor_id, action, target_user_id, amount, reason, created_at \
             FROM admin_audit ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    actor: UserId(r.try_get("actor_id")?),
                    action: r.try_get("action")?,
                    target: r.try_get::<Option<i64>, _>("target_user_id")?.map(UserId),
                    amount: r
                        .try_get::<Option<i64>, _>("amount")?
                        .map(Money::from_minor),
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}

pub(crate) async fn record_in(
    conn: &mut AnyConnection,
    actor: UserId,
    action: &str,
    target: Option<UserId>,
    amount: Option<Money>,
    reason: &str,
    now: i64,
) -> Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO admin_audit (actor_id, action, target_user_id, amount, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(actor.0)
    .bind(action)
    .bind(target.map(|t| t.0))
    .bind(amount.map(Money::minor))
    .bind(reason)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}
