//! `Submit`: create the KIE task of a pending generation.
//!
//! createTask has no idempotency key, so a reply lost after KIE accepted the
//! request leaves a task we cannot find again. The handler therefore claims the
//! row and counts the attempt in the database *before* calling, retries in the
//! handler only on errors that prove no task was made (429, 455, 5xx), and
//! leaves ambiguous failures (timeouts, dropped connections) to a later,
//! bounded attempt. The worst case is `max_submit_attempts` KIE tasks for one
//! generation, paid by the operator, never by the user twice.

use std::sync::Arc;
use std::time::Instant;

use apalis::prelude::Data;
use kiebot_domain::GenerationStatus;
use kiebot_jobs::{Job, Submit};
use kiebot_kie::{KieError, TaskId, retrying_if};
use kiebot_store::pipeline::Outcome;
use tracing::{info, warn};

use crate::context::{Ctx, KieMode, now_ms};
use crate::{JobError, metrics_names};

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
    let model = ctx.catalog.get(generation.model.as_str());
    let deadline_ms = model.map_or(30 * 60 * 1000, |m| i64::from(m.deadline_secs) * 1000);

    let client = match &ctx.kie {
        KieMode::DryRun => {
            // No KIE call: the task id says so, and the poll answers itself.
            let task = format!("dry-run-{id}");
            let next = now + Ctx::ms(ctx.config.lease);
            if gens
                .mark_submitted(id, &task, next, now + deadline_ms)
                .await?
            {
                metrics_names::generation_state(GenerationStatus::Submitted.as_str());
                ctx.enqueue(Job::Poll(id)).await?;
            }
            return Ok(());
        }
        KieMode::Live(client) => client,
    };

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
    let callback = ctx.config.callback_url.as_deref();
    let family = ctx.family_of(&generation.model, &request);
    let started = Instant::now();
    // Retry in the handler only what certainly created nothing; a timeout or a
    // broken connection may have created a task, so it waits for the next
    // (counted) attempt instead.
    let result = retrying_if(
        ctx.config.submit_retry,
        |e: &KieError| !is_ambiguous(e),
        || client.create_task(family, &request, callback),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(task) => {
            metrics_names::kie_call("createTask", "ok", seconds);
            accepted(ctx, id, &task, deadline_ms).await
        }
        Err(e) => {
            metrics_names::kie_call("createTask", e.outcome(), seconds);
            if e.is_retryable() {
                // Leave it pending; the reconciler re-enqueues it when the
                // claim runs out (bounded by max_submit_attempts).
                let retry_at = now_ms()
                    + Ctx::ms(ctx.config.poll_delay(i64::from(generation.submit_attempts)));
                info!(error = %e, retry_at, "createTask failed, will retry");
                gens.retry_submit_at(id, retry_at).await?;
                Ok(())
            } else {
                warn!(error = %e, "KIE refused the task");
                let code = e
                    .code()
                    .map_or_else(|| "bad_response".to_owned(), |c| c.to_string());
                fail(ctx, id, &code, &e.to_string()).await
            }
        }
    }
}

async fn accepted(
    ctx: &Ctx,
    id: kiebot_domain::GenerationId,
    task: &TaskId,
    deadline_ms: i64,
) -> Result<(), JobError> {
    let now = now_ms();
    // With no wait configured (benchmarks, fast fakes) the first poll goes
    // straight to the queue instead of waiting for a reconciler tick; the
    // row is then due only when that job has had a lease to run.
    let poll_now = ctx.config.poll_first.is_zero();
    let first_poll = if poll_now {
        now + Ctx::ms(ctx.config.lease)
    } else {
        now + Ctx::ms(ctx.config.poll_first)
    };
    let moved = ctx
        .store
        .generations()
        .mark_submitted(id, task.as_str(), first_poll, now + deadline_ms)
        .await?;
    if moved {
        metrics_names::generation_state(GenerationStatus::Submitted.as_str());
        info!(task_id = %task, "submitted");
        if poll_now {
            ctx.enqueue(Job::Poll(id)).await?;
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
    let outcome = Outcome::Failure {
        code: code.to_owned(),
        reason: reason.to_owned(),
    };
    crate::finalize::conclude(ctx, id, outcome).await
}

/// A timeout or a broken connection on createTask: the task may exist.
fn is_ambiguous(e: &KieError) -> bool {
    matches!(e, KieError::Timeout | KieError::Network(_))
}
