//! Operator settings changed at run time (from the admin menu), as text.

use crate::{Result, Store};

/// Key of the maintenance switch (`"on"` / `"off"`).
pub const MAINTENANCE_MODE: &str = "maintenance_mode";
/// Key of the FX rate used in prices (a decimal, see `kiebot_domain::Rate`).
pub const FX_RATE: &str = "fx_rate";

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
        Ok(())
    }

    /// Removes the value.
    pub async fn delete(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}
