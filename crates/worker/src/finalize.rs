//! `Finalize`: turn a recorded KIE outcome into money and a terminal state.
//!
//! One transaction moves the row to `succeeded` and captures the hold, or to
//! `failed` and releases it. Running it twice changes nothing the second time
//! (the ledger keys are unique per generation and kind), so apalis's
//! at-least-once delivery cannot charge twice.

use std::sync::Arc;

use apalis::prelude::Data;
use kiebot_domain::GenerationStatus;
use kiebot_jobs::{Finalize, Job};
use kiebot_store::pipeline::Outcome;
use tracing::{info, warn};

use crate::context::Ctx;
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
    match (g.status, g.outcome()) {
        (GenerationStatus::Submitted, Some(Outcome::Success { result })) => {
            if gens.finish_success(id, &result).await? {
                metrics_names::generation_state(GenerationStatus::Succeeded.as_str());
                metrics::counter!(metrics_names::MONEY_CAPTURED)
                    .increment(g.price.minor().max(0) as u64);
                info!(price = %g.price, "succeeded");
            }
            ctx.queues.push(Job::Deliver(id)).await?;
        }
        (GenerationStatus::Submitted, Some(Outcome::Failure { code, reason })) => {
            if gens
                .finish_failure(id, GenerationStatus::Failed, &code, &reason)
                .await?
            {
                metrics_names::generation_state(GenerationStatus::Failed.as_str());
                metrics::counter!(metrics_names::MONEY_RELEASED)
                    .increment(g.price.minor().max(0) as u64);
                info!(code, "failed; hold released");
            }
            ctx.queues.push(Job::Deliver(id)).await?;
        }
        (GenerationStatus::Submitted, None) => {
            // Nothing observed yet: a stray job. The poll schedule goes on.
        }
        // Finalized already (a repeated job): make sure the user hears.
        (s, _)
            if (s.is_terminal() || s == GenerationStatus::Succeeded)
                && g.delivered_at.is_none() =>
        {
            ctx.queues.push(Job::Deliver(id)).await?;
        }
        _ => {}
    }
    Ok(())
}
