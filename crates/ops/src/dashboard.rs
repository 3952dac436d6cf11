//! The queue dashboard, behind the dashboard token.
//!
//! | route | what |
//! |---|---|
//! | `GET /dashboard` | a small HTML page: queue depths, generations by state, the addresses below |
//! | `GET /dashboard/summary` | the same numbers as JSON ([`Summary`]) |
//! | `GET /dashboard/api/v1/...` | [apalis-board]'s JSON API over the four queues, read-only |
//! | `GET /dashboard/generations/{id}` | one generation row as JSON ([`GenerationView`]) |
//! | `POST /dashboard/generations/{id}/retry` | make its next step due now and enqueue the job for it |
//! | `POST /dashboard/generations/{id}/cancel` | end it as `canceled` (the hold is released) |
//!
//! The board API's routes are `/overview`, `/queues`, `/tasks`, `/workers`
//! and, per queue, `/queues/{queue}/tasks`, `/stats`, `/workers` and
//! `/tasks/{task_id}`. Its one write (`PUT /queues/{queue}/tasks`, push a
//! job) never runs: only `GET` and `HEAD` pass, anything else is 405. Jobs
//! are pushed by the pipeline and by the retry action, which first puts the
//! database in the state the job expects.
//!
//! On the embedded queue (apalis-sqlite) every board route works. On Redis,
//! apalis-redis 1.0 answers `/overview`, `/tasks`, `/workers` and the
//! per-queue `/tasks` (which lists only jobs a worker has moved from the
//! `scheduled` set to `active`), but fails `/queues` and the per-queue
//! `/stats` and `/workers` (its scripts miss an argument or return another
//! shape). `/dashboard/summary` is ours and works on both.
//!
//! Retry and cancel go through the store like every other state change:
//! cancel releases the hold in the transaction that records `canceled`, and
//! a generation that has succeeded cannot be canceled (409). The JSON of a
//! generation includes its request and result (operators need them); the
//! log lines about it carry ids and states only.
//!
//! [apalis-board]: https://docs.rs/apalis-board

use std::fmt::Write as _;
use std::sync::Arc;

use apalis_board::axum::framework::{ApiBuilder, RegisterRoute};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use kiebot_domain::{GenerationId, GenerationStatus};
use kiebot_jobs::names::QueueNames;
use kiebot_jobs::{Deliver, Finalize, Job, Poll, Queues, Storages, Submit};
use kiebot_store::generations::Generation;
use kiebot_store::{StoreError, now_ms};
use serde::Serialize;
use serde_json::{Value, json};

use crate::OpsState;
use crate::metrics::DASHBOARD_ACTIONS;

/// The dashboard's routes (relative to `/dashboard`), or `None` when no
/// token is configured: then the dashboard does not exist.
pub(crate) fn router(state: &OpsState) -> Option<Router<OpsState>> {
    let token: Arc<str> = state
        .dashboard_token
        .as_deref()
        .filter(|t| !t.is_empty())?
        .into();
    let board = board_api(&state.queues).layer(middleware::from_fn(read_only));
    let routes = Router::new()
        .route("/", get(overview_page))
        .route("/summary", get(summary_json))
        .route("/generations/{id}", get(show_generation))
        .route("/generations/{id}/retry", post(retry))
        .route("/generations/{id}/cancel", post(cancel))
        .nest_service("/api/v1", board)
        .layer(middleware::from_fn_with_state(
            token,
            crate::auth::require_token,
        ));
    Some(routes)
}

/// apalis-board's API over the four storages of `queues`. The first
/// registered storage also answers the cross-queue routes (`/overview`,
/// `/queues`, `/tasks`, `/workers`), which read the whole backend.
fn board_api(queues: &Queues) -> Router {
    match queues {
        Queues::Redis {
            storages, names, ..
        } => register_all(storages, names),
        Queues::Sqlite {
            storages, names, ..
        } => register_all(storages, names),
    }
}

fn register_all<S, P, F, D>(storages: &Storages<S, P, F, D>, names: &QueueNames) -> Router
where
    S: Clone,
    P: Clone,
    F: Clone,
    D: Clone,
    ApiBuilder<Router>: RegisterRoute<S, Submit>
        + RegisterRoute<P, Poll>
        + RegisterRoute<F, Finalize>
        + RegisterRoute<D, Deliver>,
{
    let api = ApiBuilder::new(Router::new());
    let api = RegisterRoute::<_, Submit>::register(api, &names.submit, storages.submit.clone());
    let api = RegisterRoute::<_, Poll>::register(api, &names.poll, storages.poll.clone());
    let api =
        RegisterRoute::<_, Finalize>::register(api, &names.finalize, storages.finalize.clone());
    let api = RegisterRoute::<_, Deliver>::register(api, &names.deliver, storages.deliver.clone());
    api.build()
}

/// Middleware: only reads reach the board.
async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        "the queue dashboard is read-only\n",
    )
        .into_response()
}

/// A generation as the dashboard shows it. Times are unix milliseconds.
#[derive(Debug, Serialize)]
pub struct GenerationView {
    /// Row id.
    pub id: i64,
    /// Who pays (Telegram user id).
    pub user: i64,
    /// The KIE model.
    pub model: String,
    /// Where it is in its life.
    pub status: GenerationStatus,
    /// The price in minor units.
    pub price_minor: i64,
    /// KIE's task id, once submitted.
    pub kie_task_id: Option<String>,
    /// createTask calls started.
    pub submit_attempts: u32,
    /// Polls that found the task unfinished.
    pub poll_attempts: u32,
    /// When the next poll is due.
    pub next_poll_at: Option<i64>,
    /// When it expires unfinished.
    pub deadline_at: Option<i64>,
    /// Machine-readable failure.
    pub fail_code: Option<String>,
    /// Human-readable failure.
    pub fail_reason: Option<String>,
    /// Delivery attempts that did not finish.
    pub delivery_attempts: u32,
    /// When the next delivery attempt is due.
    pub next_delivery_at: Option<i64>,
    /// Confirmed.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Entered `submitted`.
    pub submitted_at: Option<i64>,
    /// Entered a final KIE outcome.
    pub finished_at: Option<i64>,
    /// Entered `delivered`.
    pub delivered_at: Option<i64>,
    /// The wizard's parameters.
    pub params: Value,
    /// The KIE request body.
    pub request: Value,
    /// The result, once there is one.
    pub result: Option<Value>,
}

impl From<&Generation> for GenerationView {
    fn from(g: &Generation) -> Self {
        GenerationView {
            id: g.id.0,
            user: g.user.0,
            model: g.model.as_str().to_owned(),
            status: g.status,
            price_minor: g.price.minor(),
            kie_task_id: g.kie_task_id.clone(),
            submit_attempts: g.submit_attempts,
            poll_attempts: g.poll_attempts,
            next_poll_at: g.next_poll_at,
            deadline_at: g.deadline_at,
            fail_code: g.fail_code.clone(),
            fail_reason: g.fail_reason.clone(),
            delivery_attempts: g.delivery_attempts,
            next_delivery_at: g.next_delivery_at,
            created_at: g.created_at,
            updated_at: g.updated_at,
            submitted_at: g.submitted_at,
            finished_at: g.finished_at,
            delivered_at: g.delivered_at,
            params: json_or_text(&g.params_json),
            request: json_or_text(&g.request_json),
            result: g.result_json.as_deref().map(json_or_text),
        }
    }
}

/// Stored JSON as a value; text that does not parse stays text.
fn json_or_text(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// `GET /dashboard/generations/{id}`.
async fn show_generation(State(state): State<OpsState>, Path(id): Path<i64>) -> Response {
    match state.store.generations().get(GenerationId(id)).await {
        Ok(Some(g)) => Json(GenerationView::from(&g)).into_response(),
        Ok(None) => not_found(id),
        Err(e) => store_failed("show", &e),
    }
}

/// `POST /dashboard/generations/{id}/retry`: makes the generation's next
/// step due now, then enqueues the job for it. If the push fails the step
/// is still due in the database, and the reconciler enqueues it.
async fn retry(State(state): State<OpsState>, Path(id): Path<i64>) -> Response {
    let id = GenerationId(id);
    let (status, job) = match state.store.generations().nudge(id, now_ms()).await {
        Ok(Some(g)) => (g.status, Job::next(id, g.lifecycle.next_job())),
        Ok(None) => return not_found(id.0),
        Err(e) => return store_failed("retry", &e),
    };
    let queued = match job {
        Some(job) => push(&state, job, "retry").await,
        None => false,
    };
    tracing::info!(generation = %id, %status, job = job.map(Job::kind), queued, "operator retried a generation");
    count("retry", "ok");
    Json(json!({
        "id": id.0,
        "status": status,
        "job": job.map(Job::kind),
        "queued": queued,
    }))
    .into_response()
}

/// The failure code of a generation an operator canceled.
pub const CANCEL_CODE: &str = "canceled";
/// The reason recorded (and shown to the user) when an operator cancels.
pub const CANCEL_REASON: &str = "canceled by an operator";

/// `POST /dashboard/generations/{id}/cancel`: ends the generation as
/// `canceled` and releases its hold (one transaction), then enqueues the
/// notice to the user. Canceling twice is fine; canceling a generation that
/// succeeded is 409.
async fn cancel(State(state): State<OpsState>, Path(id): Path<i64>) -> Response {
    let id = GenerationId(id);
    let gens = state.store.generations();
    match gens
        .finish_failure(id, GenerationStatus::Canceled, CANCEL_CODE, CANCEL_REASON)
        .await
    {
        Ok(_) => {}
        Err(StoreError::IllegalTransition(t)) => {
            count("cancel", "conflict");
            return (
                StatusCode::CONFLICT,
                Json(json!({
                    "error": format!("a {} generation cannot be canceled", t.from),
                    "id": id.0,
                    "status": t.from,
                })),
            )
                .into_response();
        }
        Err(StoreError::NotFound { .. }) => return not_found(id.0),
        Err(e) => return store_failed("cancel", &e),
    }
    let queued = push(&state, Job::Deliver(id), "cancel").await;
    tracing::info!(generation = %id, queued, "operator canceled a generation");
    count("cancel", "ok");
    match gens.get(id).await {
        Ok(Some(g)) => Json(json!({
            "id": id.0,
            "status": g.status,
            "queued": queued,
            "generation": GenerationView::from(&g),
        }))
        .into_response(),
        Ok(None) => not_found(id.0),
        Err(e) => store_failed("cancel", &e),
    }
}

/// Pushes `job`; `false` when the queue is full (the row is due, so the
/// reconciler enqueues it) or refused (with a warning).
async fn push(state: &OpsState, job: Job, action: &'static str) -> bool {
    match state.queues.push(job).await {
        Ok(queued) => queued,
        Err(e) => {
            tracing::warn!(%job, action, error = %e, "job not queued; the reconciler will pick it up");
            false
        }
    }
}

fn count(action: &'static str, outcome: &'static str) {
    metrics::counter!(DASHBOARD_ACTIONS, "action" => action, "outcome" => outcome).increment(1);
}

fn not_found(id: i64) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such generation", "id": id})),
    )
        .into_response()
}

fn store_failed(action: &'static str, e: &StoreError) -> Response {
    tracing::error!(action, error = %e, "dashboard: database error");
    count(action, "error");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "database error"})),
    )
        .into_response()
}

/// What `/dashboard` and `/dashboard/summary` show: our own numbers, on
/// every backend (apalis-board's per-queue statistics do not work on
/// apalis-redis 1.0).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Jobs waiting per queue, in pipeline order; `None` when the queue is
    /// unavailable.
    pub queues: Option<Vec<QueueDepth>>,
    /// Generations per state, in lifecycle order; `None` when the database
    /// is unavailable.
    pub generations: Option<Vec<StateCount>>,
}

/// One queue's depth.
#[derive(Debug, Serialize)]
pub struct QueueDepth {
    /// The queue's name.
    pub name: String,
    /// Jobs waiting to be fetched.
    pub waiting: u64,
}

/// How many generations are in one state.
#[derive(Debug, Serialize)]
pub struct StateCount {
    /// The state.
    pub status: GenerationStatus,
    /// How many.
    pub count: u64,
}

async fn summary(state: &OpsState) -> Summary {
    let gens = state.store.generations();
    let (counts, depths) = tokio::join!(gens.count_by_status(), state.queues.depths());
    let queues = depths
        .map(|d| {
            d.into_iter()
                .map(|(name, waiting)| QueueDepth { name, waiting })
                .collect()
        })
        .map_err(|e| tracing::warn!(error = %e, "dashboard: cannot read queue depths"))
        .ok();
    let generations = counts
        .map(|c| {
            c.into_iter()
                .map(|(status, count)| StateCount { status, count })
                .collect()
        })
        .map_err(|e| tracing::warn!(error = %e, "dashboard: cannot count generations"))
        .ok();
    Summary {
        queues,
        generations,
    }
}

/// `GET /dashboard/summary`: [`Summary`] as JSON.
async fn summary_json(State(state): State<OpsState>) -> Json<Summary> {
    Json(summary(&state).await)
}

/// `GET /dashboard`: [`Summary`] as a page, plus the API's addresses.
async fn overview_page(State(state): State<OpsState>) -> Html<String> {
    let summary = summary(&state).await;
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kiebot queues</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}\
         td,th{border:1px solid #ccc;padding:.3em .8em;text-align:left}</style></head><body>\
         <h1>kiebot</h1><h2>Queues</h2><table><tr><th>queue</th><th>waiting</th></tr>",
    );
    match summary.queues {
        Some(queues) => {
            for q in queues {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    escape(&q.name),
                    q.waiting
                );
            }
        }
        None => page.push_str("<tr><td colspan=\"2\">queue unavailable</td></tr>"),
    }
    page.push_str("</table><h2>Generations</h2><table><tr><th>state</th><th>count</th></tr>");
    match summary.generations {
        Some(counts) => {
            for c in counts {
                let _ = write!(page, "<tr><td>{}</td><td>{}</td></tr>", c.status, c.count);
            }
        }
        None => page.push_str("<tr><td colspan=\"2\">database unavailable</td></tr>"),
    }
    page.push_str(
        "</table><h2>API</h2><p>Send the token as <code>Authorization: Bearer &lt;token&gt;</code>.</p><ul>\
         <li><code>GET /dashboard/summary</code>: this page as JSON</li>\
         <li><code>GET /dashboard/api/v1/overview</code>, <code>/queues</code>, <code>/tasks</code>, \
         <code>/workers</code>: apalis-board, read-only</li>\
         <li><code>GET /dashboard/api/v1/queues/{queue}/tasks?status=&amp;page=</code>, \
         <code>/stats</code>, <code>/workers</code>, <code>/tasks/{task_id}</code></li>\
         <li><code>GET /dashboard/generations/{id}</code></li>\
         <li><code>POST /dashboard/generations/{id}/retry</code>, \
         <code>POST /dashboard/generations/{id}/cancel</code></li></ul></body></html>",
    );
    Html(page)
}

/// Minimal HTML escaping for text we put in the page.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
