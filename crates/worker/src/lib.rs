//! The generation pipeline: job handlers, the reconciler and the worker
//! runtime.
//!
//! # The life of a generation here
//! 1. [`submit`]: a `Submit` job claims the pending row (counting the attempt
//!    *before* calling KIE, since createTask has no idempotency key), takes a
//!    create slot from KIE's shared limits ([`kiebot_kie_gate`]; without one
//!    the row waits in the fair line the [`reconcile`] tick hands slots out
//!    from), creates the KIE task with its family's endpoint and records its
//!    id with the first poll time and the deadline.
//! 2. [`poll`]: the [`reconcile`] tick claims rows whose `next_poll_at` is due
//!    and enqueues `Poll` jobs in bounded batches; a KIE callback only moves
//!    the poll time to now. A poll takes a token of KIE's status budget, asks
//!    KIE once and either schedules the next poll around the model's likely
//!    finish ([`plan`]) or records the outcome (with KIE's run time and cost)
//!    and runs the finalizer.
//! 3. [`finalize`]: one transaction moves the row to `succeeded` and captures
//!    the hold, or to `failed` and releases it; then the user is told.
//! 4. [`deliver`]: sends the result (or the reason it failed) through the Bot
//!    API and marks it delivered.
//!
//! Steps 3 and 4 run inside the job that reached them: nothing outside the
//! database is awaited between them, and each step's committed state is the
//! hand-over. The `Finalize` and `Deliver` jobs are how the reconciler resumes
//! a row whose inline continuation was cut short (a crash, a database error,
//! a Telegram failure waiting for its retry), so a generation costs two queue
//! round trips (Submit, Poll) instead of four.
//!
//! [`catalog_watch`] compares the catalog with KIE's catalogue every
//! `CATALOG_CHECK_HOURS` and takes broken models off sale.
//!
//! The crate knows neither the settings nor the catalog file: the process's
//! composition root (`kiebot_app::assemble`) builds [`Ctx`] from plain
//! values ([`PipelineConfig`], a loaded catalog) and parts. KIE is an
//! `Arc<dyn kiebot_kie::Kie>`, the HTTP client or a dry run, so no handler
//! branches on `DRY_RUN`; where the pipeline must act differently it asks
//! [`kiebot_kie::Kie::paced`] (KIE's limits apply) or
//! [`kiebot_kie::Kie::generates`] (results are real and may be charged).
//!
//! Every step reads the database first and treats "already done" as success,
//! because apalis delivers jobs at least once and the reconciler re-enqueues
//! anything a crash interrupted. The queue carries ids only; the database is
//! the source of truth.

pub mod catalog_watch;
pub mod context;
pub mod deliver;
pub mod finalize;
pub mod housekeeping;
pub mod metrics_names;
pub mod plan;
pub mod poll;
pub mod reconcile;
pub mod runtime;
pub mod submit;

pub use context::{CallbackUrl, Ctx, PipelineConfig, now_ms};
pub use runtime::{WorkerRuntime, worker_name};

/// A handler failed for a reason that retrying may fix (the database or the
/// queue is unreachable). Business failures (KIE refused a task, a user
/// blocked the bot) are not errors: they are recorded and the job succeeds.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database.
    #[error(transparent)]
    Store(#[from] kiebot_store::StoreError),
    /// The queue.
    #[error(transparent)]
    Queue(#[from] kiebot_jobs::QueueError),
}
