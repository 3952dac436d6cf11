//! Prometheus metrics.
//!
//! Every crate records through the `metrics` facade; [`install_metrics_recorder`]
//! installs the one global Prometheus recorder of the process, and
//! `GET /metrics` renders it. Gauges that describe the database and the
//! queue (generations by state, queue depths) are set by one background
//! task per process ([`refresh_gauges_every`]), with its own interval and
//! timeout, so they are right even in a process that runs no worker, and a
//! scrape never waits on the database: a slow or unreachable database only
//! leaves the gauges at their last value (and `/readyz` says why).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::OpsState;

/// Gauge: generations in each state, by `status`.
pub const GENERATIONS_BY_STATUS: &str = "kiebot_generations_by_status";
/// Gauge: jobs waiting in a queue, by `queue` (the same name the worker's
/// reconciler sets).
pub const QUEUE_DEPTH: &str = "kiebot_queue_depth";
/// Counter: KIE callbacks, by `outcome` (see [`crate::callback`]).
pub const KIE_CALLBACKS: &str = "kiebot_kie_callbacks_total";
/// Counter: operator actions on the dashboard, by `action` and `outcome`.
pub const DASHBOARD_ACTIONS: &str = "kiebot_dashboard_actions_total";

/// Gauge: unix seconds of the last successful refresh of the database and
/// queue gauges (an alert on its age catches a stuck refresher).
pub const GAUGES_REFRESHED: &str = "kiebot_db_gauges_refreshed_seconds";

/// How often the database and queue gauges are read by default: about a
/// Prometheus scrape interval.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);

/// How long one refresh may take before it is given up (the next one tries
/// again).
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the global `metrics` recorder (Prometheus) and returns its
/// handle. Only the first call installs; later calls return the same handle,
/// so tests and binaries can call it freely.
///
/// # Panics
/// When another crate has already installed a different global recorder:
/// then nothing this process records would reach `/metrics`, which is a
/// wiring bug to fix at start-up.
pub fn install_metrics_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|e| panic!("cannot install the Prometheus recorder: {e}"));
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(
        GENERATIONS_BY_STATUS,
        "Generations in each state, read by the background refresher."
    );
    metrics::describe_gauge!(
        GAUGES_REFRESHED,
        "Unix time of the last successful refresh of the database gauges."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting to be fetched, per queue.");
    metrics::describe_counter!(KIE_CALLBACKS, "KIE callbacks received, by outcome.");
    metrics::describe_counter!(DASHBOARD_ACTIONS, "Operator actions on the dashboard.");
}

/// `GET /metrics`: renders every metric of the process, without touching
/// the database or the queue. 404 when metrics are not configured.
pub async fn render(State(state): State<OpsState>) -> Response {
    let Some(handle) = state.metrics.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Histograms and summaries are drained here; no background task needed.
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()).into_response()
}

/// Refreshes the database and queue gauges every `every` until `shutdown`
/// resolves; each refresh is given up after `timeout`. One per process.
pub async fn refresh_gauges_every(
    store: kiebot_store::Store,
    queues: kiebot_jobs::Queues,
    every: Duration,
    timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticks = tokio::time::interval(every);
    // A slow database must not be asked twice as often once it recovers.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        match tokio::time::timeout(timeout, refresh_gauges(&store, &queues)).await {
            Ok(true) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                metrics::gauge!(GAUGES_REFRESHED).set(now);
            }
            Ok(false) => {}
            Err(_) => tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "refreshing the database gauges timed out"
            ),
        }
    }
}

/// Sets the gauges read from the database and the queue; `true` when both
/// were read. A source that fails leaves its gauges at their last value
/// (and says so in the log); `/readyz` is where an outage shows.
pub async fn refresh_gauges(store: &kiebot_store::Store, queues: &kiebot_jobs::Queues) -> bool {
    let gens = store.generations();
    let (counts, depths) = tokio::join!(gens.count_by_status(), queues.depths());
    let mut ok = true;
    match counts {
        Ok(counts) => {
            for (status, n) in counts {
                metrics::gauge!(GENERATIONS_BY_STATUS, "status" => status.as_str()).set(n as f64);
            }
        }
        Err(e) => {
            ok = false;
            tracing::warn!(error = %e, "cannot count generations for metrics");
        }
    }
    match depths {
        Ok(depths) => {
            for (queue, n) in depths {
                metrics::gauge!(QUEUE_DEPTH, "queue" => queue).set(n as f64);
            }
        }
        Err(e) => {
            ok = false;
            tracing::warn!(error = %e, "cannot read queue depths for metrics");
        }
    }
    ok
}
