//! `Submit`: create the KIE task of a pending generation.
//!
//! createTask has no idempotency key, so a reply lost after KIE accepted the
//! request leaves a task we cannot find again. The handler therefore claims
//! the row and counts the attempt in the database *before* calling, makes
//! one call per job, and leaves every retry to the database's schedule,
//! where the reconciler picks it up in fair order. The worst case is
//! `max_submit_attempts` KIE tasks for one generation, paid by the operator,
//! never by the user twice.
//!
//! KIE takes at most 20 creates per 10 s per account and refuses the rest
//! with 429 without queueing them. Every call first takes a slot from the
//! shared [`kiebot_kie_gate::KieGate`]: a generation the reconciler
//! dispatched in its fair turn takes a free slot; one straight from its
//! confirmation goes only when nobody waits and its user has not created
//! another task in the same window (else it joins the line). With no slot,
//! or at the in-flight cap, the row is parked (its attempt not counted)
//! until a slot frees. A 429 proves no task was made: it is not an
//! attempt, and it pauses every worker's creates until KIE's window passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::Data;
use kiebot_domain::GenerationStatus;
use kiebot_jobs::{Job, Submit};
use kiebot_kie::{KieError, TaskId};
use kiebot_kie_gate::Admission;
use kiebot_store::generations::Generation;
use tracing::{info, warn};

use crate::context::{Ctx, now_ms};
use crate::{JobError, metrics_names};

/// How long a row waits after KIE said it is down for maintenance (455).
const MAINTENANCE_WAIT: Duration = Duration::from_secs(30);

/// Handles one `Submit` job.
#[tracing::instrument(name = "job.submit", skip_all, fields(generation = %job.generation))]
pub async fn handle(job: Submit, ctx: Data<Arc<Ctx>>) -> Result<(), JobError> {
    run(&ctx, job).await
}

/// The handler's body, callable without apalis (tests, the CLI).
pub async fn run(ctx: &Ctx, job: Submit) -> Result<(), JobError> {
    let id = job.generation;
    let now = now_ms();
    let gens = ctx.store.generations();
    let Some(generation) = gens
        .claim_submit(id, now, now + Ctx::ms(ctx.config.lease))
        .await?
    else {
        // Not pending any more, or another worker holds the claim: done.
        return Ok(());
    };
    kiebot_telemetry::link_current_span(generation.traceparent.as_deref());
    if i64::from(generation.submit_attempts) > ctx.config.max_submit_attempts {
        warn!(
            attempts = generation.submit_attempts,
            "giving up on submitting"
        );
        fail(
            ctx,
            id,
            "submit_attempts",
            "KIE did not accept the task after several attempts",
        )
        .await?;
        return Ok(());
    }
    if let Some(why) = ctx.off_sale(&generation.model).await {
        warn!(model = %generation.model, why, "model is off sale; not submitted");
        return fail(
            ctx,
            id,
            "model_off_sale",
            "the model is temporarily unavailable; nothing was charged",
        )
        .await;
    }
    let model = ctx.catalog.get(generation.model.as_str());
    let deadline_ms = model.map_or(30 * 60 * 1000, |m| i64::from(m.deadline_secs) * 1000);

    if generation.price.is_positive() && !ctx.kie.generates() {
        // A placeholder result must not be paid for: the hold is released.
        return fail(
            ctx,
            id,
            "dry_run",
            "DRY_RUN is on: nothing was generated and nothing was charged",
        )
        .await;
    }

    let request: serde_json::Value = match serde_json::from_str(&generation.request_json) {
        Ok(v) => v,
        Err(e) => {
            fail(
                ctx,
                id,
                "bad_request",
                &format!("stored request is not JSON: {e}"),
            )
            .await?;
            return Ok(());
        }
    };
    if ctx.kie.paced()
        && let Some(wait) = slot(ctx, &generation, now).await?
    {
        metrics::counter!(metrics_names::KIE_CREATES_WAITED).increment(1);
        tracing::debug!(wait_ms = Ctx::ms(wait), "no KIE create slot; in line");
        // Due at once: the dispatcher hands out slots only as they free, in
        // the line's fair order, which must rank this row with every other
        // waiting one. Due later, it would be missing from the ranking when
        // a slot frees early, and rows parked for shorter waits (a user's
        // second create) would take the slot ahead of it.
        gens.park_submit(id, now_ms()).await?;
        return Ok(());
    }
    let callback = ctx
        .config
        .callback_url
        .as_ref()
        .map(crate::CallbackUrl::expose);
    let family = ctx.family_of(&generation.model, &request);
    let started = Instant::now();
    let result = ctx.kie.create_task(family, &request, callback).await;
    let seconds = started.elapsed().as_secs_f64();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    metrics_names::kie_call("createTask", outcome, seconds);
    match result {
        Ok(task) => accepted(ctx, &generation, &task, deadline_ms).await,
        Err(e) if e.is_rate_limited() => {
            // KIE's window is full whatever our count says (another tool on
            // the account, a skewed clock): everyone waits it out.
            let window = ctx.gate.config().counted_window();
            if let Err(gate) = ctx.gate.pause(window).await {
                warn!(error = %gate, "could not pause the create gate");
            }
            metrics::counter!(metrics_names::KIE_RATE_LIMITED, "endpoint" => "createTask")
                .increment(1);
            info!(
                wait_ms = Ctx::ms(window),
                "KIE's create window is full; in line again"
            );
            gens.park_submit(id, now_ms() + Ctx::ms(window)).await?;
            Ok(())
        }
        Err(e @ KieError::Unavailable(_)) => {
            info!(error = %e, "KIE is down for maintenance; in line again");
            gens.park_submit(id, now_ms() + Ctx::ms(MAINTENANCE_WAIT))
                .await?;
            Ok(())
        }
        Err(e) if e.is_retryable() => {
            // A server error, a timeout or a broken connection: the task may
            // exist, so this attempt stays counted (max_submit_attempts bounds
            // the duplicates); the next one comes after a growing wait.
            let retry_at = now_ms()
                + Ctx::ms(
                    ctx.config
                        .submit_backoff(i64::from(generation.submit_attempts)),
                );
            info!(error = %e, retry_at, "createTask failed, will retry");
            gens.retry_submit_at(id, retry_at).await?;
            Ok(())
        }
        Err(e) => {
            if e.needs_operator() {
                // Every task fails until the operator acts (key, credits,
                // sub-key limit): say so loudly, once per task.
                tracing::error!(error = %e, code = e.code(), "KIE refused the task: the operator must act");
                metrics::counter!(metrics_names::KIE_OPERATOR_ERRORS, "code" => error_code(&e))
                    .increment(1);
            } else {
                warn!(error = %e, "KIE refused the task");
            }
            fail(ctx, id, &error_code(&e), &e.to_string()).await
        }
    }
}

/// Takes a create slot for the generation, or says how long it must wait:
/// at the in-flight cap, while the line holds fresh creates back, or while
/// KIE's window is full. A row the reconciler dispatched in its fair turn
/// (recently) skips the line but not the window.
async fn slot(ctx: &Ctx, g: &Generation, now: i64) -> Result<Option<Duration>, JobError> {
    let cap = ctx.config.max_in_flight;
    if cap > 0 {
        let in_flight = ctx.store.generations().count_in_flight(cap).await?;
        if in_flight >= u64::from(cap) {
            let wait = Duration::from_secs(1);
            let _ = ctx.gate.mark_line(wait * 2).await;
            return Ok(Some(wait));
        }
    }
    let dispatched = g
        .admitted_at
        .is_some_and(|at| now - at < Ctx::ms(ctx.config.lease));
    // A user's second create in one window waits its fair turn: five
    // confirmations at once must not take five of twenty slots from everyone
    // else.
    if !dispatched && !ctx.gate.config().is_unlimited() {
        let window = ctx.gate.config().counted_window();
        let since = now - Ctx::ms(window);
        if ctx
            .store
            .generations()
            .user_created_since(g.user, g.id, since, now)
            .await?
        {
            return Ok(Some(ctx.config.reconcile_interval));
        }
    }
    let answer = if dispatched {
        ctx.gate.take_creates(1).await.map(|g| {
            if g.granted == 1 {
                Admission::Go
            } else {
                Admission::Wait(g.next_in)
            }
        })
    } else {
        ctx.gate.admit_fresh().await
    };
    match answer {
        Ok(Admission::Go) => Ok(None),
        Ok(Admission::Wait(wait)) => {
            // Whoever comes fresh now queues behind this one.
            let _ = ctx
                .gate
                .mark_line(wait + ctx.config.reconcile_interval * 2)
                .await;
            Ok(Some(wait.max(Duration::from_millis(100))))
        }
        Err(e) => {
            warn!(error = %e, "the create gate cannot be reached; waiting");
            Ok(Some(Duration::from_secs(1)))
        }
    }
}

async fn accepted(
    ctx: &Ctx,
    g: &Generation,
    task: &TaskId,
    deadline_ms: i64,
) -> Result<(), JobError> {
    let now = now_ms();
    // With no wait configured (benchmarks, fast fakes) the first poll goes
    // straight to the queue instead of waiting for a reconciler tick; the
    // row is then due only when that job has had a lease to run.
    // KIE that answers at once (a dry run) is asked at once, too.
    let poll_now = ctx.config.poll_first.is_zero() || !ctx.kie.paced();
    let first_poll = if poll_now {
        now + Ctx::ms(ctx.config.lease)
    } else {
        let estimate = ctx.run_estimate(&g.model).await;
        now + Ctx::ms(ctx.config.plan().next(&estimate, Duration::ZERO))
    };
    let moved = ctx
        .store
        .generations()
        .mark_submitted(g.id, task.as_str(), first_poll, now + deadline_ms)
        .await?;
    if moved {
        metrics_names::generation_state(GenerationStatus::Submitted.as_str());
        info!(task_id = %task, "submitted");
        if poll_now {
            ctx.enqueue(Job::Poll(g.id)).await?;
        }
    }
    Ok(())
}

/// Ends the generation as failed (the hold is released in the same
/// transaction) and tells the user.
pub(crate) async fn fail(
    ctx: &Ctx,
    id: kiebot_domain::GenerationId,
    code: &str,
    reason: &str,
) -> Result<(), JobError> {
    let outcome = kiebot_domain::TaskOutcome::Failure {
        code: code.to_owned(),
        reason: reason.to_owned(),
    };
    crate::finalize::conclude(ctx, id, outcome).await
}

fn error_code(e: &KieError) -> String {
    e.code()
        .map_or_else(|| "bad_response".to_owned(), |c| c.to_string())
}
