//! `Finalize`: turn a recorded KIE outcome into money and a terminal state.
//!
//! One transaction moves the row to `succeeded` and captures the hold, or to
//! `failed` and releases it. Running it twice changes nothing the second time
//! (the ledger keys are unique per generation and kind), so apalis's
//! at-least-once delivery cannot charge twice.
//!
//! The same transaction claims the delivery (a lease on the row), and the
//! finalizer then tells the user itself (see [`crate::deliver`]) rather than
//! handing over to a `Deliver` job: a crash part-way leaves a finished row
//! the reconciler enqueues as `Deliver` once the lease lapses, and a
//! temporary Telegram failure reschedules it the same way. Only retries and
//! recoveries go through the queue.
//!
//! Polls run [`conclude`] inline as soon as KIE reports an outcome; the
//! `Finalize` job is the reconciler's way to finish an outcome a poll
//! recorded when its own finalize failed.

use std::sync::Arc;

use apalis::prelude::Data;
use kiebot_domain::{GenerationStatus, Lifecycle, NextJob, TaskOutcome};
use kiebot_jobs::{Deliver, Finalize};
use kiebot_store::StoreError;
use tracing::{Instrument as _, info, warn};

use crate::context::{Ctx, now_ms};
use crate::{JobError, metrics_names};

/// Handles one `Finalize` job.
#[tracing::instrument(name = "job.finalize", skip_all, fields(generation = %job.generation))]
pub async fn handle(job: Finalize, ctx: Data<Arc<Ctx>>) -> Result<(), JobError> {
    run(&ctx, job).await
}

/// The handler's body.
pub async fn run(ctx: &Ctx, job: Finalize) -> Result<(), JobError> {
    let id = job.generation;
    let gens = ctx.store.generations();
    let Some(g) = gens.get(id).await? else {
        warn!("generation is gone; nothing to finalize");
        return Ok(());
    };
    kiebot_telemetry::link_current_span(g.traceparent.as_deref());
    match g.lifecycle {
        Lifecycle::Running {
            outcome: Some(outcome),
            ..
        } => conclude(ctx, id, outcome).await?,
        // Finalized already (a repeated job): make sure the user hears.
        other if other.next_job() == NextJob::Deliver => tell(ctx, id).await?,
        // Nothing observed yet (a stray job: the poll schedule goes on),
        // or nothing left to do.
        _ => {}
    }
    Ok(())
}

/// Ends an active generation with its outcome: capture on success,
/// release otherwise, in one transaction that also claims the delivery; then
/// tells the user. A task KIE was still running at its deadline
/// ([`crate::poll::DEADLINE_CODE`]) ends as `expired`.
///
/// Repeatable: when the row has ended already (a repeated job, or an
/// operator's cancel racing the poll), nothing moves and the delivery claim
/// decides who tells the user.
pub(crate) async fn conclude(
    ctx: &Ctx,
    id: kiebot_domain::GenerationId,
    outcome: TaskOutcome,
) -> Result<(), JobError> {
    let to = match &outcome {
        TaskOutcome::Success { .. } => GenerationStatus::Succeeded,
        TaskOutcome::Failure { code, .. } if code == crate::poll::DEADLINE_CODE => {
            GenerationStatus::Expired
        }
        TaskOutcome::Failure { .. } => GenerationStatus::Failed,
    };
    let lease_until = now_ms() + Ctx::ms(ctx.config.lease);
    let gens = ctx.store.generations();
    match gens.finish_and_claim(id, to, &outcome, lease_until).await {
        Ok(Some(claim)) => {
            metrics_names::generation_state(to.as_str());
            let price = claim.generation.price.minor().max(0) as u64;
            if to == GenerationStatus::Succeeded {
                metrics::counter!(metrics_names::MONEY_CAPTURED).increment(price);
                info!(price = %claim.generation.price, "succeeded");
            } else {
                metrics::counter!(metrics_names::MONEY_RELEASED).increment(price);
                if let TaskOutcome::Failure { code, .. } = &outcome {
                    info!(code, status = to.as_str(), "ended; hold released");
                }
            }
            crate::deliver::send_claimed(ctx, claim)
                .instrument(tracing::info_span!("deliver"))
                .await
        }
        Ok(None) => tell(ctx, id).await,
        Err(StoreError::IllegalTransition(e)) => {
            // Ended the other way meanwhile (a cancel while KIE finished):
            // that end stands; the user hears about it.
            warn!(error = %e, "outcome arrived after the generation ended");
            tell(ctx, id).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Delivers the finished generation now, in this job, if nobody else has.
async fn tell(ctx: &Ctx, id: kiebot_domain::GenerationId) -> Result<(), JobError> {
    crate::deliver::run(ctx, Deliver { generation: id })
        .instrument(tracing::info_span!("deliver"))
        .await
}
