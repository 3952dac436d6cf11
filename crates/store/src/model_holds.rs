//! Models taken off sale until an operator puts them back.
//!
//! The catalog check holds a model when KIE no longer lists it or its schema
//! lost a field we send (every request would fail); an operator can hold one
//! by hand too. A held model is hidden from menus and its confirmations are
//! refused with a clear message; a pending generation of it is failed (hold
//! released) rather than sent. Only an operator releases a hold: a later
//! check that finds the model sound again does not, because whatever took it
//! off sale deserves a look first.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;

use crate::{Result, Store, now_ms};

/// Who took a model off sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldSource {
    /// The catalog check.
    Check,
    /// An operator.
    Operator,
}

impl HoldSource {
    fn as_str(self) -> &'static str {
        match self {
            HoldSource::Check => "check",
            HoldSource::Operator => "operator",
        }
    }
}

/// One held model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelHold {
    /// The model's catalog id.
    pub model: String,
    /// Why.
    pub reason: String,
    /// `check` or `operator`.
    pub source: String,
    /// Since when (unix ms).
    pub held_at: i64,
}

/// Model holds. See [`Store::model_holds`].
#[derive(Debug, Clone, Copy)]
pub struct ModelHolds<'a> {
    store: &'a Store,
}

impl<'a> ModelHolds<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        ModelHolds { store }
    }

    /// Takes `model` off sale. A model already held keeps its first reason.
    /// Returns whether it was newly held.
    pub async fn hold(&self, model: &str, reason: &str, source: HoldSource) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO model_holds (model, reason, source, held_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model) DO NOTHING",
        )
        .bind(model)
        .bind(reason)
        .bind(source.as_str())
        .bind(now_ms())
        .execute(self.store.pool())
        .await?
        .rows_affected();
        self.store.recent_holds.forget();
        Ok(n > 0)
    }

    /// Puts `model` back on sale. Returns whether it was held.
    pub async fn release(&self, model: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM model_holds WHERE model = $1")
            .bind(model)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        self.store.recent_holds.forget();
        Ok(n > 0)
    }

    /// Every held model, by id.
    pub async fn all(&self) -> Result<BTreeMap<String, ModelHold>> {
        let rows = sqlx::query("SELECT model, reason, source, held_at FROM model_holds")
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let hold = ModelHold {
                    model: r.try_get("model")?,
                    reason: r.try_get("reason")?,
                    source: r.try_get("source")?,
                    held_at: r.try_get("held_at")?,
                };
                Ok((hold.model.clone(), hold))
            })
            .collect()
    }

    /// The held models as read at most `max_age` ago by this store (or its
    /// clones): menus and confirmations read it on every update. A hold made
    /// through this store is seen at once, one made by another process
    /// within `max_age`.
    pub async fn recent(&self, max_age: Duration) -> Result<Holds> {
        if let Some(holds) = self.store.recent_holds.fresh(max_age) {
            return Ok(holds);
        }
        let holds = std::sync::Arc::new(self.all().await?);
        self.store.recent_holds.keep(holds.clone());
        Ok(holds)
    }
}

/// Every held model, by id, as one read found them.
pub type Holds = std::sync::Arc<BTreeMap<String, ModelHold>>;

/// The last read of the holds, shared by a store's clones.
#[derive(Debug, Default)]
pub(crate) struct RecentHolds {
    last: std::sync::Mutex<Option<(std::time::Instant, Holds)>>,
}

impl RecentHolds {
    fn fresh(&self, max_age: Duration) -> Option<Holds> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, h)| h.clone())
    }

    fn keep(&self, holds: Holds) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), holds));
    }

    fn forget(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
