//! Generations: the rows behind the lifecycle in [`GenerationStatus`].
//!
//! Every status change is a conditional `UPDATE .. WHERE status IN (legal
//! sources)`, so two workers racing on one generation cannot both move it,
//! and a change that moves money does it in the same transaction through the
//! ledger: entering `succeeded` captures the hold, entering `failed`,
//! `expired` or `canceled` releases it. There is no way to change the status
//! without its money step.
//!
//! The `finish_*`, `mark_*` and `schedule_*` calls are safe to repeat: "it is
//! already done" is success (`Ok(false)`), never a second charge.
//!
//! Not every generation is paid from the wallet ([`Funding`]): a daily free
//! use or a limited admin's budget is taken in the confirm transaction and
//! recorded on the row (`free_day`, `budget_spent`), and given back in the
//! transaction that ends the generation as failed, expired or canceled,
//! exactly once (`funding_returned_at`). A use or a budget is thus spent only
//! on a generation that succeeded.

use kiebot_domain::{GenerationId, GenerationStatus, ModelId, Money, TransitionError, UserId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::ledger::{self, HoldState};
use crate::sql::{get_count, get_parsed, placeholders};
use crate::{Engine, Result, Store, StoreError, now_ms};

/// What the bot knows when the user confirms a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGeneration {
    /// Who pays.
    pub user: UserId,
    /// The confirm button's draft id: a second tap finds the first generation.
    pub draft_key: String,
    /// The KIE model.
    pub model: ModelId,
    /// The wizard's parameters (JSON), for history and "repeat".
    pub params_json: String,
    /// The exact KIE `createTask` body (JSON).
    pub request_json: String,
    /// The price; zero places no hold.
    pub price: Money,
    /// Where to deliver the result.
    pub chat_id: i64,
    /// The model's deadline, counted from now.
    pub deadline_secs: u32,
    /// The most active (pending or submitted) generations a user may have.
    pub max_active: u32,
    /// The confirmation's W3C traceparent, so the jobs that carry the
    /// generation on link their spans to it (`None` when traces are off).
    pub traceparent: Option<String>,
}

/// Who pays for a generation, besides a wallet hold of its `price`. The bot
/// decides; the store takes it in the confirm transaction, or refuses.
/// Serializable so the bot can keep, with a draft, the funding its confirm
/// screen showed and refuse a confirmation whose funding has since changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Funding {
    /// The user's wallet: `price` is held (nothing when it is zero: the owner,
    /// a dry run).
    #[default]
    Wallet,
    /// One of the day's free uses of the model, if fewer than `limit` were
    /// used ([`StoreError::FreeQuotaUsedUp`] otherwise). The price must be
    /// zero.
    FreeQuota {
        /// `YYYY-MM-DD`, as [`crate::FreeUsage`] counts days.
        day: String,
        /// Free uses a day.
        limit: u32,
    },
    /// `amount` from the user's admin budget, if that much remains
    /// ([`StoreError::BudgetExhausted`] otherwise). The price must be zero:
    /// the budget pays instead of the wallet.
    AdminBudget {
        /// What the generation costs.
        amount: Money,
    },
}

/// The dialogue a confirmation leaves the user in ([`Generations::confirm`]).
#[derive(Debug, Clone, Copy)]
pub struct DialogueAfter<'a> {
    /// The state, a JSON object.
    pub state_json: &'a str,
    /// The field of `state_json` that receives the new generation's id.
    pub id_field: &'a str,
    /// How long the state is valid.
    pub ttl: std::time::Duration,
}

/// The outcome of [`Generations::create_pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// A new pending generation, with its hold placed.
    Created(GenerationId),
    /// The draft was confirmed before; nothing changed.
    AlreadyExists(GenerationId),
}

impl Creation {
    /// The generation, new or old.
    pub fn id(self) -> GenerationId {
        match self {
            Creation::Created(id) | Creation::AlreadyExists(id) => id,
        }
    }
}

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
    /// A handler's lease on the row (see [`crate::pipeline`]).
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

/// Generations. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Generations<'a> {
    store: &'a Store,
}

/// Optional columns a status change also sets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome<'s> {
    pub(crate) result_json: Option<&'s str>,
    pub(crate) fail_code: Option<&'s str>,
    pub(crate) fail_reason: Option<&'s str>,
    /// Claim the delivery of the finished row until this time (counted as
    /// a delivery attempt), so the caller can tell the user without a
    /// second write.
    pub(crate) delivery_lease: Option<i64>,
}

impl<'a> Generations<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Generations { store }
    }

    pub(crate) fn store(&self) -> &'a Store {
        self.store
    }

    /// Confirms a generation paid from the wallet, in one transaction: the
    /// row (`pending`) keyed by `draft_key`, the checks (user not blocked,
    /// fewer than `max_active` active generations, enough available money)
    /// and the hold. A repeated `draft_key` returns [`Creation::AlreadyExists`]
    /// and changes nothing.
    pub async fn create_pending(&self, new: &NewGeneration) -> Result<Creation> {
        self.create_pending_funded(new, &Funding::Wallet).await
    }

    /// [`create_pending`](Self::create_pending) with the free use or admin
    /// budget of `funding` taken in the same transaction (and only when the
    /// generation is created: a repeated `draft_key` takes nothing).
    pub async fn create_pending_funded(
        &self,
        new: &NewGeneration,
        funding: &Funding,
    ) -> Result<Creation> {
        self.create(new, funding, None).await
    }

    /// [`create_pending_funded`](Self::create_pending_funded) that also
    /// stores the user's dialogue `then` in the same transaction when the
    /// generation is created (a repeated draft key leaves the dialogue as it
    /// is): the bot's "confirmed" state never exists without its generation,
    /// nor the generation without it.
    pub async fn confirm(
        &self,
        new: &NewGeneration,
        funding: &Funding,
        then: &DialogueAfter<'_>,
    ) -> Result<Creation> {
        self.create(new, funding, Some(then)).await
    }

    async fn create(
        &self,
        new: &NewGeneration,
        funding: &Funding,
        then: Option<&DialogueAfter<'_>>,
    ) -> Result<Creation> {
        if new.price < Money::ZERO {
            return Err(StoreError::InvalidAmount {
                amount: new.price,
                why: "a price cannot be negative",
            });
        }
        match funding {
            Funding::Wallet => {}
            Funding::FreeQuota { .. } | Funding::AdminBudget { .. } if new.price.is_positive() => {
                // Both would pay: the wallet must not be held as well.
                return Err(StoreError::InvalidAmount {
                    amount: new.price,
                    why: "a generation paid by a free use or a budget has no wallet price",
                });
            }
            Funding::AdminBudget { amount } if !amount.is_positive() => {
                return Err(StoreError::InvalidAmount {
                    amount: *amount,
                    why: "a budget pays a positive amount",
                });
            }
            Funding::FreeQuota { .. } | Funding::AdminBudget { .. } => {}
        }
        match self.store.engine() {
            Engine::Postgres => {
                let c = crate::confirm_batch::Confirmation {
                    new: new.clone(),
                    funding: funding.clone(),
                    then: then.map(|t| crate::confirm_batch::OwnedDialogueAfter {
                        state_json: t.state_json.to_owned(),
                        id_field: t.id_field.to_owned(),
                        ttl: t.ttl,
                    }),
                };
                self.store.confirms.confirm(self.store.pool(), c).await
            }
            Engine::Sqlite => {
                write_tx!(self.store, |conn| create_in(
                    conn,
                    new,
                    funding,
                    then,
                    now_ms()
                )
                .await)
            }
        }
    }

    /// The generation.
    pub async fn get(&self, id: GenerationId) -> Result<Option<Generation>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            generation_columns!(),
            " FROM generations WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.store.pool())
        .await?;
        row.as_ref().map(generation_from_row).transpose()
    }

    /// The generation KIE knows as `task_id`.
    pub async fn by_task_id(&self, task_id: &str) -> Result<Option<Generation>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            generation_columns!(),
            " FROM generations WHERE kie_task_id = $1"
        ))
        .bind(task_id)
        .fetch_optional(self.store.pool())
        .await?;
        row.as_ref().map(generation_from_row).transpose()
    }

    /// Moves the generation to `to` if it is in one of `from` (an empty `from`
    /// means every state `to` can be reached from), with the money step of
    /// `to` in the same transaction. `Ok(false)`: it was in none of them.
    /// A `from` that cannot become `to` is [`StoreError::IllegalTransition`].
    pub async fn transition(
        &self,
        id: GenerationId,
        from: &[GenerationStatus],
        to: GenerationStatus,
    ) -> Result<bool> {
        for &f in from {
            f.transition(to)?;
        }
        let sources = if from.is_empty() {
            GenerationStatus::sources_of(to)
        } else {
            from.to_vec()
        };
        write_tx!(self.store, |conn| {
            let moved = move_row(conn, id, &sources, to, Outcome::default(), now_ms())
                .await?
                .is_some();
            if !moved {
                status_in(conn, id).await?;
            }
            Ok::<_, StoreError>(moved)
        })
    }

    /// Counts a createTask attempt, before the call (KIE has no idempotency
    /// key, so the count bounds duplicate tasks). `None`: the generation is no
    /// longer pending, do not submit.
    pub async fn record_submit_attempt(&self, id: GenerationId) -> Result<Option<u32>> {
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE generations SET submit_attempts = submit_attempts + 1, updated_at = $2 \
             WHERE id = $1 AND status = 'pending' RETURNING submit_attempts",
        )
        .bind(id.0)
        .bind(now_ms())
        .fetch_optional(self.store.pool())
        .await?;
        match attempts {
            Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            None => {
                self.require(id).await?;
                Ok(None)
            }
        }
    }

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
        .execute(self.store.pool())
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
        .execute(self.store.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            self.require(id).await?;
        }
        Ok(changed > 0)
    }

    /// Submitted generations whose poll is due at `now`, earliest first.
    pub async fn due_polls(&self, now: i64, limit: u32) -> Result<Vec<GenerationId>> {
        self.ids(
            "SELECT id FROM generations \
             WHERE status = 'submitted' AND next_poll_at <= $1 \
             ORDER BY next_poll_at, id LIMIT $2",
            now,
            limit,
        )
        .await
    }

    /// Pending generations untouched (no submit attempt, no change) since
    /// `ts`: their submit job was probably lost. Oldest first.
    pub async fn pending_older_than(&self, ts: i64, limit: u32) -> Result<Vec<GenerationId>> {
        self.ids(
            "SELECT id FROM generations \
             WHERE status = 'pending' AND updated_at < $1 \
             ORDER BY updated_at, id LIMIT $2",
            ts,
            limit,
        )
        .await
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
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(GenerationId(r.try_get("id")?)))
            .collect()
    }

    /// `submitted -> succeeded` with the result, capturing the hold in the
    /// same transaction. `Ok(false)`: already succeeded or delivered (nothing
    /// captured twice). Any other state is [`StoreError::IllegalTransition`].
    /// The generation becomes due for delivery at once.
    pub async fn finish_success(&self, id: GenerationId, result_json: &str) -> Result<bool> {
        let outcome = Outcome {
            result_json: Some(result_json),
            ..Outcome::default()
        };
        let to = GenerationStatus::Succeeded;
        Ok(finish(self.store, id, to, outcome).await?.is_some())
    }

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
        let outcome = Outcome {
            fail_code: Some(code),
            fail_reason: Some(reason),
            ..Outcome::default()
        };
        if !to.releases_hold() {
            let from = status_of(self.store, id).await?;
            return Err(StoreError::IllegalTransition(TransitionError { from, to }));
        }
        Ok(finish(self.store, id, to, outcome).await?.is_some())
    }

    /// `succeeded -> delivered`. `Ok(false)`: already delivered.
    pub async fn mark_delivered(&self, id: GenerationId) -> Result<bool> {
        write_tx!(self.store, |conn| {
            let to = GenerationStatus::Delivered;
            let sources = [GenerationStatus::Succeeded];
            if move_row(conn, id, &sources, to, Outcome::default(), now_ms())
                .await?
                .is_some()
            {
                return Ok(true);
            }
            match status_in(conn, id).await? {
                GenerationStatus::Delivered => Ok(false),
                from => Err(StoreError::IllegalTransition(TransitionError { from, to })),
            }
        })
    }

    /// Schedules the next delivery attempt of a succeeded generation and
    /// counts the one that failed. `Ok(false)`: it is not awaiting delivery.
    pub async fn schedule_delivery(&self, id: GenerationId, at: i64) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE generations SET next_delivery_at = $2, \
                 delivery_attempts = delivery_attempts + 1, updated_at = $3 \
             WHERE id = $1 AND status = 'succeeded'",
        )
        .bind(id.0)
        .bind(at)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            self.require(id).await?;
        }
        Ok(changed > 0)
    }

    /// Succeeded generations whose delivery is due at `now`, earliest first.
    /// A fresh success is due at once, so a reconciler should pass `now` minus
    /// a grace period to leave the delivery job in flight alone.
    pub async fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<GenerationId>> {
        self.ids(
            "SELECT id FROM generations \
             WHERE status = 'succeeded' AND delivered_at IS NULL AND next_delivery_at <= $1 \
             ORDER BY next_delivery_at, id LIMIT $2",
            now,
            limit,
        )
        .await
    }

    /// Remembers the message that shows the generation's progress.
    pub async fn set_progress_message(&self, id: GenerationId, message_id: i64) -> Result<()> {
        let changed = sqlx::query(
            "UPDATE generations SET progress_message_id = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id.0)
        .bind(message_id)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::not_found("generation", id));
        }
        Ok(())
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
            generation_columns!(),
            " FROM generations WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(user.0)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(generation_from_row).collect()
    }

    /// How many generations are in each state (every state listed, in
    /// [`GenerationStatus::ALL`] order).
    pub async fn count_by_status(&self) -> Result<Vec<(GenerationStatus, u64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM generations GROUP BY status")
            .fetch_all(self.store.pool())
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

    async fn ids(&self, sql: &'static str, at: i64, limit: u32) -> Result<Vec<GenerationId>> {
        let ids: Vec<i64> = sqlx::query_scalar(sql)
            .bind(at)
            .bind(i64::from(limit))
            .fetch_all(self.store.pool())
            .await?;
        Ok(ids.into_iter().map(GenerationId).collect())
    }

    /// `NotFound` unless the generation exists.
    async fn require(&self, id: GenerationId) -> Result<()> {
        status_of(self.store, id).await.map(|_| ())
    }
}

/// The confirmation on PostgreSQL: `create_in` as one call of the
/// `kiebot_create_generation` function (see its migration), one round trip
/// instead of eight, retried like a transaction when the server reports a
/// deadlock or serialization failure.
pub(crate) async fn create_pg(
    pool: &sqlx::AnyPool,
    new: &NewGeneration,
    funding: &Funding,
    then: Option<&DialogueAfter<'_>>,
) -> Result<Creation> {
    let (free_day, free_limit, budget) = funding_args(funding);
    crate::tx::retrying_pg("confirmation", || async {
        let now = now_ms();
        let expires = then.map(|t| now.saturating_add(crate::sql::millis(t.ttl)));
        let row = bind_new_row(
            sqlx::query(
                "SELECT out_created, out_id FROM kiebot_create_generation(\
                     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            ),
            new,
            now,
        )
        .bind(i64::from(new.max_active))
        .bind(free_day)
        .bind(free_limit)
        .bind(budget)
        .bind(new.traceparent.as_deref())
        .bind(then.map(|t| t.state_json))
        .bind(then.map(|t| t.id_field))
        .bind(expires)
        .fetch_one(pool)
        .await
        .map_err(|e| refusal_of_pg(e, new, funding))?;
        let id = GenerationId(row.try_get("out_id")?);
        Ok(if crate::sql::get_bool(&row, "out_created")? {
            Creation::Created(id)
        } else {
            Creation::AlreadyExists(id)
        })
    })
    .await
}

/// Binds `$1`..`$9` of both confirmation paths: the new row's user, draft
/// key, model, params, request, price, chat, deadline and `now`.
fn bind_new_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    new: &'q NewGeneration,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(new.user.0)
        .bind(new.draft_key.as_str())
        .bind(new.model.as_str())
        .bind(new.params_json.as_str())
        .bind(new.request_json.as_str())
        .bind(new.price.minor())
        .bind(new.chat_id)
        .bind(deadline_at(new, now))
        .bind(now)
}

/// The funding as `kiebot_create_generation`'s `free_day`, `free_limit` and
/// `budget` arguments.
pub(crate) fn funding_args(funding: &Funding) -> (Option<&str>, Option<i64>, Option<i64>) {
    match funding {
        Funding::Wallet => (None, None, None),
        Funding::FreeQuota { day, limit } => (Some(day.as_str()), Some(i64::from(*limit)), None),
        Funding::AdminBudget { amount } => (None, None, Some(amount.minor())),
    }
}

/// When a generation confirmed at `now` is given up on.
pub(crate) fn deadline_at(new: &NewGeneration, now: i64) -> i64 {
    now.saturating_add(i64::from(new.deadline_secs) * 1000)
}

/// The typed error behind a `kiebot_create_generation` refusal (SQLSTATE
/// KB001, message `<kind>[ <number>]`); any other error as it is.
fn refusal_of_pg(e: sqlx::Error, new: &NewGeneration, funding: &Funding) -> StoreError {
    let sqlx::Error::Database(d) = &e else {
        return StoreError::Db(e);
    };
    if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation {
        return StoreError::not_found("user", new.user);
    }
    if d.code().as_deref() != Some(REFUSAL_SQLSTATE) {
        return StoreError::Db(e);
    }
    refusal_of_message(d.message(), new, funding).unwrap_or(StoreError::Db(e))
}

/// The typed error behind a refusal message of `kiebot_create_generation`
/// (`<kind>[ <number>]`); `None` for a message it never gives.
pub(crate) fn refusal_of_message(
    message: &str,
    new: &NewGeneration,
    funding: &Funding,
) -> Option<StoreError> {
    let (kind, number) = message.split_once(' ').unwrap_or((message, ""));
    let number = number.parse::<i64>().ok();
    Some(match kind {
        "key_conflict" => StoreError::KeyConflict {
            key: new.draft_key.clone(),
        },
        "no_user" => StoreError::not_found("user", new.user),
        "blocked" => StoreError::Blocked { user: new.user },
        "too_many_active" => StoreError::TooManyActive {
            limit: new.max_active,
        },
        "free_quota_used_up" => StoreError::FreeQuotaUsedUp {
            limit: match funding {
                Funding::FreeQuota { limit, .. } => *limit,
                Funding::Wallet | Funding::AdminBudget { .. } => 0,
            },
        },
        "budget_exhausted" => StoreError::BudgetExhausted {
            available: number.map(Money::from_minor),
            requested: match funding {
                Funding::AdminBudget { amount } => *amount,
                Funding::Wallet | Funding::FreeQuota { .. } => Money::ZERO,
            },
        },
        "no_wallet" => StoreError::not_found("wallet", new.user),
        "insufficient_funds" => StoreError::InsufficientFunds {
            available: Money::from_minor(number.unwrap_or(0)),
            requested: new.price,
        },
        _ => return None,
    })
}

/// The SQLSTATE of the store's own refusals raised inside PostgreSQL.
const REFUSAL_SQLSTATE: &str = "KB001";

/// The confirmation statement by statement (SQLite, where statements cost no
/// round trip). `kiebot_create_generation` mirrors it on PostgreSQL.
async fn create_in(
    conn: &mut AnyConnection,
    new: &NewGeneration,
    funding: &Funding,
    then: Option<&DialogueAfter<'_>>,
    now: i64,
) -> Result<Creation> {
    let (free_day, budget_spent) = match funding {
        Funding::Wallet => (None, None),
        Funding::FreeQuota { day, .. } => (Some(day.as_str()), None),
        Funding::AdminBudget { amount } => (None, Some(amount.minor())),
    };
    // The deciding write: the draft key is unique, so a second tap (even a
    // concurrent one, which waits for the first to commit) inserts nothing.
    let inserted = bind_new_row(
        sqlx::query(
            "INSERT INTO generations (user_id, draft_key, model, params, request, price, status, \
                 chat_id, deadline_at, created_at, updated_at, \
                 submit_attempts, poll_attempts, delivery_attempts, free_day, budget_spent, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $9, 0, 0, 0, $10, $11, $12) \
             ON CONFLICT (draft_key) DO NOTHING RETURNING id",
        ),
        new,
        now,
    )
    .bind(free_day)
    .bind(budget_spent)
    .bind(new.traceparent.as_deref())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
            StoreError::not_found("user", new.user)
        }
        _ => StoreError::Db(e),
    })?;

    let inserted: Option<i64> = inserted.map(|r| r.try_get("id")).transpose()?;
    let Some(id) = inserted.map(GenerationId) else {
        let row = sqlx::query("SELECT id, user_id FROM generations WHERE draft_key = $1")
            .bind(new.draft_key.as_str())
            .fetch_one(&mut *conn)
            .await?;
        if row.try_get::<i64, _>("user_id")? != new.user.0 {
            return Err(StoreError::KeyConflict {
                key: new.draft_key.clone(),
            });
        }
        return Ok(Creation::AlreadyExists(GenerationId(row.try_get("id")?)));
    };

    // Locks the user's row on Postgres, so that concurrent confirmations of
    // one user count each other's generations.
    let blocked = sqlx::query("UPDATE users SET last_seen_at = $2 WHERE id = $1 RETURNING blocked")
        .bind(new.user.0)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("user", new.user))?;
    if crate::sql::get_bool(&blocked, "blocked")? {
        return Err(StoreError::Blocked { user: new.user });
    }

    let others: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM generations \
         WHERE user_id = $1 AND status IN ('pending', 'submitted') AND id <> $2",
    )
    .bind(new.user.0)
    .bind(id.0)
    .fetch_one(&mut *conn)
    .await?;
    if others >= i64::from(new.max_active) {
        return Err(StoreError::TooManyActive {
            limit: new.max_active,
        });
    }

    match funding {
        Funding::Wallet => {}
        Funding::FreeQuota { day, limit } => {
            if !crate::free_usage::consume_in(conn, new.user, &new.model, day, *limit).await? {
                return Err(StoreError::FreeQuotaUsedUp { limit: *limit });
            }
        }
        Funding::AdminBudget { amount } => {
            // One conditional statement: concurrent confirmations of one
            // admin (already serialised on the user row above) never take
            // the budget below zero.
            let left: Option<i64> = sqlx::query_scalar(
                "UPDATE users SET admin_budget = admin_budget - $2 \
                 WHERE id = $1 AND admin_budget >= $2 RETURNING admin_budget",
            )
            .bind(new.user.0)
            .bind(amount.minor())
            .fetch_optional(&mut *conn)
            .await?;
            if left.is_none() {
                let available: Option<i64> =
                    sqlx::query_scalar("SELECT admin_budget FROM users WHERE id = $1")
                        .bind(new.user.0)
                        .fetch_one(&mut *conn)
                        .await?;
                return Err(StoreError::BudgetExhausted {
                    available: available.map(Money::from_minor),
                    requested: *amount,
                });
            }
        }
    }

    if new.price.is_positive() {
        ledger::hold_in(conn, new.user, id, new.price, now).await?;
    }
    if let Some(then) = then {
        let mut state: serde_json::Value = serde_json::from_str(then.state_json)
            .map_err(|e| StoreError::Corrupt(format!("dialogue is not JSON: {e}")))?;
        let Some(fields) = state.as_object_mut() else {
            return Err(StoreError::Corrupt("dialogue is not a JSON object".into()));
        };
        fields.insert(then.id_field.to_owned(), serde_json::Value::from(id.0));
        crate::dialogues::save_in(conn, new.user, &state.to_string(), now, then.ttl).await?;
    }
    Ok(Creation::Created(id))
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

/// Ends an active generation as `to` (`succeeded`, or a state that releases
/// the hold) with its money step, in one transaction: statement by statement
/// on SQLite ([`finish_in`]), one call of `kiebot_finish_generation` on
/// PostgreSQL (see its migration). `None`: it had already ended that way
/// (nothing moves twice); ended the other way: [`StoreError::IllegalTransition`].
pub(crate) async fn finish(
    store: &Store,
    id: GenerationId,
    to: GenerationStatus,
    outcome: Outcome<'_>,
) -> Result<Option<crate::pipeline::DeliveryClaim>> {
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
pub(crate) async fn finish_in(
    conn: &mut AnyConnection,
    id: GenerationId,
    to: GenerationStatus,
    outcome: Outcome<'_>,
) -> Result<Option<crate::pipeline::DeliveryClaim>> {
    let sources = GenerationStatus::sources_of(to);
    if let Some(moved) = move_row(conn, id, &sources, to, outcome, now_ms()).await? {
        return Ok(Some(moved));
    }
    not_moved(status_in(conn, id).await?, to)
}

/// What a finish that moved nothing means, given the row's status `from`.
fn not_moved(
    from: GenerationStatus,
    to: GenerationStatus,
) -> Result<Option<crate::pipeline::DeliveryClaim>> {
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
    outcome: Outcome<'_>,
) -> Result<Option<crate::pipeline::DeliveryClaim>> {
    // The function's row is named like the table, so the claim's columns
    // (and their subquery on the user's language) read from it unchanged.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {} FROM kiebot_finish_generation($1, $2, $3, $4, $5, $6, $7, $8) AS generations",
            crate::pipeline::CLAIM_COLUMNS
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
    row.as_ref()
        .map(crate::pipeline::DeliveryClaim::from_row)
        .transpose()
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
pub(crate) async fn move_row(
    conn: &mut AnyConnection,
    id: GenerationId,
    sources: &[GenerationStatus],
    to: GenerationStatus,
    outcome: Outcome<'_>,
    now: i64,
) -> Result<Option<crate::pipeline::DeliveryClaim>> {
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
        crate::pipeline::CLAIM_COLUMNS
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
    let moved = crate::pipeline::DeliveryClaim::from_row(&row)?;
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

pub(crate) fn generation_from_row(r: &AnyRow) -> Result<Generation> {
    let model: String = r.try_get("model")?;
    Ok(Generation {
        id: GenerationId(r.try_get("id")?),
        user: UserId(r.try_get("user_id")?),
        draft_key: r.try_get("draft_key")?,
        model: ModelId::parse(&model).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        params_json: r.try_get("params")?,
        request_json: r.try_get("request")?,
        price: Money::from_minor(r.try_get("price")?),
        status: get_parsed(r, "status")?,
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
