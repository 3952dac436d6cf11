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

use kiebot_domain::{GenerationId, GenerationStatus};
use sqlx::Row;

use crate::generations::{Generation, Generations, generation_from_row};
use crate::sql::get_parsed;
use crate::{Result, now_ms};

/// What KIE said about a finished task, recorded before it is finalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A result (the stored JSON: `resultUrls`, `text`, ...).
    Success {
        /// The result JSON.
        result: String,
    },
    /// A failure.
    Failure {
        /// Machine-readable code (KIE's failCode, an HTTP code, ...).
        code: String,
        /// Human-readable reason.
        reason: String,
    },
}

/// A finished generation whose delivery the caller has claimed, with the
/// user's language for the message.
#[derive(Debug, Clone)]
pub struct DeliveryClaim {
    /// The row as the claim left it.
    pub generation: Generation,
    /// The user's chosen language, if any.
    pub language: Option<String>,
}

/// What a statement returns for a [`DeliveryClaim`]: the row and its user's
/// language.
pub(crate) const CLAIM_COLUMNS: &str = concat!(
    crate::generation_columns!(),
    ", (SELECT u.language FROM users u WHERE u.id = generations.user_id) AS user_language"
);

impl DeliveryClaim {
    pub(crate) fn from_row(row: &sqlx::any::AnyRow) -> Result<DeliveryClaim> {
        Ok(DeliveryClaim {
            generation: generation_from_row(row)?,
            language: row.try_get("user_language")?,
        })
    }
}

impl Generation {
    /// The outcome recorded by a poll, if any (meaningful while `submitted`;
    /// after finalization the same columns hold the final result).
    pub fn outcome(&self) -> Option<Outcome> {
        if let Some(result) = &self.result_json {
            return Some(Outcome::Success {
                result: result.clone(),
            });
        }
        self.fail_code.as_ref().map(|code| Outcome::Failure {
            code: code.clone(),
            reason: self.fail_reason.clone().unwrap_or_default(),
        })
    }

    /// Whether a poll has recorded the outcome.
    pub fn outcome_recorded(&self) -> bool {
        self.result_json.is_some() || self.fail_code.is_some()
    }

    /// A boolean parameter as the user chose it (`None` when absent).
    pub fn params_flag(&self, name: &str) -> Option<bool> {
        let v: serde_json::Value = serde_json::from_str(&self.params_json).ok()?;
        // Stored parameters are `{"name": {"t": "bool", "v": true}}` or plain values.
        let field = v.get(name)?;
        field.get("v").unwrap_or(field).as_bool()
    }
}

const FINISHED: &str = "('succeeded', 'failed', 'expired', 'canceled')";

/// A pending row due for a submit at `$1` (never tried rows after the grace
/// `$2`), claimed by no handler.
const DUE_SUBMIT: &str = "status = 'pending' AND COALESCE(next_poll_at, created_at + $2) <= $1 \
                          AND (claimed_until IS NULL OR claimed_until <= $1)";

/// How many of the oldest due pending rows the fair ranking of
/// [`Generations::claim_due_submits`] looks at.
pub const FAIR_WINDOW: u32 = 5000;

impl Generations<'_> {
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

    /// Records what KIE said about a finished task, once; the row becomes due
    /// for Finalize at `now + lease` should the Finalize job be lost.
    /// `false`: not submitted, or an outcome was already recorded.
    pub async fn record_outcome(
        &self,
        id: GenerationId,
        outcome: &Outcome,
        requeue_at: i64,
    ) -> Result<bool> {
        let (result, code, reason) = match outcome {
            Outcome::Success { result } => (Some(result.as_str()), None, None),
            Outcome::Failure { code, reason } => (None, Some(code.as_str()), Some(reason.as_str())),
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

    /// Ends an active generation with KIE's outcome, as
    /// [`finish_success`](Self::finish_success) or
    /// [`finish_failure`](Self::finish_failure) do (capture or release in the
    /// same transaction), and claims its delivery until `lease_until` in the
    /// same write, so the finalizer tells the user without another claim.
    /// `to` is `succeeded` for a success, else `failed` or `expired`.
    /// `None`: it had ended already (nothing moved; the usual delivery claim
    /// decides who tells the user).
    pub async fn finish_and_claim(
        &self,
        id: GenerationId,
        to: GenerationStatus,
        outcome: &Outcome,
        lease_until: i64,
    ) -> Result<Option<DeliveryClaim>> {
        let (ok, bad) = match outcome {
            Outcome::Success { result } => (Some(result.as_str()), None),
            Outcome::Failure { code, reason } => (None, Some((code.as_str(), reason.as_str()))),
        };
        let columns = crate::generations::Outcome {
            result_json: ok,
            fail_code: bad.map(|b| b.0),
            fail_reason: bad.map(|b| b.1),
            delivery_lease: Some(lease_until),
        };
        let legal = match outcome {
            Outcome::Success { .. } => to == GenerationStatus::Succeeded,
            Outcome::Failure { .. } => to.releases_hold(),
        };
        if !legal {
            let from = crate::generations::status_of(self.store(), id).await?;
            return Err(crate::StoreError::IllegalTransition(
                kiebot_domain::TransitionError { from, to },
            ));
        }
        crate::generations::finish(self.store(), id, to, columns).await
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
    /// lease (an operator's "retry"). Returns the status, `None` if absent.
    pub async fn nudge(&self, id: GenerationId, now: i64) -> Result<Option<GenerationStatus>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE generations SET \
                 next_poll_at = CASE WHEN status IN ('pending', 'submitted') THEN $2 ELSE next_poll_at END, \
                 next_delivery_at = CASE WHEN delivered_at IS NULL AND status IN {FINISHED} THEN $2 \
                     ELSE next_delivery_at END, \
                 claimed_until = NULL, updated_at = $2 \
             WHERE id = $1 RETURNING status"
        )))
        .bind(id.0)
        .bind(now)
        .fetch_optional(self.store().pool())
        .await?;
        row.as_ref().map(|r| get_parsed(r, "status")).transpose()
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
        user: kiebot_domain::UserId,
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

    /// Reconciler: submitted rows whose next poll (or, with a recorded
    /// outcome, whose Finalize) is due, claimed until `requeue_at`. The flag
    /// says whether the outcome is recorded (enqueue Finalize, not Poll).
    pub async fn claim_due_polls(
        &self,
        now: i64,
        requeue_at: i64,
        limit: i64,
    ) -> Result<Vec<(GenerationId, bool)>> {
        let due = "status = 'submitted' AND next_poll_at <= $1";
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE generations SET next_poll_at = $2 \
             WHERE id IN (SELECT id FROM generations WHERE {due} ORDER BY next_poll_at, id LIMIT $3{lock}) \
                 AND {due} \
             RETURNING id, CAST(CASE WHEN result IS NULL AND fail_code IS NULL THEN 0 ELSE 1 END AS BIGINT) \
                 AS has_outcome",
            lock = self.store().skip_locked()
        )))
        .bind(now)
        .bind(requeue_at)
        .bind(limit)
        .fetch_all(self.store().pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    GenerationId(r.try_get("id")?),
                    r.try_get::<i64, _>("has_outcome")? != 0,
                ))
            })
            .collect()
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
            "UPDATE generations SET next_delivery_at = $2 \
             WHERE id IN (SELECT id FROM generations WHERE {due} ORDER BY next_delivery_at, id LIMIT $3{lock}) \
                 AND {due} \
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

    /// How many generations are not terminal (for tests and the dashboard).
    pub async fn count_unfinished(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM generations WHERE status IN ('pending', 'submitted', 'succeeded')",
        )
        .fetch_one(self.store().pool())
        .await?;
        Ok(crate::sql::count(n))
    }

    /// Total price of generations that succeeded (delivered or not): what the
    /// ledger must have captured.
    pub async fn succeeded_total(&self) -> Result<kiebot_domain::Money> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(price), 0) AS BIGINT) FROM generations \
             WHERE status IN ('succeeded', 'delivered')",
        )
        .fetch_one(self.store().pool())
        .await?;
        Ok(kiebot_domain::Money::from_minor(n))
    }
}

impl Generations<'_> {
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
}

/// Money in the ledger by what happened to it, for invariant checks and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoneyTotals {
    /// Every capture entry, summed.
    pub captured: kiebot_domain::Money,
    /// Every release entry, summed.
    pub released: kiebot_domain::Money,
    /// Held across all wallets right now.
    pub held: kiebot_domain::Money,
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

impl crate::Store {
    /// Totals of captured, released and currently held money.
    pub async fn money_totals(&self) -> Result<MoneyTotals> {
        let row = sqlx::query(
            "SELECT \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_entries WHERE kind = 'capture'), 0) AS BIGINT) AS captured, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_entries WHERE kind = 'release'), 0) AS BIGINT) AS released, \
                 CAST(COALESCE((SELECT SUM(held) FROM wallets), 0) AS BIGINT) AS held",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(MoneyTotals {
            captured: kiebot_domain::Money::from_minor(row.try_get("captured")?),
            released: kiebot_domain::Money::from_minor(row.try_get("released")?),
            held: kiebot_domain::Money::from_minor(row.try_get("held")?),
        })
    }
}

impl crate::Store {
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
