//! Telegram update de-duplication: webhooks and polling may deliver an update
//! more than once; each is handled the first time only.

use crate::{Result, Store, now_ms};

/// Processed update ids. See [`Store::updates`].
#[derive(Debug, Clone, Copy)]
pub struct Updates<'a> {
    store: &'a Store,
}

impl<'a> Updates<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Updates { store }
    }

    /// `true` the first time an update id is seen, `false` ever after.
    pub async fn first_time(&self, update_id: i64) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO processed_updates (update_id, processed_at) VALUES ($1, $2) \
             ON CONFLICT (update_id) DO NOTHING",
        )
        .bind(update_id)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    /// Records a batch of update ids in one statement and returns those
    /// seen for the first time (the rest are redeliveries). One write per
    /// getUpdates batch instead of one per update: on SQLite every write
    /// transaction takes the database's single write lock and a sync.
    pub async fn first_time_many(&self, update_ids: &[i64]) -> Result<Vec<i64>> {
        if update_ids.is_empty() {
            return Ok(vec![]);
        }
        // `WHERE TRUE` tells SQLite's parser that ON CONFLICT belongs to the
        // INSERT, not to a join of the SELECT.
        let sql = format!(
            "INSERT INTO processed_updates (update_id, processed_at) \
             SELECT ids.value, $2 FROM ({}) AS ids WHERE TRUE \
             ON CONFLICT (update_id) DO NOTHING RETURNING update_id",
            crate::sql::json_ids(self.store.engine(), 1)
        );
        let fresh: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(crate::sql::json_array(update_ids.iter().copied()))
            .bind(now_ms())
            .fetch_all(self.store.pool())
            .await?;
        Ok(fresh)
    }

    /// Forgets updates processed before `older_than` (unix ms); Telegram does
    /// not redeliver after a day. Returns how many.
    pub async fn prune(&self, older_than: i64) -> Result<u64> {
        let n = sqlx::query("DELETE FROM processed_updates WHERE processed_at < $1")
            .bind(older_than)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        Ok(n)
    }
}
