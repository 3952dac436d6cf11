//! Lookups and counts: the rows as users, operators and the reconciler's
//! gauges see them. Nothing here writes.

use kiebot_domain::{GenerationId, GenerationStatus, Money, UserId};
use sqlx::Row;

use super::row::{FINISHED, Generation, Generations, generation_from_row};
use crate::Result;
use crate::sql::get_parsed;

impl Generations<'_> {
    /// The generation.
    pub async fn get(&self, id: GenerationId) -> Result<Option<Generation>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            crate::generation_columns!(),
            " FROM generations WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.store().pool())
        .await?;
        row.as_ref().map(generation_from_row).transpose()
    }

    /// The generation KIE knows as `task_id`.
    pub async fn by_task_id(&self, task_id: &str) -> Result<Option<Generation>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            crate::generation_columns!(),
            " FROM generations WHERE kie_task_id = $1"
        ))
        .bind(task_id)
        .fetch_optional(self.store().pool())
        .await?;
        row.as_ref().map(generation_from_row).transpose()
    }

    /// The user's generations, newest first (history pages).
    pub async fn list_for_user(
        &self,
        user: UserId,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<Generation>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            crate::generation_columns!(),
            " FROM generations WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(user.0)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(self.store().pool())
        .await?;
        rows.iter().map(generation_from_row).collect()
    }

    /// Active generations past their deadline at `now`, earliest first: a
    /// pending one (KIE never took it) at its deadline, a submitted one only
    /// `submitted_grace_ms` later. Until then a submitted task's last poll,
    /// due at the deadline, decides: polls that run late under load must not
    /// expire a task KIE finished (and the operator paid for). A generation
    /// whose outcome a poll already recorded is not overdue: it is waiting
    /// for finalization, and KIE did finish in time.
    pub async fn overdue(
        &self,
        now: i64,
        submitted_grace_ms: i64,
        limit: u32,
    ) -> Result<Vec<GenerationId>> {
        let rows = sqlx::query(
            // The first condition is implied by the second; written out, it
            // lets SQLite pick the partial index of active deadlines.
            "SELECT id FROM generations \
             WHERE status IN ('pending', 'submitted') \
                 AND ((status = 'pending' AND deadline_at <= $1) \
                     OR (status = 'submitted' AND deadline_at <= $2)) \
                 AND result IS NULL AND fail_code IS NULL \
             ORDER BY deadline_at, id LIMIT $3",
        )
        .bind(now)
        .bind(now.saturating_sub(submitted_grace_ms))
        .bind(i64::from(limit))
        .fetch_all(self.store().pool())
        .await?;
        rows.iter()
            .map(|r| Ok(GenerationId(r.try_get("id")?)))
            .collect()
    }

    /// How many generations are in each state (every state listed, in
    /// [`GenerationStatus::ALL`] order).
    pub async fn count_by_status(&self) -> Result<Vec<(GenerationStatus, u64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM generations GROUP BY status")
            .fetch_all(self.store().pool())
            .await?;
        let mut counts: Vec<(GenerationStatus, u64)> =
            GenerationStatus::ALL.iter().map(|&s| (s, 0)).collect();
        for r in &rows {
            let status: GenerationStatus = get_parsed(r, "status")?;
            let n: i64 = r.try_get("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = crate::sql::count(n);
            }
        }
        Ok(counts)
    }

    /// Tasks at KIE now (submitted, no outcome yet), counted up to `cap`:
    /// enough to know whether the in-flight cap is reached, without counting
    /// a hundred thousand rows.
    pub async fn count_in_flight(&self, cap: u32) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM generations \
                 WHERE status = 'submitted' AND result IS NULL AND fail_code IS NULL LIMIT {cap}) t"
        )))
        .fetch_one(self.store().pool())
        .await?;
        Ok(crate::sql::count(n))
    }

    /// How many generations are not terminal (for tests and the dashboard).
    pub async fn count_unfinished(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM generations WHERE status IN ('pending', 'submitted', 'succeeded')",
        )
        .fetch_one(self.store().pool())
        .await?;
        Ok(crate::sql::count(n))
    }

    /// Finished generations whose user has not been told yet (delivery still
    /// to be attempted; given-up ones are not counted).
    pub async fn count_untold(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM generations \
             WHERE delivered_at IS NULL AND status IN {FINISHED} AND next_delivery_at IS NOT NULL"
        )))
        .fetch_one(self.store().pool())
        .await?;
        Ok(crate::sql::count(n))
    }

    /// Total price of generations that succeeded (delivered or not): what the
    /// ledger must have captured.
    pub async fn succeeded_total(&self) -> Result<Money> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(price), 0) AS BIGINT) FROM generations \
             WHERE status IN ('succeeded', 'delivered')",
        )
        .fetch_one(self.store().pool())
        .await?;
        Ok(Money::from_minor(n))
    }

    /// The run times (ms) of a model's most recent finished tasks, newest
    /// first.
    pub async fn recent_run_times(&self, model: &str, limit: u32) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT kie_run_ms FROM generations WHERE model = $1 AND kie_run_ms IS NOT NULL \
             ORDER BY finished_at DESC LIMIT $2",
        )
        .bind(model)
        .bind(i64::from(limit))
        .fetch_all(self.store().pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("kie_run_ms")?)).collect()
    }
}
