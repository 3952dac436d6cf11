//! The two HTTP listeners of a kiebot process.
//!
//! # Map
//!
//! | route | module | listener | who calls it |
//! |---|---|---|---|
//! | `GET /healthz` | [`health`] | both | liveness probe, load balancers: the process answers |
//! | `GET /readyz` | [`health`] | ops | readiness probe: the database and the queue answer |
//! | `GET /metrics` | [`metrics`] | ops | Prometheus |
//! | `GET /dashboard`, `/dashboard/summary`, `/dashboard/api/v1/...` | [`dashboard`] | ops | operators (token) |
//! | `GET /dashboard/generations/{id}`, `POST .../retry`, `POST .../cancel` | [`dashboard`] | ops | operators (token) |
//! | `POST /kie/callback/{secret}` | [`callback`] | public | KIE, when a task ends |
//! | whatever [`OpsState::webhook`] routes | built by the bot | public | Telegram |
//!
//! The **public** listener (`HTTP_ADDR`, [`public_router`]) is what the
//! internet reaches: Telegram's webhook and KIE's callbacks, plus `/healthz`
//! for a load balancer in front of it. The **ops** listener (`OPS_ADDR`,
//! [`ops_router`], loopback by default) holds what only operators and
//! Prometheus should see. When both settings name the same address, one
//! listener serves everything ([`router`]), as a single-listener deployment
//! did before the split.
//!
//! Both listeners run behind the same guards ([`serve_limited`]): a request
//! timeout (408), a body limit (413; Telegram's updates and KIE's callbacks
//! are a few kilobytes) and a cap on open connections, so a slow or greedy
//! client cannot hold the process's memory or sockets.
//!
//! [`serve`] runs a router until the shutdown future resolves, then lets
//! requests in flight finish.
//!
//! # The life of a request
//!
//! Every request gets one `http.request` span ([`trace`]) with the method,
//! the route *template* (`/kie/callback/{secret}`, never the path itself) and
//! the status. Tokens, secrets, query strings and bodies are never recorded.
//!
//! The dashboard is behind a bearer token ([`OpsState::dashboard_token`];
//! `Authorization: Bearer <token>` or `?token=<token>`, compared in constant
//! time). Without a configured token it does not exist (404). The queue views
//! come from [apalis-board]'s API, mounted read-only: only `GET` and `HEAD`
//! reach it, so nobody can push or edit jobs through it. The two operator
//! actions it lacks (retry and cancel a generation) are ours, and go through
//! the store like every other state change. (On Redis, apalis-redis 1.0
//! fails some of the board's routes; [`dashboard`] lists which, and
//! `/dashboard/summary` covers both backends.)
//!
//! `/metrics` never waits on the database: the gauges read from it come
//! from one background task ([`metrics::refresh_gauges_every`]) with its own
//! interval and timeout, and a scrape only renders.
//!
//! The KIE callback is only a hint: it moves the generation's next poll to
//! now and enqueues a poll, which re-reads the task from KIE before anything
//! is decided. It never finalizes, so a forged callback costs one poll.
//!
//! [apalis-board]: https://docs.rs/apalis-board
//!
//! # Why not apalis-board's UI
//!
//! The web UI bundled in apalis-board 1.0 is compiled for the site root: its
//! assets load from `/`, its router matches `/queues/...` and its API client
//! calls `/api/v1` (compile-time constants in `apalis-board-web`). Served
//! under `/dashboard` it would fetch from the wrong place and could not carry
//! the token. So `/dashboard` is a small page of ours (queue depths,
//! generations by state, the API's addresses), and the board's JSON API is
//! mounted at `/dashboard/api/v1` where any client that sends the token can
//! use it. The workspace therefore depends on apalis-board without its `ui`
//! feature (2 MB of WebAssembly nobody could load) and without `events`
//! (a log stream that needs a tracing layer we do not install).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
pub use kiebot_config::HttpLimits;
use kiebot_jobs::Queues;
use kiebot_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

mod auth;
pub mod callback;
pub mod dashboard;
pub mod health;
mod limit;
pub mod metrics;
pub mod trace;

pub use metrics::install_metrics_recorder;

/// Everything the routes need. Cheap to clone: every part is a handle to
/// shared state (pools, connection managers, `Arc`s).
#[derive(Clone)]
pub struct OpsState {
    /// The database.
    pub store: Store,
    /// The job queues (enqueue side and the storages the dashboard reads).
    pub queues: Queues,
    /// `DASHBOARD_TOKEN`. `None` disables the dashboard (404).
    pub dashboard_token: Option<String>,
    /// The secret in the KIE callback path. `None` disables the callback
    /// endpoint (404).
    pub callback_secret: Option<String>,
    /// The account's webhook HMAC key (`KIE_WEBHOOK_HMAC_KEY`): when set, a
    /// callback without a valid `X-Webhook-Signature` is refused (401).
    pub callback_hmac_key: Option<String>,
    /// The Prometheus recorder's handle. `None` disables `/metrics` (404).
    pub metrics: Option<PrometheusHandle>,
    /// The Telegram webhook routes, merged as they are (built by the bot).
    pub webhook: Option<Router>,
}

impl fmt::Debug for OpsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token or the secret, only whether they are set.
        f.debug_struct("OpsState")
            .field("engine", &self.store.engine())
            .field("queues", &self.queues.names())
            .field(
                "dashboard_token",
                &self.dashboard_token.as_ref().map(|_| "<set>"),
            )
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "<set>"),
            )
            .field(
                "callback_hmac_key",
                &self.callback_hmac_key.as_ref().map(|_| "<set>"),
            )
            .field("metrics", &self.metrics.is_some())
            .field("webhook", &self.webhook.is_some())
            .finish()
    }
}

/// The public listener's router: `/healthz`, the KIE callback and (if
/// given) the Telegram webhook. Nothing an operator reads is reachable here.
pub fn public_router(state: OpsState) -> Router {
    let webhook = state.webhook.clone();
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/kie/callback/{secret}", post(callback::kie_callback))
        .with_state(state);
    if let Some(webhook) = webhook {
        app = app.merge(webhook);
    }
    app.layer(axum::middleware::from_fn(trace::trace_request))
}

/// The ops listener's router: health, readiness, metrics and the dashboard.
pub fn ops_router(state: OpsState) -> Router {
    ops_routes(&state)
        .with_state(state)
        .layer(axum::middleware::from_fn(trace::trace_request))
}

fn ops_routes(state: &OpsState) -> Router<OpsState> {
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render));
    if let Some(dashboard) = dashboard::router(state) {
        app = app.nest("/dashboard", dashboard);
    }
    app
}

/// Everything on one listener: the ops routes, the KIE callback and (if
/// given) the Telegram webhook. For `OPS_ADDR` equal to `HTTP_ADDR`, and
/// for tools that run a single listener on loopback.
pub fn router(state: OpsState) -> Router {
    let webhook = state.webhook.clone();
    let mut app = ops_routes(&state)
        .route("/kie/callback/{secret}", post(callback::kie_callback))
        .with_state(state);
    if let Some(webhook) = webhook {
        app = app.merge(webhook);
    }
    app.layer(axum::middleware::from_fn(trace::trace_request))
}

/// Binds `addr` and serves `router` behind the default [`HttpLimits`] until
/// `shutdown` resolves; requests in flight then finish before this returns.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_limited(listener, router, HttpLimits::default(), shutdown).await
}

/// [`serve`] on a listener that is already bound (tests bind port 0 and read
/// the address first), behind the default [`HttpLimits`].
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_limited(listener, router, HttpLimits::default(), shutdown).await
}

/// Serves `router` on `listener` behind `limits`: a request not answered
/// within the timeout gets 408, a body over the limit 413, and no more than
/// `max_connections` connections are open at once (the next waits in the
/// kernel's backlog until one closes).
pub async fn serve_limited(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = limits.max_connections, "HTTP server listening");
    let router = limit::guard(router, &limits);
    let listener = limit::CappedListener::new(listener, limits.max_connections);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(%addr, "HTTP server stopped");
    Ok(())
}
