//! `kiebot-worker`: one stateless worker of a fleet.
//!
//! Runs every queue's worker and the reconciler against PostgreSQL and Redis,
//! plus the ops HTTP server (health, readiness, metrics) on `HTTP_ADDR`. Run
//! as many as the load needs; they share nothing but the database and the
//! queue. SIGTERM stops fetching and drains in-flight jobs.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kiebot_config::{Mode, Settings};
use kiebot_ops::{OpsState, install_metrics_recorder, router, serve};
use kiebot_worker::assemble::{Options, assemble};
use kiebot_worker::runtime::{WorkerRuntime, termination_signal};
use tokio::sync::watch;

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiebot-worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match kiebot_telemetry::init(
        "kiebot-worker",
        settings.log_format,
        settings.otel_endpoint.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kiebot-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiebot-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kiebot-worker stopped");
            eprintln!("kiebot-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    if settings.mode()? != Mode::Fleet {
        anyhow::bail!(
            "DATABASE_URL/REDIS_URL: kiebot-worker runs in the fleet (postgres:// and redis://); use `kiebot run` for one process"
        );
    }
    let ctx = assemble(&settings, Options::default()).await?;
    let metrics = install_metrics_recorder();
    let state = OpsState {
        store: ctx.store.clone(),
        queues: ctx.queues.clone(),
        dashboard_token: settings
            .dashboard_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        // Callbacks reach the front bot's address (PUBLIC_URL), not workers.
        callback_secret: None,
        metrics: Some(metrics),
        webhook: None,
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let http = tokio::spawn(serve(settings.http_addr, router(state), async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let result = WorkerRuntime::new(Arc::clone(&ctx), settings.worker_concurrency)
        .run(termination_signal())
        .await;
    let _ = stop_tx.send(true);
    let _ = http.await;
    result.context("worker runtime")
}
