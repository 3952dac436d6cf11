//! `Poll`: ask KIE once where a submitted task is.
//!
//! Polls are scheduled in the database (`next_poll_at`), never as delayed
//! queue entries: the reconciler enqueues the due ones in bounded batches, so
//! 100,000 generations in flight cost 100,000 rows, not 100,000 timers in
//! Redis. A poll that finds the task still running only moves the row's next
//! poll time, planned around the model's likely finish ([`crate::plan`]); one
//! that finds an outcome keeps KIE's own run time and cost, and runs the
//! finalizer in the same job (see [`finish`] for why, and for what happens
//! when that fails).
//!
//! Every status request takes a token from the shared poll budget first
//! (KIE answers at most 10 per second per key): a poll that finds none waits
//! a moment, or is put back in the database for the next tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::Data;
use kiebot_domain::{Lifecycle, TaskOutcome};
use kiebot_jobs::{Job, Poll};
use kiebot_kie::{KieError, TaskId, TaskState};
use kiebot_kie_gate::Admission;
use kiebot_store::generations::Generation;
use tracing::{info, warn};

use crate::context::{Ctx, now_ms};
use crate::{JobError, metrics_names};

/// Handles one `Poll` job.
#[tracing::instrument(name = "job.poll", skip_all, fields(generation = %job.generation))]
pub async fn handle(job: Poll, ctx: Data<Arc<Ctx>>) -> Result<(), JobError> {
    run(&ctx, job).await
}

/// The handler's body.
pub async fn run(ctx: &Ctx, job: Poll) -> Result<(), JobError> {
    let id = job.generation;
    let gens = ctx.store.generations();
    let Some(g) = gens.get(id).await? else {
        warn!("generation is gone; nothing to poll");
        return Ok(());
    };
    kiebot_telemetry::link_current_span(g.traceparent.as_deref());
    let task_id = match &g.lifecycle {
        Lifecycle::Running {
            task,
            outcome: None,
            ..
        } => task.as_str(),
        Lifecycle::Running {
            outcome: Some(_), ..
        } => {
            // Waiting for Finalize: make sure it is queued.
            ctx.queues.push(Job::Finalize(id)).await?;
            return Ok(());
        }
        // Not submitted yet, or finalized already.
        Lifecycle::Pending { .. } | Lifecycle::Finished { .. } => return Ok(()),
    };
    let Some(task) = TaskId::parse(task_id) else {
        let o = TaskOutcome::Failure {
            code: "bad_task_id".into(),
            reason: "stored task id is invalid".into(),
        };
        return finish(ctx, &g, o).await;
    };
    if ctx.kie.paced()
        && let Some(wait) = poll_token(ctx).await
    {
        metrics::counter!(metrics_names::KIE_POLLS_WAITED).increment(1);
        gens.schedule_poll(id, now_ms() + Ctx::ms(wait)).await?;
        return Ok(());
    }
    let request = serde_json::from_str(&g.request_json).unwrap_or_default();
    let family = ctx.family_of(&g.model, &request);
    let started = Instant::now();
    let reply = ctx.kie.record_info(family, &task).await;
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(record) = &reply
        && record.state.is_final()
    {
        // KIE's own run time; without one (Veo, Suno), ours from submission.
        let run_ms = record
            .run_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
            .or_else(|| g.submitted_at.map(|at| now_ms() - at));
        let credits = record.credits_consumed.map(|c| c.milli());
        if let Err(e) = gens.record_kie_facts(id, run_ms, credits).await {
            warn!(error = %e, "KIE's run time and cost not kept");
        }
    }
    let still_running = matches!(
        &reply,
        Ok(r) if matches!(r.state, TaskState::Waiting | TaskState::Queuing | TaskState::Generating)
    );
    let outcome = match reply {
        Ok(record) => {
            metrics_names::kie_call("recordInfo", "ok", seconds);
            match record.state {
                TaskState::Waiting | TaskState::Queuing | TaskState::Generating => None,
                TaskState::Success(result) if result.is_empty() => Some(TaskOutcome::Failure {
                    code: "empty_result".into(),
                    reason: "KIE reported success without a result".into(),
                }),
                TaskState::Success(result) => Some(TaskOutcome::Success {
                    result: result_json(&result),
                }),
                TaskState::Fail { code, message } => Some(TaskOutcome::Failure {
                    code: if code.is_empty() { "fail".into() } else { code },
                    reason: if message.is_empty() {
                        "generation failed".into()
                    } else {
                        message
                    },
                }),
            }
        }
        Err(e) => {
            metrics_names::kie_call("recordInfo", e.outcome(), seconds);
            if e.is_rate_limited() {
                metrics::counter!(metrics_names::KIE_RATE_LIMITED, "endpoint" => "recordInfo")
                    .increment(1);
            }
            if e.is_retryable() {
                info!(error = %e, "recordInfo failed; polling again later");
                None
            } else {
                warn!(error = %e, "recordInfo refused; failing the generation");
                Some(TaskOutcome::Failure {
                    code: error_code(&e),
                    reason: e.to_string(),
                })
            }
        }
    };
    let now = now_ms();
    let deadline = g.deadline_at.unwrap_or(i64::MAX);
    let outcome = match outcome {
        // KIE answered and the task is still running at its deadline.
        None if still_running && now >= deadline => Some(TaskOutcome::Failure {
            code: DEADLINE_CODE.into(),
            reason: "no result before the model's deadline".into(),
        }),
        other => other,
    };
    match outcome {
        None => {
            let elapsed = g.submitted_at.map_or(Duration::ZERO, |at| {
                Duration::from_millis(u64::try_from(now - at).unwrap_or(0))
            });
            let estimate = ctx.run_estimate(&g.model).await;
            let next = now + Ctx::ms(ctx.config.plan().next(&estimate, elapsed));
            // The last poll falls on the deadline itself, so a task that
            // finishes just in time is delivered, not expired.
            let at = if now < deadline {
                next.min(deadline)
            } else {
                next
            };
            gens.schedule_poll(id, at).await?;
        }
        Some(o) => finish(ctx, &g, o).await?,
    }
    Ok(())
}

/// Takes a token from the poll budget; `Some(wait)` when there is none soon
/// enough to wait for here.
async fn poll_token(ctx: &Ctx) -> Option<Duration> {
    // Waiting up to this long inside the job beats a round trip through the
    // database and the queue.
    const WAIT_HERE: Duration = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    loop {
        match ctx.gate.take_poll().await {
            Ok(Admission::Go) => return None,
            Ok(Admission::Wait(d)) if waited + d <= WAIT_HERE => {
                // A little jitter, so waiting jobs do not all ask at once.
                let d = d + Duration::from_millis(rand::random_range(0..20));
                tokio::time::sleep(d).await;
                waited += d;
            }
            Ok(Admission::Wait(d)) => return Some(d),
            Err(e) => {
                warn!(error = %e, "the poll budget cannot be reached; polling later");
                return Some(Duration::from_secs(1));
            }
        }
    }
}

/// Runs the finalizer for the outcome this poll has just seen, in this job:
/// going through the queue would add a push, a fetch and an acknowledgement
/// per generation. Nothing is lost if it fails: the outcome is then recorded
/// for the reconciler's `Finalize` job (so KIE is not asked again), and if
/// even that write fails, the row's poll falls due again when the
/// reconciler's lease on it runs out, and KIE gives the same answer.
async fn finish(ctx: &Ctx, g: &Generation, outcome: TaskOutcome) -> Result<(), JobError> {
    use tracing::Instrument as _;
    let concluded = crate::finalize::conclude(ctx, g.id, outcome.clone())
        .instrument(tracing::info_span!("finalize"))
        .await;
    if let Err(e) = &concluded {
        // A no-op once the row has ended (the failure came after the money
        // moved, from the delivery): the delivery retry covers that part.
        match ctx
            .store
            .generations()
            .record_outcome(g.id, &outcome, requeue_at(ctx))
            .await
        {
            Ok(_) => warn!(error = %e, "finalize failed; outcome kept for the Finalize job"),
            Err(e2) => {
                warn!(error = %e, record_error = %e2, "finalize failed; the poll will repeat")
            }
        }
    }
    concluded
}

/// The failure code of a task KIE was still running at its deadline; the
/// finalizer ends such a generation as `expired`.
pub const DEADLINE_CODE: &str = "deadline";

/// When the reconciler enqueues `Finalize` for an outcome kept after a
/// failed finalize.
fn requeue_at(ctx: &Ctx) -> i64 {
    now_ms() + Ctx::ms(ctx.config.lease)
}

fn error_code(e: &KieError) -> String {
    e.code()
        .map_or_else(|| e.outcome().to_owned(), |c| c.to_string())
}

/// The stored form of a result: KIE's keys, so the stored JSON reads like
/// KIE's own `resultJson`.
fn result_json(r: &kiebot_kie::TaskResult) -> String {
    let mut obj = r.extra.clone();
    obj.insert("resultUrls".into(), serde_json::json!(r.result_urls));
    if !r.watermark_urls.is_empty() {
        obj.insert(
            "resultWaterMarkUrls".into(),
            serde_json::json!(r.watermark_urls),
        );
    }
    if let Some(t) = &r.text {
        obj.insert("text".into(), serde_json::json!(t));
    }
    if !r.tracks.is_empty() {
        let tracks: Vec<serde_json::Value> = r
            .tracks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "audioUrl": t.audio_url,
                    "imageUrl": t.image_url,
                    "title": t.title,
                    "duration": t.duration_secs,
                })
            })
            .collect();
        obj.insert("tracks".into(), serde_json::Value::Array(tracks));
    }
    serde_json::Value::Object(obj).to_string()
}
