//! The reconciler: everything a crash, a lost job or a Redis restart can
//! interrupt is resumed from the database.
//!
//! Each tick, in bounded batches:
//! 1. expires generations past their deadline (the hold is released): a
//!    pending one at once, a submitted one after `expiry_grace` (its last
//!    poll, due at the deadline, normally settles it first);
//! 2. claims rows whose next check is due and enqueues the job their state
//!    needs: `Submit` for pending rows nobody submitted, `Poll` for running
//!    tasks, `Finalize` for recorded outcomes, `Deliver` for undelivered
//!    results and notices.
//!
//!
//! Once a minute it also gives [`crate::housekeeping`] its chance (hourly,
//! one process of the fleet, bounded), after the queue's vacuum.
//!
//! A claim moves the row's next check forward by the lease, in the same
//! statement that selects it, so any number of reconcilers (one per worker
//! process) can tick at once without enqueuing a row twice; a job that is
//! lost is enqueued again when its lease runs out. When the poll queue is
//! already deep, polls are left in the database for a later tick instead of
//! piling up in the queue.

use std::sync::Arc;

use apalis::prelude::Data;
use apalis_cron::Tick;
use kiebot_domain::GenerationStatus;
use kiebot_jobs::Job;
use tracing::{debug, info};

use crate::context::{Ctx, now_ms};
use crate::{JobError, metrics_names};

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Generations expired.
    pub expired: usize,
    /// Submit jobs enqueued.
    pub submits: usize,
    /// Poll jobs enqueued.
    pub polls: usize,
    /// Finalize jobs enqueued.
    pub finalizes: usize,
    /// Deliver jobs enqueued.
    pub deliveries: usize,
    /// Jobs the queue had no room for (their rows are due again at once).
    pub left_out: usize,
    /// When generations were left waiting for a KIE create slot: how long
    /// until the next frees (ms).
    pub line_wait_ms: i64,
}

impl Report {
    /// Jobs enqueued in total.
    pub fn enqueued(&self) -> usize {
        self.submits + self.polls + self.finalizes + self.deliveries
    }
}

/// How long a fresh pending row waits for its Submit job when the queue
/// is empty: long enough for a push that follows its commit to land, and
/// for a fetched job to claim its row. A row enqueued twice in that race
/// costs a no-op job.
const EMPTY_QUEUE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the cron schedule (see `runtime`) starts a tick.
pub const TICK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long one process's turn to vacuum the queue lasts: under a minute,
/// so that some process vacuums every minute or so.
const VACUUM_TURN: std::time::Duration = std::time::Duration::from_secs(50);

/// How long finished jobs' bookkeeping stays in the queue backend.
pub const QUEUE_RETENTION: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The cron handler.
#[tracing::instrument(name = "job.reconcile", skip_all)]
pub async fn handle(_tick: Tick, ctx: Data<Arc<Ctx>>) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let mut report = tick(&ctx).await?;
    // While KIE's create limit holds a line, a slot that frees before the
    // next tick is taken when it frees: waiting for the tick would leave it
    // idle half a second on average, 5 % of KIE's throughput.
    loop {
        let wait =
            std::time::Duration::from_millis(u64::try_from(report.line_wait_ms).unwrap_or(0));
        if wait.is_zero() || started.elapsed() + wait >= TICK_EVERY {
            break;
        }
        tokio::time::sleep(wait).await;
        report.line_wait_ms = dispatch_line(&ctx).await?;
    }
    // Once a minute per process, and in a fleet only by the process whose
    // turn it is (vacuuming twice is harmless, but walks every job again).
    let minute = now_ms() / 60_000;
    if ctx
        .last_vacuum_minute
        .swap(minute, std::sync::atomic::Ordering::Relaxed)
        != minute
    {
        crate::catalog_watch::maybe_start(&ctx).await;
        // Pruning of bookkeeping tables: hourly, one process, bounded.
        crate::housekeeping::maybe_run(&ctx.store).await;
        match ctx.queues.take_vacuum_turn(VACUUM_TURN).await {
            Ok(true) => match ctx.queues.vacuum(QUEUE_RETENTION).await {
                Ok(n) if n > 0 => info!(removed = n, "vacuumed finished jobs from the queue"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "queue vacuum failed"),
            },
            Ok(false) => debug!("another process vacuums the queue this minute"),
            Err(e) => tracing::warn!(error = %e, "queue vacuum skipped"),
        }
    }
    if report.enqueued() > 0 || report.expired > 0 {
        info!(?report, "reconciled");
    } else {
        debug!("nothing to reconcile");
    }
    Ok(())
}

/// One reconciliation pass.
pub async fn tick(ctx: &Ctx) -> Result<Report, JobError> {
    let gens = ctx.store.generations();
    let cfg = &ctx.config;
    let now = now_ms();
    let requeue_at = now + Ctx::ms(cfg.lease);
    let mut report = Report::default();
    let mut jobs: Vec<Job> = Vec::new();

    for id in gens
        .overdue(
            now,
            Ctx::ms(cfg.expiry_grace),
            batch_u32(cfg.reconcile_batch),
        )
        .await?
    {
        let reason = "no result before the model's deadline";
        if gens
            .finish_failure(id, GenerationStatus::Expired, "deadline", reason)
            .await?
        {
            report.expired += 1;
            metrics_names::generation_state(GenerationStatus::Expired.as_str());
            jobs.push(Job::Deliver(id));
        }
    }

    // Claim no more than each queue has room for: a row claimed but not
    // enqueued would wait a whole lease for its next chance.
    let room = QueueRoom::measure(ctx).await;

    // A fresh pending row is left alone for a grace period, as its Submit
    // job may still be waiting in the queue. With the queue empty, a row
    // older than a moment has no job waiting (it was left out of a full
    // queue, or its push failed), so it need not wait out the grace.
    let grace = if room.is_empty(&ctx.queues.names().submit) {
        cfg.pending_grace.min(EMPTY_QUEUE_GRACE)
    } else {
        cfg.pending_grace
    };
    let (submits, next_slot) = dispatch_submits(ctx, now, grace, requeue_at, &room).await?;
    report.submits = submits.len();
    jobs.extend(submits.into_iter().map(Job::Submit));
    if let Some(wait) = next_slot {
        report.line_wait_ms = Ctx::ms(wait);
    }

    // Polls beyond what KIE's status budget allows until the next tick would
    // only wait in their jobs: leave them in the database.
    let budget = poll_budget(ctx).await;
    let poll_room = room
        .limit(&ctx.queues.names().poll, cfg)
        .min(room.limit(&ctx.queues.names().finalize, cfg))
        .min(budget);
    if poll_room > 0 {
        for (id, lifecycle) in gens.claim_due_polls(now, requeue_at, poll_room).await? {
            match Job::next(id, lifecycle.next_job()) {
                Some(job @ Job::Finalize(_)) => {
                    jobs.push(job);
                    report.finalizes += 1;
                }
                Some(job @ Job::Poll(_)) => {
                    jobs.push(job);
                    report.polls += 1;
                }
                // Only submitted rows are claimed here.
                _ => {}
            }
        }
    }

    // A fresh result or failure is being delivered by the job that finished
    // it; only rows left behind for a while are the reconciler's business.
    let due_before = now - Ctx::ms(cfg.pending_grace);
    for id in gens
        .claim_due_deliveries(
            due_before,
            requeue_at,
            room.limit(&ctx.queues.names().deliver, cfg),
        )
        .await?
    {
        jobs.push(Job::Deliver(id));
        report.deliveries += 1;
    }

    if !jobs.is_empty() {
        let left_out = ctx.queues.push_many(&jobs).await?;
        if !left_out.is_empty() {
            // Another reconciler filled the queue between our measure and
            // our push: these rows are due again now, not a lease from now.
            let ids: Vec<_> = left_out.iter().map(|j| j.generation()).collect();
            gens.due_again(&ids, now).await?;
            report.left_out = left_out.len();
        }
        for j in &jobs {
            metrics::counter!(metrics_names::RECONCILED, "queue" => j.kind()).increment(1);
        }
    }
    Ok(report)
}

/// Only the submits of a tick, for a create slot freeing between ticks:
/// dispatches what the slots allow and returns how long the rest of the line
/// waits (0: no line).
async fn dispatch_line(ctx: &Ctx) -> Result<i64, JobError> {
    let now = now_ms();
    let room = QueueRoom::measure(ctx).await;
    let grace = if room.is_empty(&ctx.queues.names().submit) {
        ctx.config.pending_grace.min(EMPTY_QUEUE_GRACE)
    } else {
        ctx.config.pending_grace
    };
    let requeue_at = now + Ctx::ms(ctx.config.lease);
    let (ids, wait) = dispatch_submits(ctx, now, grace, requeue_at, &room).await?;
    if !ids.is_empty() {
        let jobs: Vec<Job> = ids.into_iter().map(Job::Submit).collect();
        let left_out = ctx.queues.push_many(&jobs).await?;
        if !left_out.is_empty() {
            let ids: Vec<_> = left_out.iter().map(|j| j.generation()).collect();
            ctx.store.generations().due_again(&ids, now).await?;
        }
        metrics::counter!(metrics_names::RECONCILED, "queue" => "submit")
            .increment((jobs.len() - left_out.len()) as u64);
    }
    Ok(wait.map_or(0, Ctx::ms))
}

/// How many of KIE's create windows the fair line remembers a user's
/// creates for.
const FAIR_MEMORY_WINDOWS: u32 = 6;

/// Picks the pending generations to submit now, in fair order (each user's
/// oldest first), no more than KIE's free create slots, the in-flight cap and
/// the queue allow. Those the slots do not cover wait in the database until
/// the next frees, and the line is marked so that fresh confirmations queue
/// behind them. Returns the ids to enqueue and, when some wait, how long.
async fn dispatch_submits(
    ctx: &Ctx,
    now: i64,
    grace: std::time::Duration,
    requeue_at: i64,
    room: &QueueRoom,
) -> Result<
    (
        Vec<kiebot_domain::GenerationId>,
        Option<std::time::Duration>,
    ),
    JobError,
> {
    let gens = ctx.store.generations();
    let cfg = &ctx.config;
    let queue_room = room.limit(&ctx.queues.names().submit, cfg);
    let mut want = queue_room;
    let mut next_in = std::time::Duration::from_secs(1);
    if cfg.max_in_flight > 0 {
        let in_flight = gens.count_in_flight(cfg.max_in_flight).await?;
        let free = u64::from(cfg.max_in_flight).saturating_sub(in_flight);
        want = want.min(i64::try_from(free).unwrap_or(i64::MAX));
    }
    if ctx.kie.paced() {
        match ctx.gate.creates_available().await {
            Ok(grant) => {
                want = want.min(i64::from(grant.granted));
                if grant.granted == 0 {
                    next_in = grant.next_in.max(std::time::Duration::from_millis(100));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the create gate cannot be reached; no submits this tick");
                want = 0;
            }
        }
    }
    // KIE's limits (not the queue's room) hold generations back: only then
    // do they form a line that fresh confirmations must queue behind.
    let kie_bound = want < queue_room;
    let ids = if want > 0 {
        // Whom the line has served lately: several windows back, so a user
        // whose earlier rows were sent stays behind newcomers while the line
        // lasts, not only within the window that sent them.
        let memory = ctx.gate.config().counted_window() * FAIR_MEMORY_WINDOWS;
        let fair_since = now - Ctx::ms(memory.max(std::time::Duration::from_secs(60)));
        gens.claim_due_submits(now, Ctx::ms(grace), requeue_at, want, fair_since)
            .await?
    } else {
        Vec::new()
    };
    // Whether anyone is left waiting: due rows the slots did not cover.
    let waiting = kie_bound && gens.count_due_submits(now, Ctx::ms(grace), 1).await? > 0;
    metrics::gauge!(metrics_names::KIE_CREATE_LINE).set(if waiting { 1.0 } else { 0.0 });
    if waiting {
        let _ = ctx
            .gate
            .mark_line(next_in + cfg.reconcile_interval * 2)
            .await;
        Ok((ids, Some(next_in)))
    } else {
        Ok((ids, None))
    }
}

/// Status polls the budget allows until the next tick (the reconciler's
/// interval at its rate, plus the burst).
async fn poll_budget(ctx: &Ctx) -> i64 {
    if !ctx.kie.paced() {
        return i64::MAX;
    }
    let gate = ctx.gate.config();
    let per_tick = f64::from(gate.polls_per_second) * ctx.config.reconcile_interval.as_secs_f64();
    match ctx.gate.polls_available().await {
        Ok(now) => i64::from(now) + per_tick.ceil() as i64,
        Err(_) => 0,
    }
}

fn batch_u32(n: i64) -> u32 {
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// Waiting jobs per queue, measured once per tick.
struct QueueRoom(Vec<(String, u64)>);

impl QueueRoom {
    /// An unreachable queue counts as empty, so that the push itself reports
    /// the problem.
    async fn measure(ctx: &Ctx) -> QueueRoom {
        let depths = ctx.queues.depths().await.unwrap_or_default();
        for (name, n) in &depths {
            metrics::gauge!(metrics_names::QUEUE_DEPTH, "queue" => name.clone()).set(*n as f64);
        }
        QueueRoom(depths)
    }

    /// Whether the queue was measured and holds no waiting job.
    fn is_empty(&self, queue: &str) -> bool {
        self.0.iter().any(|(n, d)| n == queue && *d == 0)
    }

    /// Rows of this queue's kind to claim now: the batch, bounded by the room
    /// under the high-water mark.
    fn limit(&self, queue: &str, cfg: &crate::context::PipelineConfig) -> i64 {
        let depth = self
            .0
            .iter()
            .find(|(n, _)| n == queue)
            .map_or(0, |(_, d)| *d);
        let room = i64::try_from(cfg.queue_high_water.saturating_sub(depth)).unwrap_or(0);
        cfg.reconcile_batch.min(room)
    }
}
