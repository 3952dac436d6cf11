//! Operator settings changed at run time (from the admin menu), as text.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Result, Store};

/// Key of maintenance mode: `"1"` while it is on, absent while it is off.
pub const MAINTENANCE: &str = "maintenance";

/// Settings. See [`Store::settings`].
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    store: &'a Store,
}

impl<'a> Settings<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Settings { store }
    }

    /// The value, if set.
    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        let value = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.store.pool())
            .await?;
        Ok(value)
    }

    /// The value as read at most `max_age` ago by this store (or its
    /// clones). For switches read on every update (maintenance mode): a
    /// change made through this store is seen at once, one made by another
    /// process within `max_age`.
    pub async fn get_recent(&self, key: &str, max_age: Duration) -> Result<Option<String>> {
        if let Some(value) = self.store.recent_settings.fresh(key, max_age) {
            return Ok(value);
        }
        let value = self.get(key).await?;
        self.store.recent_settings.keep(key, value.clone());
        Ok(value)
    }

    /// Sets the value (insert or replace).
    pub async fn set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.store.pool())
        .await?;
        self.store.recent_settings.forget(key);
        Ok(())
    }

    /// Takes the turn kept under `key` (a unix-ms time) when it is due at
    /// `now`, moving it to `next`, in one statement: of many processes asking
    /// at once, exactly one gets each turn. A key never set is due.
    pub async fn take_turn(&self, key: &str, now: i64, next: i64) -> Result<bool> {
        let taken = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value \
             WHERE CAST(settings.value AS BIGINT) <= $2 \
             RETURNING key",
        )
        .bind(key)
        .bind(now)
        .bind(next.to_string())
        .fetch_optional(self.store.pool())
        .await?;
        self.store.recent_settings.forget(key);
        Ok(taken.is_some())
    }

    /// Removes the value.
    pub async fn delete(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(self.store.pool())
            .await?;
        self.store.recent_settings.forget(key);
        Ok(())
    }
}

/// Recently read settings (see [`Settings::get_recent`]).
#[derive(Debug, Default)]
pub(crate) struct RecentSettings {
    values: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl RecentSettings {
    /// `Some(value)` when it was read less than `max_age` ago.
    fn fresh(&self, key: &str, max_age: Duration) -> Option<Option<String>> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values
            .get(key)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, v)| v.clone())
    }

    fn keep(&self, key: &str, value: Option<String>) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.insert(key.to_owned(), (Instant::now(), value));
    }

    pub(crate) fn forget(&self, key: &str) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.remove(key);
    }
}

impl Store {
    /// The setting's value, storing `value` first if the key is unset. Safe
    /// to race: every caller gets the one value that won.
    pub async fn setting_or_init(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(self.pool())
            .await?;
        Ok(v)
    }
}
