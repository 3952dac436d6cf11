//! The daily free quota: how many free generations a user has had of a model
//! on a day.

use kiebot_domain::{ModelId, UserId};
use sqlx::AnyConnection;

use crate::{Result, Store};

/// Free usage counters. See [`Store::free_usage`].
#[derive(Debug, Clone, Copy)]
pub struct FreeUsage<'a> {
    store: &'a Store,
}

impl<'a> FreeUsage<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        FreeUsage { store }
    }

    /// Free generations of `model` the user had on `day` (`YYYY-MM-DD`, in
    /// whatever time zone the caller counts days).
    pub async fn used_today(&self, user: UserId, model: &ModelId, day: &str) -> Result<u32> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT used FROM free_usage WHERE user_id = $1 AND model = $2 AND day = $3",
        )
        .bind(user.0)
        .bind(model.as_str())
        .bind(day)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(used.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Takes one free use if fewer than `limit` were used: `true` when taken.
    /// One statement, so concurrent calls never exceed the limit. (A
    /// confirmed generation takes its use through
    /// [`Funding::FreeQuota`](crate::Funding::FreeQuota) instead, so that a
    /// failure gives it back.)
    pub async fn consume(
        &self,
        user: UserId,
        model: &ModelId,
        day: &str,
        limit: u32,
    ) -> Result<bool> {
        let mut conn = self.store.pool().acquire().await?;
        consume_in(&mut conn, user, model, day, limit).await
    }
}

/// [`FreeUsage::consume`] inside an open transaction.
pub(crate) async fn consume_in(
    conn: &mut AnyConnection,
    user: UserId,
    model: &ModelId,
    day: &str,
    limit: u32,
) -> Result<bool> {
    if limit == 0 {
        return Ok(false);
    }
    let used: Option<i64> = sqlx::query_scalar(
        "INSERT INTO free_usage (user_id, model, day, used) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (user_id, model, day) DO UPDATE SET used = free_usage.used + 1 \
         WHERE free_usage.used < $4 \
         RETURNING used",
    )
    .bind(user.0)
    .bind(model.as_str())
    .bind(day)
    .bind(i64::from(limit))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(used.is_some())
}
