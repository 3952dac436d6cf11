//! A generation row: its columns, its decoding (the one place a row becomes
//! a [`Generation`] and its [`Lifecycle`]), and the [`Generations`] handle
//! the other files of the repository hang their methods on.

use kiebot_domain::{
    End, GenerationId, GenerationStatus, Lifecycle, ModelId, Money, Notice, TaskOutcome, UserId,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::sql::{get_count, get_parsed};
use crate::{Result, Store, StoreError};

/// A generation row. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Row id.
    pub id: GenerationId,
    /// Who pays.
    pub user: UserId,
    /// The confirm button's draft id.
    pub draft_key: String,
    /// The KIE model.
    pub model: ModelId,
    /// The wizard's parameters (JSON).
    pub params_json: String,
    /// The exact KIE request body (JSON).
    pub request_json: String,
    /// The price (held, then captured or released).
    pub price: Money,
    /// Where it is in its life.
    pub status: GenerationStatus,
    /// [`status`](Self::status) with what decides the generation's next
    /// job; match on this rather than on the columns below.
    pub lifecycle: Lifecycle,
    /// KIE's task id, once submitted.
    pub kie_task_id: Option<String>,
    /// createTask calls started (recorded before each call).
    pub submit_attempts: u32,
    /// Polls that found the task unfinished.
    pub poll_attempts: u32,
    /// When the next poll is due.
    pub next_poll_at: Option<i64>,
    /// When the generation expires unfinished.
    pub deadline_at: Option<i64>,
    /// The result (JSON: URLs or text).
    pub result_json: Option<String>,
    /// Machine-readable failure (KIE code, `deadline`, ...).
    pub fail_code: Option<String>,
    /// Human-readable failure.
    pub fail_reason: Option<String>,
    /// Where to deliver.
    pub chat_id: i64,
    /// The message edited with progress.
    pub progress_message_id: Option<i64>,
    /// Confirmed.
    pub created_at: i64,
    /// Last change of any kind.
    pub updated_at: i64,
    /// Entered `submitted`.
    pub submitted_at: Option<i64>,
    /// Entered a final KIE outcome (succeeded, failed, expired, canceled).
    pub finished_at: Option<i64>,
    /// Entered `delivered`.
    pub delivered_at: Option<i64>,
    /// Delivery attempts that did not finish.
    pub delivery_attempts: u32,
    /// When the next delivery attempt is due (`succeeded` only).
    pub next_delivery_at: Option<i64>,
    /// A handler's lease on the row (see [`super::claims`]).
    pub claimed_until: Option<i64>,
    /// Telegram file ids of the delivered result (JSON list).
    pub file_ids: Option<String>,
    /// Why delivery was given up.
    pub delivery_error: Option<String>,
    /// The day whose free quota of the model it used (`None`: not free).
    pub free_day: Option<String>,
    /// What it took from the user's admin budget.
    pub budget_spent: Option<Money>,
    /// When the free use or the budget was given back (it did not succeed).
    pub funding_returned_at: Option<i64>,
    /// The W3C traceparent of the confirmation that created it.
    pub traceparent: Option<String>,
    /// When the create dispatcher gave it one of KIE's create slots.
    pub admitted_at: Option<i64>,
    /// KIE's own run time of its task, once finished.
    pub kie_run_ms: Option<i64>,
    /// What KIE billed for it, in thousandths of a credit.
    pub kie_credits: Option<i64>,
}

#[macro_export]
#[doc(hidden)]
macro_rules! generation_columns {
    () => {
        "id, user_id, draft_key, model, params, request, price, status, kie_task_id, \
         submit_attempts, poll_attempts, next_poll_at, deadline_at, result, fail_code, \
         fail_reason, chat_id, progress_message_id, created_at, updated_at, submitted_at, \
         finished_at, delivered_at, delivery_attempts, next_delivery_at, claimed_until, \
         file_ids, delivery_error, free_day, budget_spent, funding_returned_at, \
         traceparent, admitted_at, kie_run_ms, kie_credits"
    };
}

/// Generations. See the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct Generations<'a> {
    store: &'a Store,
}

impl<'a> Generations<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Generations { store }
    }

    pub(crate) fn store(&self) -> &'a Store {
        self.store
    }
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
    /// A boolean parameter as the user chose it (`None` when absent).
    pub fn params_flag(&self, name: &str) -> Option<bool> {
        let v: serde_json::Value = serde_json::from_str(&self.params_json).ok()?;
        // Stored parameters are `{"name": {"t": "bool", "v": true}}` or plain values.
        let field = v.get(name)?;
        field.get("v").unwrap_or(field).as_bool()
    }
}

/// The SQLSTATE of the store's own refusals raised inside PostgreSQL.
pub(crate) const REFUSAL_SQLSTATE: &str = "KB001";

/// The generation's status now, or `NotFound`.
pub(crate) async fn status_of(store: &Store, id: GenerationId) -> Result<GenerationStatus> {
    let mut conn = store.pool().acquire().await?;
    status_in(&mut conn, id).await
}

/// The generation's status, or `NotFound`.
pub(crate) async fn status_in(
    conn: &mut AnyConnection,
    id: GenerationId,
) -> Result<GenerationStatus> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM generations WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
    let status = status.ok_or_else(|| StoreError::not_found("generation", id))?;
    status
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("generation {id} has status {status:?}")))
}

/// The row as a [`Generation`], its lifecycle decoded with it.
pub(crate) fn generation_from_row(r: &AnyRow) -> Result<Generation> {
    let model: String = r.try_get("model")?;
    let id = GenerationId(r.try_get("id")?);
    let status: GenerationStatus = get_parsed(r, "status")?;
    Ok(Generation {
        id,
        user: UserId(r.try_get("user_id")?),
        draft_key: r.try_get("draft_key")?,
        model: ModelId::parse(&model).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        params_json: r.try_get("params")?,
        request_json: r.try_get("request")?,
        price: Money::from_minor(r.try_get("price")?),
        status,
        lifecycle: lifecycle_of(r, id, status)?,
        kie_task_id: r.try_get("kie_task_id")?,
        submit_attempts: get_count(r, "submit_attempts")?,
        poll_attempts: get_count(r, "poll_attempts")?,
        next_poll_at: r.try_get("next_poll_at")?,
        deadline_at: r.try_get("deadline_at")?,
        result_json: r.try_get("result")?,
        fail_code: r.try_get("fail_code")?,
        fail_reason: r.try_get("fail_reason")?,
        chat_id: r.try_get("chat_id")?,
        progress_message_id: r.try_get("progress_message_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        submitted_at: r.try_get("submitted_at")?,
        finished_at: r.try_get("finished_at")?,
        delivered_at: r.try_get("delivered_at")?,
        delivery_attempts: get_count(r, "delivery_attempts")?,
        next_delivery_at: r.try_get("next_delivery_at")?,
        claimed_until: r.try_get("claimed_until")?,
        file_ids: r.try_get("file_ids")?,
        delivery_error: r.try_get("delivery_error")?,
        free_day: r.try_get("free_day")?,
        budget_spent: r
            .try_get::<Option<i64>, _>("budget_spent")?
            .map(Money::from_minor),
        funding_returned_at: r.try_get("funding_returned_at")?,
        traceparent: r.try_get("traceparent")?,
        admitted_at: r.try_get("admitted_at")?,
        kie_run_ms: r.try_get("kie_run_ms")?,
        kie_credits: r.try_get("kie_credits")?,
    })
}

/// The statuses of a generation that has ended (the money has moved), as
/// an SQL list.
pub(crate) const FINISHED: &str = "('succeeded', 'failed', 'expired', 'canceled')";

/// The columns [`lifecycle_from_row`] reads: what a batch claim returns
/// when its caller needs each row's next job, not the whole row.
pub(crate) const LIFECYCLE_COLUMNS: &str = "id, status, submit_attempts, next_poll_at, kie_task_id, \
     result, fail_code, fail_reason, delivered_at, next_delivery_at, claimed_until";

/// A row of [`LIFECYCLE_COLUMNS`] (or more) as its id and lifecycle.
pub(crate) fn lifecycle_from_row(r: &AnyRow) -> Result<(GenerationId, Lifecycle)> {
    let id = GenerationId(r.try_get("id")?);
    let status: GenerationStatus = get_parsed(r, "status")?;
    Ok((id, lifecycle_of(r, id, status)?))
}

/// The lifecycle of a row in `status`: the status with the columns that
/// decide what it needs next. A row whose columns contradict its status
/// (submitted without a task) is [`StoreError::Corrupt`].
fn lifecycle_of(r: &AnyRow, id: GenerationId, status: GenerationStatus) -> Result<Lifecycle> {
    let end = match status {
        GenerationStatus::Pending => {
            return Ok(Lifecycle::Pending {
                attempts: get_count(r, "submit_attempts")?,
                retry_at: r.try_get("next_poll_at")?,
            });
        }
        GenerationStatus::Submitted => {
            let task: Option<String> = r.try_get("kie_task_id")?;
            let task = task.ok_or_else(|| {
                StoreError::Corrupt(format!("generation {id} is submitted without a task"))
            })?;
            // A poll records the outcome in the columns the finish keeps.
            let result: Option<String> = r.try_get("result")?;
            let code: Option<String> = r.try_get("fail_code")?;
            let outcome = match (result, code) {
                (Some(result), _) => Some(TaskOutcome::Success { result }),
                (None, Some(code)) => Some(TaskOutcome::Failure {
                    code,
                    reason: r
                        .try_get::<Option<String>, _>("fail_reason")?
                        .unwrap_or_default(),
                }),
                (None, None) => None,
            };
            return Ok(Lifecycle::Running {
                task,
                next_poll: r.try_get("next_poll_at")?,
                outcome,
            });
        }
        GenerationStatus::Succeeded | GenerationStatus::Delivered => End::Succeeded,
        GenerationStatus::Failed => End::Failed,
        GenerationStatus::Expired => End::Expired,
        GenerationStatus::Canceled => End::Canceled,
    };
    let delivered_at: Option<i64> = r.try_get("delivered_at")?;
    let due: Option<i64> = r.try_get("next_delivery_at")?;
    let claimed: Option<i64> = r.try_get("claimed_until")?;
    let notice = match (status, delivered_at, due, claimed) {
        (GenerationStatus::Delivered, ..) | (_, Some(_), ..) => Notice::Told,
        (_, None, None, _) => Notice::GaveUp,
        (_, None, Some(_), Some(until)) => Notice::Claimed { until },
        (_, None, Some(at), None) => Notice::Due { at },
    };
    Ok(Lifecycle::Finished { end, notice })
}
