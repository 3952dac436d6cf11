//! Telegram update de-duplication: webhooks and polling may deliver an update
//! more than once; each is handled the first time only.

use std::sync::LazyLock;

use crate::{Engine, Result, Store, now_ms};

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
    /// transaction takes the database's single write lock and a sync. On
    /// PostgreSQL the write does not wait for its own disk sync (see
    /// [`first_time_many_sql`]).
    pub async fn first_time_many(&self, update_ids: &[i64]) -> Result<Vec<i64>> {
        if update_ids.is_empty() {
            return Ok(vec![]);
        }
        // Built once per engine: this runs for every getUpdates batch.
        static PG: LazyLock<String> = LazyLock::new(|| first_time_many_sql(Engine::Postgres));
        static SQLITE: LazyLock<String> = LazyLock::new(|| first_time_many_sql(Engine::Sqlite));
        let sql = match self.store.engine() {
            Engine::Postgres => PG.as_str(),
            Engine::Sqlite => SQLITE.as_str(),
        };
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

impl Updates<'_> {
    /// Forgets up to `limit` updates processed before `older_than` (unix
    /// ms), oldest first; returns how many. A bounded step for housekeeping:
    /// one statement never holds the table (or SQLite's one writer) long.
    pub async fn prune_some(&self, older_than: i64, limit: u32) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM processed_updates WHERE update_id IN \
             (SELECT update_id FROM processed_updates WHERE processed_at < $1 \
              ORDER BY processed_at LIMIT $2)",
        )
        .bind(older_than)
        .bind(i64::from(limit))
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(n)
    }
}

/// The statement of [`Updates::first_time_many`]: binds the ids as a JSON
/// array (`$1`) and the time (`$2`), returns the fresh ids.
///
/// On PostgreSQL the record commits without waiting for its WAL flush
/// (`synchronous_commit = off` for this one transaction), which takes a
/// disk sync off the path of every getUpdates batch. That loses nothing
/// that matters: WAL is flushed in order, so the first synchronous
/// commit after it (any handler's write: a confirmation, a payment, a
/// dialogue step) makes the record durable too. A record lost in a
/// database crash thus belongs to updates none of whose writes survived
/// either; handling one again, if Telegram redelivers it, is right, and
/// costs at most a reply shown twice.
///
/// The setting is made in a CTE joined to the insert, so it is one
/// statement and one round trip; `set_config(.., true)` ends with the
/// transaction. SQLite has no such mode.
fn first_time_many_sql(engine: Engine) -> String {
    let (relaxed, joined) = match engine {
        Engine::Postgres => (
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) ",
            " CROSS JOIN relaxed",
        ),
        Engine::Sqlite => ("", ""),
    };
    // `WHERE TRUE` tells SQLite's parser that ON CONFLICT belongs to the
    // INSERT, not to a join of the SELECT.
    format!(
        "{relaxed}INSERT INTO processed_updates (update_id, processed_at) \
         SELECT ids.value, $2 FROM ({}) AS ids{joined} WHERE TRUE \
         ON CONFLICT (update_id) DO NOTHING RETURNING update_id",
        crate::sql::json_ids(engine, 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    async fn synchronous_commit(conn: &mut sqlx::AnyConnection) -> String {
        sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(conn)
            .await
            .expect("read the setting")
    }

    /// The record's transaction commits asynchronously, and only that
    /// transaction: the setting must not stay on the pooled connection,
    /// where the next confirmation or payment would commit without its sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_record_commits_without_waiting_for_its_sync() {
        let db = kiebot_testkit::TestDb::postgres().await;
        // One connection, so every statement below runs on the same one.
        let store = Store::connect_with(db.url(), 1).await.expect("connect");
        store.migrate().await.expect("migrate");

        let mut conn = store.pool().acquire().await.expect("acquire");
        let mut tx = conn.begin().await.expect("begin");
        let fresh: Vec<i64> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(first_time_many_sql(Engine::Postgres)))
                .bind(crate::sql::json_array([1, 2]))
                .bind(0_i64)
                .fetch_all(&mut *tx)
                .await
                .expect("record");
        assert_eq!(fresh.len(), 2);
        assert_eq!(synchronous_commit(&mut tx).await, "off");
        tx.commit().await.expect("commit");
        assert_eq!(synchronous_commit(&mut conn).await, "on");
        drop(conn);

        // Through the store, on its only connection.
        let fresh = store.updates().first_time_many(&[2, 3]).await.unwrap();
        assert_eq!(fresh, vec![3]);
        let mut conn = store.pool().acquire().await.expect("acquire");
        assert_eq!(synchronous_commit(&mut conn).await, "on");
    }
}
