//! The status changes that move money: entering `succeeded` captures the
//! hold, entering `failed`, `expired` or `canceled` releases it and gives
//! back a free use or an admin budget, each in the transaction that changes
//! the status.

use kiebot_domain::{GenerationId, GenerationStatus, TaskOutcome, TransitionError};
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::row::{
    CLAIM_COLUMNS, DeliveryClaim, Generations, REFUSAL_SQLSTATE, status_in, status_of,
};
use crate::ledger::{self, HoldState};
use crate::sql::placeholders;
use crate::{Engine, Result, Store, StoreError, now_ms};

/// Optional columns a status change also sets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChangeColumns<'s> {
    pub(crate) result_json: Option<&'s str>,
    pub(crate) fail_code: Option<&'s str>,
    pub(crate) fail_reason: Option<&'s str>,
    /// Claim the delivery of the finished row until this time (counted as
    /// a delivery attempt), so the caller can tell the user without a
    /// second write.
    pub(crate) delivery_lease: Option<i64>,
}

impl Generations<'_> {
    /// Ends an active generation as `to` (failed, expired or canceled) with
    /// the reason, releasing the hold and giving back its free use or admin
    /// budget in the same transaction. `Ok(false)`: it had already ended
    /// unsuccessfully (nothing released or given back twice). A generation
    /// that succeeded cannot fail: [`StoreError::IllegalTransition`].
    pub async fn finish_failure(
        &self,
        id: GenerationId,
        to: GenerationStatus,
        code: &str,
        reason: &str,
    ) -> Result<bool> {
        let columns = ChangeColumns {
            fail_code: Some(code),
            fail_reason: Some(reason),
            ..ChangeColumns::default()
        };
        if !to.releases_hold() {
            let from = status_of(self.store(), id).await?;
            return Err(StoreError::IllegalTransition(TransitionError { from, to }));
        }
        Ok(finish(self.store(), id, to, columns).await?.is_some())
    }

    /// Ends an active generation with KIE's outcome: a success captures the
    /// hold (already succeeded or delivered: nothing captured twice), a
    /// failure releases it as [`finish_failure`](Self::finish_failure) does,
    /// each in the transaction that changes the status, and claims its delivery until `lease_until` in the
    /// same write, so the finalizer tells the user without another claim.
    /// `to` is `succeeded` for a success, else `failed` or `expired`.
    /// `None`: it had ended already (nothing moved; the usual delivery claim
    /// decides who tells the user).
    pub async fn finish_and_claim(
        &self,
        id: GenerationId,
        to: GenerationStatus,
        outcome: &TaskOutcome,
        lease_until: i64,
    ) -> Result<Option<DeliveryClaim>> {
        let (ok, bad) = match outcome {
            TaskOutcome::Success { result } => (Some(result.as_str()), None),
            TaskOutcome::Failure { code, reason } => (None, Some((code.as_str(), reason.as_str()))),
        };
        let columns = ChangeColumns {
            result_json: ok,
            fail_code: bad.map(|b| b.0),
            fail_reason: bad.map(|b| b.1),
            delivery_lease: Some(lease_until),
        };
        let legal = match outcome {
            TaskOutcome::Success { .. } => to == GenerationStatus::Succeeded,
            TaskOutcome::Failure { .. } => to.releases_hold(),
        };
        if !legal {
            let from = status_of(self.store(), id).await?;
            return Err(StoreError::IllegalTransition(TransitionError { from, to }));
        }
        finish(self.store(), id, to, columns).await
    }
}

/// Ends an active generation as `to` (`succeeded`, or a state that releases
/// the hold) with its money step, in one transaction: statement by statement
/// on SQLite ([`finish_in`]), one call of `kiebot_finish_generation` on
/// PostgreSQL (see its migration). `None`: it had already ended that way
/// (nothing moves twice); ended the other way: [`StoreError::IllegalTransition`].
async fn finish(
    store: &Store,
    id: GenerationId,
    to: GenerationStatus,
    outcome: ChangeColumns<'_>,
) -> Result<Option<DeliveryClaim>> {
    match store.engine() {
        Engine::Sqlite => write_tx!(store, |conn| finish_in(conn, id, to, outcome).await),
        Engine::Postgres => {
            let moved =
                crate::tx::retrying_pg("finish", || finish_pg(store, id, to, outcome)).await?;
            if moved.is_some() {
                return Ok(moved);
            }
            not_moved(status_of(store, id).await?, to)
        }
    }
}

/// [`finish`] statement by statement, inside the caller's transaction.
async fn finish_in(
    conn: &mut AnyConnection,
    id: GenerationId,
    to: GenerationStatus,
    outcome: ChangeColumns<'_>,
) -> Result<Option<DeliveryClaim>> {
    let sources = GenerationStatus::sources_of(to);
    if let Some(moved) = move_row(conn, id, &sources, to, outcome, now_ms()).await? {
        return Ok(Some(moved));
    }
    not_moved(status_in(conn, id).await?, to)
}

/// What a finish that moved nothing means, given the row's status `from`.
fn not_moved(from: GenerationStatus, to: GenerationStatus) -> Result<Option<DeliveryClaim>> {
    let succeeded = |s: GenerationStatus| {
        matches!(s, GenerationStatus::Succeeded | GenerationStatus::Delivered)
    };
    match from {
        from if succeeded(from) && to == GenerationStatus::Succeeded => Ok(None),
        from if from.releases_hold() && to.releases_hold() => Ok(None),
        from => Err(StoreError::IllegalTransition(TransitionError { from, to })),
    }
}

/// One attempt of [`finish`] on PostgreSQL.
async fn finish_pg(
    store: &Store,
    id: GenerationId,
    to: GenerationStatus,
    outcome: ChangeColumns<'_>,
) -> Result<Option<DeliveryClaim>> {
    // The function's row is named like the table, so the claim's columns
    // (and their subquery on the user's language) read from it unchanged.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {} FROM kiebot_finish_generation($1, $2, $3, $4, $5, $6, $7, $8) AS generations",
            CLAIM_COLUMNS
        )
    });
    let sources: Vec<&str> = GenerationStatus::sources_of(to)
        .into_iter()
        .map(GenerationStatus::as_str)
        .collect();
    let row = sqlx::query(AssertSqlSafe(SQL.as_str()))
        .bind(id.0)
        .bind(to.as_str())
        .bind(sources.join(","))
        .bind(now_ms())
        .bind(outcome.result_json)
        .bind(outcome.fail_code)
        .bind(outcome.fail_reason)
        .bind(outcome.delivery_lease)
        .fetch_optional(store.pool())
        .await
        .map_err(|e| finish_refusal_of_pg(e, id))?;
    row.as_ref().map(DeliveryClaim::from_row).transpose()
}

/// The typed error behind a `kiebot_finish_generation` refusal; any other
/// error as it is.
fn finish_refusal_of_pg(e: sqlx::Error, generation: GenerationId) -> StoreError {
    let sqlx::Error::Database(d) = &e else {
        return StoreError::Db(e);
    };
    if d.code().as_deref() != Some(REFUSAL_SQLSTATE) {
        return StoreError::Db(e);
    }
    let (kind, detail) = d.message().split_once(' ').unwrap_or((d.message(), ""));
    match (kind, detail.parse::<HoldState>()) {
        ("no_hold", _) => StoreError::NoHold(generation),
        ("hold_settled", Ok(state)) => StoreError::HoldAlreadySettled { generation, state },
        _ => StoreError::Corrupt(d.message().to_owned()),
    }
}

/// The conditional status change and its money step. Returns the moved row
/// and its user's language (what a delivery needs); `None` when the row was
/// not in any of `sources` (or does not exist).
async fn move_row(
    conn: &mut AnyConnection,
    id: GenerationId,
    sources: &[GenerationStatus],
    to: GenerationStatus,
    outcome: ChangeColumns<'_>,
    now: i64,
) -> Result<Option<DeliveryClaim>> {
    if sources.is_empty() {
        return Ok(None);
    }
    let stamps = match to {
        GenerationStatus::Pending => "",
        GenerationStatus::Submitted => ", submitted_at = $3",
        GenerationStatus::Succeeded => {
            ", finished_at = $3, next_poll_at = NULL, next_delivery_at = $3"
        }
        GenerationStatus::Delivered => ", delivered_at = $3, next_delivery_at = NULL",
        GenerationStatus::Failed | GenerationStatus::Expired | GenerationStatus::Canceled => {
            ", finished_at = $3, next_poll_at = NULL, next_delivery_at = $3"
        }
    };
    // A delivery claim only makes sense on a row that is now waiting to be
    // told; otherwise every status change clears handler leases.
    let lease = outcome
        .delivery_lease
        .filter(|_| to == GenerationStatus::Succeeded || to.releases_hold());
    // Only numbered placeholders are formatted in; every value is bound.
    let sql = format!(
        "UPDATE generations SET status = $2, updated_at = $3, claimed_until = $7, \
             delivery_attempts = delivery_attempts + $8{stamps}, \
             result = COALESCE($4, result), fail_code = COALESCE($5, fail_code), \
             fail_reason = COALESCE($6, fail_reason) \
         WHERE id = $1 AND status IN ({}) RETURNING {}",
        placeholders(9, sources.len()),
        CLAIM_COLUMNS
    );
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(id.0)
        .bind(to.as_str())
        .bind(now)
        .bind(outcome.result_json)
        .bind(outcome.fail_code)
        .bind(outcome.fail_reason)
        .bind(lease)
        .bind(i64::from(lease.is_some()));
    for s in sources {
        query = query.bind(s.as_str());
    }
    let Some(row) = query.fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let moved = DeliveryClaim::from_row(&row)?;
    let price = moved.generation.price;

    if price.is_positive() {
        if to == GenerationStatus::Succeeded {
            ledger::settle_in(conn, id, HoldState::Captured, now).await?;
        } else if to.releases_hold() {
            ledger::settle_in(conn, id, HoldState::Released, now).await?;
        }
    }
    if to.releases_hold() {
        return_funding_in(conn, id, now).await?;
    }
    Ok(Some(moved))
}

/// Gives back the free use or admin budget a generation took, once: the
/// marker `funding_returned_at` is the deciding write, so a second call (or a
/// generation that took nothing) changes nothing.
async fn return_funding_in(conn: &mut AnyConnection, id: GenerationId, now: i64) -> Result<()> {
    let Some(row) = sqlx::query(
        "UPDATE generations SET funding_returned_at = $2 \
         WHERE id = $1 AND funding_returned_at IS NULL \
             AND (free_day IS NOT NULL OR budget_spent IS NOT NULL) \
         RETURNING user_id, model, free_day, budget_spent",
    )
    .bind(id.0)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    let user: i64 = row.try_get("user_id")?;
    if let Some(day) = row.try_get::<Option<String>, _>("free_day")? {
        let model: String = row.try_get("model")?;
        // The use goes back to the day it was taken from; `used > 0` keeps a
        // counter an operator reset by hand from going negative.
        sqlx::query(
            "UPDATE free_usage SET used = used - 1 \
             WHERE user_id = $1 AND model = $2 AND day = $3 AND used > 0",
        )
        .bind(user)
        .bind(model)
        .bind(day)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(spent) = row.try_get::<Option<i64>, _>("budget_spent")? {
        // A budget the owner removed meanwhile (NULL) stays removed: the
        // admin no longer spends one.
        sqlx::query(
            "UPDATE users SET admin_budget = admin_budget + $2 \
             WHERE id = $1 AND admin_budget IS NOT NULL",
        )
        .bind(user)
        .bind(spent)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
