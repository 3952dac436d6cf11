//! `Finalize`: turn a recorded KIE outcome into money and a terminal state.
//!
//! One transaction moves the row to `succeeded` and captures the hold, or to
//! `failed` and releases it. Running it twice changes nothing the second time
//! (the ledger keys are unique per generation and kind), so apalis's
//! at-least-once delivery cannot charge twice.
//!
//! The finalizer then tells the user itself (see [`crate::deliver`]) rather
//! than handing over to a `Deliver` job: the delivery claims the row with a
//! lease first, so a crash part-way leaves a row the reconciler re-enqueues as
//! `Deliver` once the lease lapses, and a temporary Telegram failure
//! reschedules it the same way. Only retries and recoveries go through the
//! queue; the common path saves a queue round trip per generation.

use std::sync::Arc;

use apalis::prelude::Data;
use kiebot_domain::GenerationStatus;
use kiebot_jobs::{Deliver, Finalize};
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
    kiebot_telemetry::link_current_span(g.traceparent.as_deref());
    match (g.status, g.outcome()) {
        (GenerationStatus::Submitted, Some(Outcome::Success { result })) => {
            if gens.finish_success(id, &result).await? {
                metrics_names::generation_state(GenerationStatus::Succeeded.as_str());
                metrics::counter!(metrics_names::MONEY_CAPTURED)
                    .increment(g.price.minor().max(0) as u64);
                info!(price = %g.price, "succeeded");
            }
            tell(ctx, id).await?;
        }
        (GenerationStatus::Submitted, Some(Outcome::Failure { code, reason })) => {
            let status = if code == crate::poll::DEADLINE_CODE {
                GenerationStatus::Expired
            } else {
                GenerationStatus::Failed
            };
            if gens.finish_failure(id, status, &code, &reason).await? {
                metrics_names::generation_state(status.as_str());
                metrics::counter!(metrics_names::MONEY_RELEASED)
                    .increment(g.price.minor().max(0) as u64);
                info!(code, "failed; hold released");
            }
            tell(ctx, id).await?;
        }
        (GenerationStatus::Submitted, None) => {
            // Nothing observed yet: a stray job. The poll schedule goes on.
        }
        // Finalized already (a repeated job): make sure the user hears.
        (s, _)
            if (s.is_terminal() || s == GenerationStatus::Succeeded)
                && g.delivered_at.is_none() =>
        {
            tell(ctx, id).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Delivers the finished generation now, in this job.
async fn tell(ctx: &Ctx, id: kiebot_domain::GenerationId) -> Result<(), JobError> {
    use tracing::Instrument as _;
    crate::deliver::run(ctx, Deliver { generation: id })
        .instrument(tracing::info_span!("deliver"))
        .await
}
