//! Dialogue state: one JSON document per user, with an expiry, so a wizard
//! survives restarts and moves between bot processes.

use std::time::Duration;

use kiebot_domain::UserId;

use crate::{Result, Store};

/// Dialogue storage. See [`Store::dialogues`].
#[derive(Debug, Clone, Copy)]
pub struct Dialogues<'a> {
    store: &'a Store,
}

impl<'a> Dialogues<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Dialogues { store }
    }

    /// The user's state (JSON) unless it expired at `now` (unix ms).
    pub async fn load(&self, user: UserId, now: i64) -> Result<Option<String>> {
        let state = sqlx::query_scalar(
            "SELECT state FROM dialogues WHERE user_id = $1 AND expires_at > $2",
        )
        .bind(user.0)
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(state)
    }

    /// Saves the user's state, valid for `ttl` from `now` (unix ms).
    pub async fn save(
        &self,
        user: UserId,
        state_json: &str,
        now: i64,
        ttl: Duration,
    ) -> Result<()> {
        let mut conn = self.store.pool().acquire().await?;
        save_in(&mut conn, user, state_json, now, ttl).await
    }

    /// Forgets the user's state.
    pub async fn clear(&self, user: UserId) -> Result<()> {
        sqlx::query("DELETE FROM dialogues WHERE user_id = $1")
            .bind(user.0)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Forgets up to `limit` dialogues expired at `now` (unix ms); returns
    /// how many. A bounded step for housekeeping.
    pub async fn prune_some(&self, now: i64, limit: u32) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM dialogues WHERE user_id IN \
             (SELECT user_id FROM dialogues WHERE expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Deletes states expired at `now`; returns how many.
    pub async fn prune(&self, now: i64) -> Result<u64> {
        let n = sqlx::query("DELETE FROM dialogues WHERE expires_at <= $1")
            .bind(now)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        Ok(n)
    }
}

/// Saves the user's state on `conn` (inside the caller's transaction).
pub(crate) async fn save_in(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    state_json: &str,
    now: i64,
    ttl: Duration,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dialogues (user_id, state, updated_at, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, \
             updated_at = excluded.updated_at, expires_at = excluded.expires_at",
    )
    .bind(user.0)
    .bind(state_json)
    .bind(now)
    .bind(now.saturating_add(crate::sql::millis(ttl)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
