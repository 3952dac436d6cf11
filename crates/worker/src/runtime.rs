//! The worker runtime: one apalis `Monitor` per process running a worker per
//! queue plus the reconciler, with graceful shutdown.
//!
//! Layers are applied in a deliberate order, outermost first: tracing (a span
//! per job), panic catching (a panicking handler fails its job, never the
//! process), retry with backoff for infrastructure errors (the database or
//! queue briefly unreachable), a timeout, then the concurrency limit and
//! parallel execution. On SIGTERM (or ctrl-c) the monitor stops fetching and
//! waits up to `shutdown_timeout` for in-flight jobs; anything still running
//! then is handed back by the backend's orphan recovery and, failing that, by
//! the reconciler, because every handler is idempotent.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::retry::RetryPolicy;
use apalis::layers::retry::backoff::{ExponentialBackoffMaker, MakeBackoff};
use apalis::prelude::*;
use apalis_core::backend::ext::BackendExt;
use apalis_cron::CronScheduler;
use kiebot_jobs::Queues;
use tracing::info;

use crate::context::Ctx;
use crate::{deliver, finalize, poll, reconcile, submit};

/// A unique, readable worker name: host, process id and role. apalis tracks
/// workers by name, so two processes must never share one.
pub fn worker_name(role: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}-{role}", std::process::id())
}

/// Which parts of the pipeline a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Submit, poll, finalize and deliver workers.
    pub jobs: bool,
    /// The reconciler tick.
    pub reconciler: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            jobs: true,
            reconciler: true,
        }
    }
}

/// The running pipeline of one process.
pub struct WorkerRuntime {
    ctx: Arc<Ctx>,
    concurrency: usize,
    roles: Roles,
    shutdown_timeout: Duration,
}

/// How often an embedded worker looks for new jobs in SQLite by itself. A
/// push from this process wakes it at once (see [`WakeOrEvery`]); this only
/// bounds how late it sees a job another process wrote into the file.
const SQLITE_POLL: Duration = Duration::from_secs(1);

/// How soon a Redis worker whose last fetch found nothing looks again: the
/// longest a job pushed just after an empty fetch waits, at the cost of at
/// most 20 fetches per second per idle queue.
const REDIS_REPOLL: Duration = Duration::from_millis(50);

/// Per-job time limit: longer than any KIE or Telegram call with its
/// retries, shorter than the claim lease.
const JOB_TIMEOUT: Duration = Duration::from_secs(50);

macro_rules! register {
    ($monitor:expr, $role:expr, $backend:expr, $handler:path, $ctx:expr, $conc:expr) => {{
        let backend = $backend.clone();
        let ctx = $ctx.clone();
        let name = worker_name($role);
        let concurrency = $conc;
        $monitor.register(move |_restarts| {
            // Outermost first, as apalis checks at start-up: a concurrency
            // slot covers every attempt of a job, each attempt has its own
            // time limit, a panic counts as a failed attempt, and the trace
            // span sees one attempt.
            WorkerBuilder::new(name.clone())
                .backend(backend.clone())
                .concurrency(concurrency)
                .retry(
                    RetryPolicy::retries(5).with_backoff(
                        ExponentialBackoffMaker::new(
                            Duration::from_millis(200),
                            Duration::from_secs(10),
                            1.25,
                            apalis::layers::retry::HasherRng::default(),
                        )
                        .expect("valid backoff bounds")
                        .make_backoff(),
                    ),
                )
                .catch_panic()
                .timeout(JOB_TIMEOUT)
                .enable_tracing()
                .parallelize(tokio::spawn)
                .data(ctx.clone())
                .build($handler)
        })
    }};
}

/// Registers the four job workers over `$storages`, each looking for work
/// at least every `$every`.
macro_rules! register_all {
    ($monitor:expr, $storages:expr, $every:expr, $ctx:expr, $conc:expr) => {{
        let every = $every;
        let submit = $storages.submit.clone().poll_with_interval(every);
        let poll = $storages.poll.clone().poll_with_interval(every);
        let finalize = $storages.finalize.clone().poll_with_interval(every);
        let deliver = $storages.deliver.clone().poll_with_interval(every);
        register_four!($monitor, submit, poll, finalize, deliver, $ctx, $conc)
    }};
}

/// Registers the four job workers over the embedded queue's storages, each
/// woken by a push from this process and otherwise looking every `$every`.
macro_rules! register_all_woken {
    ($monitor:expr, $storages:expr, $wake:expr, $every:expr, $ctx:expr, $conc:expr) => {{
        let (every, wake) = ($every, $wake);
        let submit = $storages
            .submit
            .clone()
            .poll_with_strategy(WakeOrEvery::new(wake.submit.clone(), every));
        let poll = $storages
            .poll
            .clone()
            .poll_with_strategy(WakeOrEvery::new(wake.poll.clone(), every));
        let finalize = $storages
            .finalize
            .clone()
            .poll_with_strategy(WakeOrEvery::new(wake.finalize.clone(), every));
        let deliver = $storages
            .deliver
            .clone()
            .poll_with_strategy(WakeOrEvery::new(wake.deliver.clone(), every));
        register_four!($monitor, submit, poll, finalize, deliver, $ctx, $conc)
    }};
}

macro_rules! register_four {
    ($monitor:expr, $submit:expr, $poll:expr, $finalize:expr, $deliver:expr, $ctx:expr, $conc:expr) => {{
        let (submit, poll, finalize, deliver) = ($submit, $poll, $finalize, $deliver);
        let monitor = register!($monitor, "submit", submit, submit::handle, $ctx, $conc);
        let monitor = register!(monitor, "poll", poll, poll::handle, $ctx, $conc);
        let monitor = register!(monitor, "finalize", finalize, finalize::handle, $ctx, $conc);
        register!(monitor, "deliver", deliver, deliver::handle, $ctx, $conc)
    }};
}

impl WorkerRuntime {
    /// A runtime over a shared context.
    pub fn new(ctx: Arc<Ctx>, concurrency: usize) -> Self {
        WorkerRuntime {
            ctx,
            concurrency: concurrency.max(1),
            roles: Roles::default(),
            shutdown_timeout: Duration::from_secs(60),
        }
    }

    /// Runs only some roles (a fleet can run reconcilers apart from workers).
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    /// How long SIGTERM waits for in-flight jobs.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Runs until `shutdown` resolves, then drains.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MonitorError> {
        let ctx = self.ctx;
        let n = self.concurrency;
        let mut monitor = Monitor::new().shutdown_timeout(self.shutdown_timeout).should_restart(|worker, error| {
            // A worker ends with an error when its backend does (Redis gone,
            // the SQLite file locked for too long). Restart it, backing off
            // so an outage is not a busy loop; the pause runs on a blocking
            // section so other tasks move to another thread meanwhile.
            let restarts = worker.restarts();
            let pause = Duration::from_millis(200u64.saturating_mul(1 << restarts.min(5))).min(Duration::from_secs(5));
            tracing::warn!(worker = %worker.name(), restarts, ?error, pause_ms = pause.as_millis() as u64, "worker failed; restarting");
            tokio::task::block_in_place(|| std::thread::sleep(pause));
            true
        });
        if self.roles.jobs {
            match &ctx.queues {
                Queues::Redis { storages, .. } => {
                    // apalis parks a worker whose fetch came back empty until
                    // its last in-flight job ends (or the next heartbeat), so
                    // a queue that refills meanwhile would wait seconds; the
                    // timer makes it look again soon.
                    monitor = register_all!(monitor, storages, REDIS_REPOLL, ctx, n);
                }
                Queues::Sqlite { storages, wake, .. } => {
                    // SQLite has no push notification across processes: the
                    // pushes of this process (every job of an embedded run)
                    // wake the workers, and a slow look covers the rest.
                    monitor = register_all_woken!(monitor, storages, wake, SQLITE_POLL, ctx, n);
                }
            }
        }
        if self.roles.reconciler {
            // Every second; a tick drains more than one batch when it is
            // behind (see `reconcile::handle`).
            let schedule = cron::Schedule::from_str("* * * * * *").expect("valid cron expression");
            let rctx = ctx.clone();
            let name = worker_name("reconciler");
            monitor = monitor.register(move |_| {
                WorkerBuilder::new(name.clone())
                    .backend(CronScheduler::new(schedule.clone()))
                    .enable_tracing()
                    .catch_panic()
                    .data(rctx.clone())
                    .build(reconcile::handle)
            });
        }
        info!(concurrency = n, ?self.roles, "worker runtime starting");
        monitor
            .run_with_signal(async move {
                shutdown.await;
                info!("shutdown requested; draining in-flight jobs");
                Ok(())
            })
            .await
    }
}

/// When a queue's worker looks for jobs: as soon as `notify` fires (a push
/// from this process), and otherwise every `every`.
///
/// apalis asks the strategy before each fetch and fetches whether or not it
/// fired; what matters is that it wakes the worker, so both sources are
/// polled until pending, which leaves a waker registered with each.
struct WakeOrEvery {
    notify: Arc<tokio::sync::Notify>,
    notified: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
    every: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl WakeOrEvery {
    fn new(notify: Arc<tokio::sync::Notify>, every: Duration) -> Self {
        WakeOrEvery {
            notified: Box::pin(notify.clone().notified_owned()),
            notify,
            every,
            timer: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl Clone for WakeOrEvery {
    fn clone(&self) -> Self {
        WakeOrEvery::new(self.notify.clone(), self.every)
    }
}

impl apalis_core::backend::ext::poll_strategy::PollStrategy for WakeOrEvery {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _: &apalis_core::backend::ext::poll_strategy::PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        let mut fired = false;
        while self.notified.as_mut().poll(cx).is_ready() {
            fired = true;
            self.notified = Box::pin(self.notify.clone().notified_owned());
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            fired = true;
            let next = tokio::time::Instant::now() + self.every;
            self.timer.as_mut().reset(next);
        }
        if fired {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
