//! The worker side of the generation lifecycle: claims, leases and the
//! reconciler's batch queries.
//!
//! Two kinds of timestamps drive the pipeline:
//!
//! - `next_poll_at` / `next_delivery_at`: when the **reconciler** should next
//!   enqueue work for the row. A reconciler claim selects due rows and moves
//!   this time forward by a lease *in the same statement*, so concurrent
//!   reconcilers never enqueue a row twice, and a job that is lost is enqueued
//!   again when the lease runs out.
//! - `claimed_until`: a **handler's** lease. Submit and Deliver claim the row
//!   before doing anything outside the database, so two copies of one job
//!   (apalis delivers at least once) never call KIE or Telegram concurrently.
//!   Every status change clears it.
//!
//! For a pending row, `next_poll_at` means "re-enqueue Submit at"; it is null
//! until a first submit attempt fails, and the row is due `grace` after its
//! creation. For a submitted row with a recorded outcome (`result` or
//! `fail_code` set while still `submitted`), it means "re-enqueue Finalize at".

use kiebot_domain::{GenerationId, Lifecycle, TaskOutcome, UserId};
use sqlx::Row;

use super::row::{
    CLAIM_COLUMNS, DeliveryClaim, FINISHED, Generation, Generations, LIFECYCLE_COLUMNS,
    generation_from_row, lifecycle_from_row, status_of,
};
use crate::{Result, now_ms};

/// A pending row due for a submit at `$1` (never tried rows after the grace
/// `$2`), claimed by no handler.
const DUE_SUBMIT: &str = "status = 'pending' AND COALESCE(next_poll_at, created_at + $2) <= $1 \
                          AND (claimed_until IS NULL OR claimed_until <= $1)";

/// How many of the oldest due pending rows the fair ranking of
/// [`Generations::claim_due_submits`] looks at.
pub const FAIR_WINDOW: u32 = 5000;

impl Generations<'_> {
    /// `pending -> submitted` with KIE's task id, the first poll time and the
    /// deadline. `Ok(false)`: it was not pending (already submitted, or ended).
    pub async fn mark_submitted(
        &self,
        id: GenerationId,
        task_id: &str,
        next_poll_at: i64,
        deadline_at: i64,
    ) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE generations SET status = 'submitted', kie_task_id = $2, next_poll_at = $3, \
                 deadline_at = $4, submitted_at = $5, updated_at = $5, claimed_until = NULL \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id.0)
        .bind(task_id)
        .bind(next_poll_at)
        .bind(deadline_at)
        .bind(now_ms())
        .execute(self.store().pool())
        .await?
        .rows_affected();
        if changed == 0 {
            self.require(id).await?;
        }
        Ok(changed > 0)
    }

    /// Schedules the next poll of a submitted generation and counts the poll
    /// that found it unfinished. `Ok(false)`: it is no longer submitted.
    pub async fn schedule_poll(&self, id: GenerationId, at: i64) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE generations SET next_poll_at = $2, poll_attempts = poll_attempts + 1, \
                 updated_at = $3 \
             WHERE id = $1 AND status = 'submitted'",
        )
        .bind(id.0)
        .bind(at)
        .bind(now_ms())
        .execute(self.store().pool())
        .await?
        .rows_affected();
        if changed == 0 {
            self.require(id).await?;
        }
        Ok(changed > 0)
    }

    /// Claims a pending generation for a submit attempt and counts the
    /// attempt, before KIE is called. `None`: not pending, or another worker
    /// holds the claim.
    pub async fn claim_submit(
        &self,
        id: GenerationId,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<Generation>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE generations SET submit_attempts = submit_attempts + 1, claimed_until = $3, updated_at = $2 \
             WHERE id = $1 AND status = 'pending' AND (claimed_until IS NULL OR claimed_until <= $2) \
             RETURNING {}",
            crate::generation_columns!()
        )))
        .bind(id.0)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(self.store().pool())
        .await?;
        row.as_ref().map(generation_from_row).transpose()
    }

    /// Gives up a submit claim after a retryable failure; the reconciler
    /// re-enqueues the row at `at`.
    pub async fn retry_submit_at(&self, id: GenerationId, at: i64) -> Result<bool> {
        self.give_back_submit(id, at, false).await
    }

    /// Drops a submit claim; the row is due again at `at`. `uncount` also
    /// takes back the attempt [`claim_submit`](Self::claim_submit) counted,
    /// and the dispatcher's pick.
    async fn give_back_submit(&self, id: GenerationId, at: i64, uncount: bool) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE generations SET \
                 submit_attempts = CASE WHEN $4 AND submit_attempts > 0 \
                     THEN submit_attempts - 1 ELSE submit_attempts END, \
                 admitted_at = CASE WHEN $4 THEN NULL ELSE admitted_at END, \
                 claimed_until = NULL, next_poll_at = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id.0)
        .bind(at)
        .bind(now_ms())
        .bind(uncount)
        .execute(self.store().pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Gives a claimed pending row back without a create: the attempt counted
    /// by [`claim_submit`](Self::claim_submit) is taken back (nothing was sent
    /// to KIE, or KIE refused it for its rate, which proves no task was made),
    /// and the row is due again at `at`, in the fair line.
    pub async fn park_submit(&self, id: GenerationId, at: i64) -> Result<bool> {
        self.give_back_submit(id, at, true).await
    }

    /// Whether `user` has another generation sent to KIE since `since`, or
    /// being sent now: a fresh create of theirs then joins the fair line
    /// instead of taking a second slot of the same window.
    pub async fn user_created_since(
        &self,
        user: UserId,
        except: GenerationId,
        since: i64,
        now: i64,
    ) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM generations WHERE user_id = $1 AND id <> $2 AND ( \
                 (status = 'submitted' AND submitted_at >= $3) \
                 OR (status = 'pending' AND claimed_until > $4 AND submit_attempts > 0)) \
             LIMIT 1",
        )
        .bind(user.0)
        .bind(except.0)
        .bind(since)
        .bind(now)
        .fetch_optional(self.store().pool())
        .await?;
        Ok(found.is_some())
    }

    /// Records what KIE said about a finished task, once; the row becomes due
    /// for Finalize at `now + lease` should the Finalize job be lost.
    /// `false`: not submitted, or an outcome was already recorded.
    pub async fn record_outcome(
        &self,
        id: GenerationId,
        outcome: &TaskOutcome,
        requeue_at: i64,
    ) -> Result<bool> {
        let (result, code, reason) = match outcome {
            TaskOutcome::Success { result } => (Some(result.as_str()), None, None),
            TaskOutcome::Failure { code, reason } => {
                (None, Some(code.as_str()), Some(reason.as_str()))
            }
        };
        let n = sqlx::query(
            "UPDATE generations SET result = $2, fail_code = $3, fail_reason = $4, next_poll_at = $5, \
                 updated_at = $6 \
             WHERE id = $1 AND status = 'submitted' AND result IS NULL AND fail_code IS NULL",
        )
        .bind(id.0)
        .bind(result)
        .bind(code)
        .bind(reason)
        .bind(requeue_at)
        .bind(now_ms())
        .execute(self.store().pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Moves a submitted generation's next poll to `now` (a KIE callback's
    /// hint). `false`: not submitted.
    pub async fn poll_now(&self, id: GenerationId, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE generations SET next_poll_at = $2, updated_at = $2 WHERE id = $1 AND status = 'submitted'",
        )
        .bind(id.0)
        .bind(now)
        .execute(self.store().pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Makes whatever the generation waits for due now and drops any handler
    /// lease (an operator's "retry"). Returns the row as it left it (its
    /// [`lifecycle`](Generation::lifecycle) names the job to enqueue),
    /// `None` if absent.
    pub async fn nudge(&self, id: GenerationId, now: i64) -> Result<Option<Generation>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE generations SET \
                 next_poll_at = CASE WHEN status IN ('pending', 'submitted') THEN $2 ELSE next_poll_at END, \
                 next_delivery_at = CASE WHEN delivered_at IS NULL AND status IN {FINISHED} THEN $2 \
                     ELSE next_delivery_at END, \
                 claimed_until = NULL, updated_at = $2 \
             WHERE id = $1 RETURNING {}",
            crate::generation_columns!()
        )))
        .bind(id.0)
        .bind(now)
        .fetch_optional(self.store().pool())
        .await?;
        row.as_ref().map(generation_from_row).transpose()
    }

    /// Undoes reconciler claims whose jobs the queue had no room for: each
    /// row's next check becomes `at` again. Handler leases are left alone.
    pub async fn due_again(&self, ids: &[GenerationId], at: i64) -> Result<u64> {
        let mut changed = 0;
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(|id| id.0.to_string()).collect();
            changed += sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE generations SET \
                     next_poll_at = CASE WHEN status IN ('pending', 'submitted') THEN $1 \
                         ELSE next_poll_at END, \
                     next_delivery_at = CASE WHEN delivered_at IS NULL AND status IN {FINISHED} \
                         AND next_delivery_at IS NOT NULL THEN $1 ELSE next_delivery_at END \
                 WHERE id IN ({})",
                list.join(", ")
            )))
            .bind(at)
            .execute(self.store().pool())
            .await?
            .rows_affected();
        }
        Ok(changed)
    }

    /// Claims a finished, untold generation for a delivery attempt and counts
    /// the attempt. `None`: told already, not finished, given up, or another
    /// worker holds the claim.
    pub async fn claim_delivery(
        &self,
        id: GenerationId,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<DeliveryClaim>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE generations SET delivery_attempts = delivery_attempts + 1, claimed_until = $3, updated_at = $2 \
             WHERE id = $1 AND delivered_at IS NULL AND status IN {FINISHED} \
                 AND next_delivery_at IS NOT NULL \
                 AND (claimed_until IS NULL OR claimed_until <= $2) \
             RETURNING {CLAIM_COLUMNS}"
        )))
        .bind(id.0)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(self.store().pool())
        .await?;
        row.as_ref().map(DeliveryClaim::from_row).transpose()
    }

    /// The user has been told: a success becomes `delivered` (with the
    /// Telegram file ids), a failure keeps its status and gets `delivered_at`.
    /// `false`: told already.
    pub async fn mark_told(&self, id: GenerationId, file_ids_json: &str) -> Result<bool> {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE generations SET \
                 status = CASE WHEN status = 'succeeded' THEN 'delivered' ELSE status END, \
                 delivered_at = $2, next_delivery_at = NULL, claimed_until = NULL, file_ids = $3, \
                 updated_at = $2 \
             WHERE id = $1 AND delivered_at IS NULL AND status IN {FINISHED}"
        )))
        .bind(id.0)
        .bind(now_ms())
        .bind(file_ids_json)
        .execute(self.store().pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Releases a delivery claim after a temporary failure; due again at `at`.
    pub async fn retry_delivery_at(&self, id: GenerationId, at: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE generations SET next_delivery_at = $2, claimed_until = NULL, updated_at = $3 \
             WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id.0)
        .bind(at)
        .bind(now_ms())
        .execute(self.store().pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Stops delivery attempts (the chat stays unreachable); the reason is
    /// kept for operators and the result stays in the user's history.
    pub async fn give_up_delivery(&self, id: GenerationId, reason: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE generations SET next_delivery_at = NULL, claimed_until = NULL, delivery_error = $2, \
                 updated_at = $3 \
             WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id.0)
        .bind(reason)
        .bind(now_ms())
        .execute(self.store().pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Reconciler: pending rows nobody is submitting — never tried and older
    /// than `grace_ms`, or due for a retry — claimed until `requeue_at` and
    /// marked admitted at `now`.
    ///
    /// Taken fairly across users, round by round: a row's turn is its place
    /// among its user's waiting rows plus the creates that user had since
    /// `fair_since`. Each user's first waiting row comes before anyone's
    /// second, and a user whose earlier rows were sent in this line waits
    /// behind those who have had none, so one user's five confirmations do
    /// not put twenty other users behind them while KIE's create limit holds
    /// the line back (counting only waiting rows would hand the busy user
    /// the first slot of every window). The ranking looks at the oldest
    /// [`FAIR_WINDOW`] due rows.
    pub async fn claim_due_submits(
        &self,
        now: i64,
        grace_ms: i64,
        requeue_at: i64,
        limit: i64,
        fair_since: i64,
    ) -> Result<Vec<GenerationId>> {
        let due = DUE_SUBMIT;
        // The creates a user had since `fair_since`. The bound on
        // `created_at` keeps the count on the (user_id, created_at) index for
        // a user with a long history; a row that waited longer than that in
        // the line is not counted, which only favours its user.
        let recent = "(SELECT COUNT(*) FROM generations r WHERE r.user_id = {uid} \
                      AND r.created_at >= $5 - 3600000 AND r.submitted_at >= $5)";
        // The candidates are locked before they are ranked: PostgreSQL allows
        // no row lock in a query with a window function.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH candidates AS ( \
                 SELECT id, user_id FROM generations WHERE {due} ORDER BY id LIMIT {FAIR_WINDOW}{lock}), \
             users AS ( \
                 SELECT u.user_id, {recent_c} AS n FROM (SELECT DISTINCT user_id FROM candidates) u), \
             chosen AS ( \
                 SELECT id FROM ( \
                     SELECT c.id, ROW_NUMBER() OVER (PARTITION BY c.user_id ORDER BY c.id) + u.n AS turn \
                     FROM candidates c JOIN users u ON u.user_id = c.user_id) ranked \
                 ORDER BY turn, id LIMIT $4) \
             UPDATE generations SET next_poll_at = $3, admitted_at = $1 \
             WHERE id IN (SELECT id FROM chosen) AND {due} \
             RETURNING id, user_id, {recent_g} AS recent",
            lock = self.store().skip_locked(),
            recent_c = recent.replace("{uid}", "u.user_id"),
            recent_g = recent.replace("{uid}", "generations.user_id"),
        )))
        .bind(now)
        .bind(grace_ms)
        .bind(requeue_at)
        .bind(limit)
        .bind(fair_since)
        .fetch_all(self.store().pool())
        .await?;
        // RETURNING gives no order; the caller needs the fair one when it has
        // create slots for only some of them. The claimed rows are each
        // user's first waiting ones, so their places among themselves are
        // their places in the line.
        let mut claimed: Vec<(i64, i64, i64)> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("user_id")?,
                    r.try_get("recent")?,
                ))
            })
            .collect::<Result<_>>()?;
        claimed.sort_unstable();
        let mut turns: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
        let mut ranked: Vec<(i64, i64)> = claimed
            .into_iter()
            .map(|(id, user, recent)| {
                let turn = turns.entry(user).or_insert(recent);
                *turn += 1;
                (*turn, id)
            })
            .collect();
        ranked.sort_unstable();
        Ok(ranked.into_iter().map(|(_, id)| GenerationId(id)).collect())
    }

    /// Pending rows due for a submit now (as
    /// [`claim_due_submits`](Self::claim_due_submits) would take them),
    /// counted up to `limit`.
    pub async fn count_due_submits(&self, now: i64, grace_ms: i64, limit: u32) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM generations WHERE {DUE_SUBMIT} LIMIT {limit}) t"
        )))
        .bind(now)
        .bind(grace_ms)
        .fetch_one(self.store().pool())
        .await?;
        Ok(crate::sql::count(n))
    }

    /// Keeps KIE's own account of a finished task: its run time (for the
    /// model's poll plan) and what it billed (for margin reports).
    pub async fn record_kie_facts(
        &self,
        id: GenerationId,
        run_ms: Option<i64>,
        credits_milli: Option<i64>,
    ) -> Result<()> {
        if run_ms.is_none() && credits_milli.is_none() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE generations SET kie_run_ms = COALESCE($2, kie_run_ms), \
                 kie_credits = COALESCE($3, kie_credits) WHERE id = $1",
        )
        .bind(id.0)
        .bind(run_ms)
        .bind(credits_milli)
        .execute(self.store().pool())
        .await?;
        Ok(())
    }

    // The batch claims pick their rows in a materialized CTE: as a plain
    // `IN (SELECT .. LIMIT n FOR UPDATE SKIP LOCKED)`, PostgreSQL may run the
    // subquery more than once, and each run skips the rows the last one
    // locked, so one claim could take more than `limit` rows (more polls
    // than KIE's budget allows).

    /// Reconciler: submitted rows whose next poll (or, with a recorded
    /// outcome, whose Finalize) is due, claimed until `requeue_at`, with
    /// their lifecycle: its [`next_job`](Lifecycle::next_job) says which of
    /// the two to enqueue.
    pub async fn claim_due_polls(
        &self,
        now: i64,
        requeue_at: i64,
        limit: i64,
    ) -> Result<Vec<(GenerationId, Lifecycle)>> {
        let due = "status = 'submitted' AND next_poll_at <= $1";
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH picked AS MATERIALIZED ( \
                 SELECT id FROM generations WHERE {due} ORDER BY next_poll_at, id LIMIT $3{lock}) \
             UPDATE generations SET next_poll_at = $2 \
             WHERE id IN (SELECT id FROM picked) AND {due} \
             RETURNING {LIFECYCLE_COLUMNS}",
            lock = self.store().skip_locked()
        )))
        .bind(now)
        .bind(requeue_at)
        .bind(limit)
        .fetch_all(self.store().pool())
        .await?;
        rows.iter().map(lifecycle_from_row).collect()
    }

    /// Reconciler: finished rows whose user has not been told and whose
    /// delivery is due at `due_before` (callers pass now minus a grace, to
    /// leave the Deliver job that finalization enqueued alone), claimed until
    /// `requeue_at`.
    pub async fn claim_due_deliveries(
        &self,
        due_before: i64,
        requeue_at: i64,
        limit: i64,
    ) -> Result<Vec<GenerationId>> {
        let due =
            format!("delivered_at IS NULL AND status IN {FINISHED} AND next_delivery_at <= $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH picked AS MATERIALIZED ( \
                 SELECT id FROM generations WHERE {due} ORDER BY next_delivery_at, id LIMIT $3{lock}) \
             UPDATE generations SET next_delivery_at = $2 \
             WHERE id IN (SELECT id FROM picked) AND {due} \
             RETURNING id",
            lock = self.store().skip_locked()
        )))
        .bind(due_before)
        .bind(requeue_at)
        .bind(limit)
        .fetch_all(self.store().pool())
        .await?;
        rows.iter()
            .map(|r| Ok(GenerationId(r.try_get("id")?)))
            .collect()
    }

    /// `NotFound` unless the generation exists.
    async fn require(&self, id: GenerationId) -> Result<()> {
        status_of(self.store(), id).await.map(|_| ())
    }
}

impl crate::Store {
    /// The row-locking clause of a reconciler's batch claim. On PostgreSQL two
    /// reconcilers claiming overlapping batches would otherwise lock the same
    /// rows in different orders and deadlock; skipping rows another claim
    /// holds lets each take a disjoint batch. SQLite serialises writers, so it
    /// needs (and has) no such clause.
    pub(crate) fn skip_locked(&self) -> &'static str {
        match self.engine() {
            crate::Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::Engine::Sqlite => "",
        }
    }
}
