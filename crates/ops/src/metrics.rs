//! Prometheus metrics.
//!
//! Every crate records through the `metrics` facade; [`install_metrics_recorder`]
//! installs the one global Prometheus recorder of the process, and
//! `GET /metrics` renders it. Gauges that describe the database and the
//! queue (generations by state, queue depths) are read fresh on each scrape,
//! so they are right even in a process that runs no worker.

use std::sync::OnceLock;

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
        "Generations in each state, read at scrape time."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting to be fetched, per queue.");
    metrics::describe_counter!(KIE_CALLBACKS, "KIE callbacks received, by outcome.");
    metrics::describe_counter!(DASHBOARD_ACTIONS, "Operator actions on the dashboard.");
}

/// `GET /metrics`: refreshes the database and queue gauges, then renders
/// every metric of the process. 404 when metrics are not configured.
pub async fn render(State(state): State<OpsState>) -> Response {
    let Some(handle) = state.metrics.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    refresh_gauges(&state).await;
    // Histograms and summaries are drained here; no background task needed.
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()).into_response()
}

/// Sets the gauges read from the database and the queue. A source that
/// fails leaves its gauges at their last value (and says so in the log);
/// `/readyz` is where an outage shows.
async fn refresh_gauges(state: &OpsState) {
    let gens = state.store.generations();
    let (counts, depths) = tokio::join!(gens.count_by_status(), state.queues.depths());
    match counts {
        Ok(counts) => {
            for (status, n) in counts {
                metrics::gauge!(GENERATIONS_BY_STATUS, "status" => status.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count generations for metrics"),
    }
    match depths {
        Ok(depths) => {
            for (queue, n) in depths {
                metrics::gauge!(QUEUE_DEPTH, "queue" => queue).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue depths for metrics"),
    }
}
