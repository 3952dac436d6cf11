//! Process assembly: which parts a process runs and how they share one
//! context and one shutdown.
//!
//! | process | front bot (+ Stars reconciler) | workers + reconciler | public HTTP (`HTTP_ADDR`) | ops HTTP (`OPS_ADDR`) |
//! |---|---|---|---|---|
//! | `kiebot run` (embedded or all-in-one) | yes | yes | health, KIE callbacks, webhook | yes |
//! | `kiebot-bot` (fleet front) | yes | no | health, KIE callbacks, webhook | yes |
//! | `kiebot-worker` (fleet) | no | yes | health | yes (health, readiness, metrics) |
//!
//! When `OPS_ADDR` equals `HTTP_ADDR`, one listener serves both sets of
//! routes (the layout before the split).
//!
//! Every part is built from the same [`assemble::assemble`] context, so
//! the store, queue, KIE client, Bot API client and rate limiter are the ones
//! the settings name, whatever the process. A termination signal stops the
//! bot from taking updates, lets the workers drain, then stops HTTP.

pub mod assemble;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "harness")]
pub mod harness;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kiebot_bot::BotDeps;
use kiebot_config::{BotMode, Settings};
use kiebot_ops::{OpsState, install_metrics_recorder, ops_router, public_router, router};
use kiebot_worker::Ctx;
use kiebot_worker::runtime::{WorkerRuntime, termination_signal};

use crate::assemble::{Options, assemble, callback_secret};
use rand::Rng;
use teloxide::payloads::SetWebhookSetters;
use teloxide::prelude::Requester;
use tokio::sync::watch;

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// The front bot (updates, wizard, payments, admin).
    pub bot: bool,
    /// The job workers and the reconciler.
    pub workers: bool,
}

/// Settings key of the webhook's secret token (shared by every front).
const WEBHOOK_SECRET_KEY: &str = "telegram_webhook_secret";

/// The front bot's dependencies from an assembled context.
pub fn bot_deps(ctx: &Ctx, settings: &Settings) -> BotDeps {
    BotDeps {
        store: ctx.store.clone(),
        queues: ctx.queues.clone(),
        catalog: ctx.catalog.clone(),
        pricing: settings.pricing,
        admin_ids: settings.admin_ids.clone(),
        max_active: settings.max_active_generations,
        dry_run: settings.dry_run,
        kie: Arc::clone(&ctx.kie),
        bot: ctx.bot.clone(),
        stars_rate: settings.stars_rate,
        limiter: ctx.limiter.clone(),
        flood: Arc::new(kiebot_bot::FloodGate::new(flood_config(settings))),
        broadcasts: kiebot_bot::BroadcastRunners::default(),
        referral: kiebot_bot::ReferralPolicy {
            min_stars: settings.referral.min_stars,
            min_spend: settings.referral.min_spend,
            monthly_cap: settings.referral.monthly_cap,
        },
        admin_limits: kiebot_bot::AdminPolicy {
            max_single: settings.admin_limits.max_single,
            daily_budget: settings.admin_limits.daily_budget,
            notify_above: settings.admin_limits.notify_above,
        },
    }
}

/// The front's flood control from the settings.
pub fn flood_config(settings: &Settings) -> kiebot_bot::FloodConfig {
    kiebot_bot::FloodConfig {
        rate_per_min: settings.flood.rate_per_min,
        burst: settings.flood.burst,
        promo_failures_per_hour: settings.flood.promo_failures_per_hour,
        ..kiebot_bot::FloodConfig::default()
    }
}

/// The `main` of a long-running process (`kiebot-bot`, `kiebot-worker`):
/// installs logging and tracing as `service`, runs `parts` until SIGTERM or
/// ctrl-c, and turns the outcome into the exit code (2: telemetry could not
/// be set up; 1: the process failed).
pub fn run_process(service: &'static str, settings: Settings, parts: Parts) -> ExitCode {
    let _telemetry = match kiebot_telemetry::init(
        service,
        settings.log_format,
        settings.otel_endpoint.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{service}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, parts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{service} stopped");
            eprintln!("{service}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the given parts until SIGTERM or ctrl-c.
pub async fn run(settings: Settings, parts: Parts) -> anyhow::Result<()> {
    run_until(settings, parts, Options::default(), termination_signal()).await
}

/// Runs the given parts until `shutdown` resolves.
pub async fn run_until(
    settings: Settings,
    parts: Parts,
    mut options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if parts.bot {
        options.warm_connections = options.warm_connections.max(kiebot_bot::WARM_CONNECTIONS);
    }
    let ctx = assemble(&settings, options).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let deps = parts.bot.then(|| bot_deps(&ctx, &settings));
    let mut webhook = None;
    if let Some(deps) = &deps {
        if let Err(e) = kiebot_bot::set_commands(&deps.bot).await {
            tracing::warn!(error = %e, "setMyCommands failed; the command menu may be stale");
        }
        if settings.bot_mode == BotMode::Webhook {
            let public = settings
                .public_url
                .as_deref()
                .context("PUBLIC_URL: required when BOT_MODE=webhook")?;
            let fresh: String = {
                let mut rng = rand::rng();
                (0..48)
                    .map(|_| {
                        char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                    })
                    .collect()
            };
            let secret = ctx
                .store
                .setting_or_init(WEBHOOK_SECRET_KEY, &fresh)
                .await?;
            let url = format!("{public}/telegram/webhook")
                .parse()
                .context("PUBLIC_URL")?;
            deps.bot
                .set_webhook(url)
                .secret_token(secret.clone())
                .await
                .context("setWebhook")?;
            webhook = Some(kiebot_bot::webhook_router(deps.clone(), secret));
        }
    }

    // KIE callbacks reach the front (PUBLIC_URL); a worker-only process does
    // not serve them.
    let callback = if parts.bot && settings.public_url.is_some() {
        Some(callback_secret(&ctx.store).await?)
    } else {
        None
    };
    let state = OpsState {
        store: ctx.store.clone(),
        queues: ctx.queues.clone(),
        dashboard_token: settings
            .dashboard_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        callback_secret: callback,
        callback_hmac_key: settings
            .kie_webhook_hmac_key
            .as_ref()
            .map(|k| k.expose().to_owned()),
        metrics: Some(install_metrics_recorder()),
        webhook,
    };
    // Bound before anything runs, so a taken port stops start-up with the
    // variable's name.
    let limits = settings.http_limits;
    let mut servers = Vec::new();
    if settings.ops_addr == settings.http_addr {
        let listener = bind(settings.http_addr, "HTTP_ADDR").await?;
        servers.push(("HTTP_ADDR", listener, router(state.clone())));
    } else {
        let public = bind(settings.http_addr, "HTTP_ADDR").await?;
        let ops = bind(settings.ops_addr, "OPS_ADDR").await?;
        servers.push(("HTTP_ADDR", public, public_router(state.clone())));
        servers.push(("OPS_ADDR", ops, ops_router(state.clone())));
    }
    let http: Vec<_> = servers
        .into_iter()
        .map(|(var, listener, app)| {
            let served = kiebot_ops::serve_limited(listener, app, limits, stopped(stop_rx.clone()));
            (var, tokio::spawn(served))
        })
        .collect();
    // The database gauges of /metrics, read in the background so a scrape
    // never waits on the database.
    let gauges = tokio::spawn(kiebot_ops::metrics::refresh_gauges_every(
        ctx.store.clone(),
        ctx.queues.clone(),
        kiebot_ops::metrics::REFRESH_EVERY,
        kiebot_ops::metrics::REFRESH_TIMEOUT,
        stopped(stop_rx.clone()),
    ));

    let workers = parts.workers.then(|| {
        let runtime = WorkerRuntime::new(Arc::clone(&ctx), settings.worker_concurrency);
        tokio::spawn(runtime.run(stopped(stop_rx.clone())))
    });
    let polling = match (&deps, settings.bot_mode) {
        (Some(d), BotMode::Polling) => Some(tokio::spawn(kiebot_bot::run_polling(
            d.clone(),
            stopped(stop_rx.clone()),
        ))),
        _ => None,
    };
    // Polling watches for broadcasts itself; a webhook front must too, or a
    // broadcast whose process died would wait for a polling process forever.
    let broadcasts = match (&deps, settings.bot_mode) {
        (Some(d), BotMode::Webhook) => Some(tokio::spawn(kiebot_bot::watch_broadcasts(
            d.clone(),
            stopped(stop_rx.clone()),
        ))),
        _ => None,
    };

    // Our payments against Telegram's Star transactions, in every process
    // running the front bot (one at a time, by a turn in the database).
    let reconciler = match (&deps, settings.stars_reconcile) {
        (Some(d), Some(every)) => Some(tokio::spawn(kiebot_bot::run_stars_reconciler(
            d.clone(),
            every,
            stopped(stop_rx.clone()),
        ))),
        _ => None,
    };

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(p) = polling {
        let _ = p.await;
    }
    // A running broadcast gives its lease back, so the next process goes on
    // with it at once.
    if let Some(b) = broadcasts {
        let _ = b.await;
    }
    if let Some(r) = reconciler {
        let _ = r.await;
    }
    if let Some(w) = workers {
        match w.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "worker runtime stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "worker runtime task failed"),
            Ok(Ok(())) => {}
        }
    }
    let _ = gauges.await;
    let mut failed = Ok(());
    for (var, server) in http {
        if let Ok(Err(e)) = server.await {
            failed = Err(e).context(var);
        }
    }
    failed
}

async fn bind(
    addr: std::net::SocketAddr,
    var: &'static str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{var}: cannot listen on {addr}"))
}
