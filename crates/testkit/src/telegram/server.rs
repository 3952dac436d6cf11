//! The HTTP side of the fake: routing, long polling, file downloads and the
//! webhook sender.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::params::{MAX_BODY_BYTES, Params};
use super::state::{ApiErr, canonical_method};
use super::{CallEvent, Inner};

/// Pause between webhook delivery attempts after a failure (Telegram backs
/// off much longer; tests want quick recovery).
const WEBHOOK_RETRY: Duration = Duration::from_millis(100);
/// Telegram caps long polling at 50 s.
const MAX_POLL_TIMEOUT_SECS: i64 = 50;

pub(super) fn spawn(inner: Arc<Inner>, listener: TcpListener) {
    let app = Router::new()
        .route("/file/{bot}/{*path}", get(download))
        .route("/{bot}/{method}", any(api))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::clone(&inner));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("fake Telegram server stopped: {err}");
        }
    });
    tokio::spawn(webhook_sender(inner));
}

fn reply(result: Result<Value, ApiErr>) -> Response {
    match result {
        Ok(value) => (
            StatusCode::OK,
            axum::Json(json!({ "ok": true, "result": value })),
        )
            .into_response(),
        Err(err) => {
            let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::BAD_REQUEST);
            (status, axum::Json(err.body())).into_response()
        }
    }
}

fn token_ok(inner: &Inner, bot: &str) -> bool {
    bot.strip_prefix("bot") == Some(inner.token.as_str())
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    if !token_ok(&inner, &bot) {
        return reply(Err(ApiErr::unauthorized()));
    }
    let Some(method) = canonical_method(&method) else {
        return reply(Err(ApiErr::not_found()));
    };
    let discard = inner
        .discard_uploads
        .load(std::sync::atomic::Ordering::Relaxed);
    let params = match Params::from_request(req, discard).await {
        Ok(params) => params,
        Err(err) => {
            {
                let mut st = inner.state();
                *st.calls.entry(method.to_owned()).or_default() += 1;
                st.reject(method, &Params::default(), &err);
            }
            inner.bump_activity();
            return reply(Err(err));
        }
    };
    let result = if method == "getUpdates" {
        get_updates(&inner, &params).await
    } else {
        let at = Instant::now();
        let result = {
            let mut st = inner.state();
            st.begin(method, &params)
                .and_then(|()| st.dispatch(method, &params))
        };
        inner.notify_call(|| CallEvent {
            method,
            chat_id: params.i64("chat_id"),
            message_id: result
                .as_ref()
                .ok()
                .and_then(|v| v.get("message_id"))
                .and_then(Value::as_i64)
                .or_else(|| params.i64("message_id"))
                .and_then(|m| i32::try_from(m).ok()),
            callback_query_id: params.str("callback_query_id"),
            ok: result.is_ok(),
            at,
        });
        result
    };
    if matches!(method, "setWebhook" | "deleteWebhook") {
        inner.bump_updates();
    }
    let dropped = {
        let mut st = inner.state();
        match st.drop_replies.get_mut(method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    inner.bump_activity();
    if dropped {
        // Done, but the answer is lost: the status line goes out and the
        // body breaks off, so the client sees a dropped connection.
        let broken = futures::stream::once(async {
            Err::<bytes::Bytes, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reply dropped by the fake Telegram",
            ))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(axum::body::Body::from_stream(broken))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    reply(result)
}

/// Long polling: answers at once when updates are pending, otherwise holds
/// the request until one is injected or `timeout` seconds pass.
async fn get_updates(inner: &Inner, p: &Params) -> Result<Value, ApiErr> {
    inner.state().begin("getUpdates", p)?;
    let offset = p.i64("offset");
    let limit = usize::try_from(p.i64("limit").unwrap_or(100).clamp(1, 100)).unwrap_or(100);
    let timeout_secs = p
        .i64("timeout")
        .unwrap_or(0)
        .clamp(0, MAX_POLL_TIMEOUT_SECS);
    let timeout = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = inner.updates_tx.subscribe();
    loop {
        rx.borrow_and_update();
        let batch = {
            let mut st = inner.state();
            let batch = st.take_updates(offset, limit);
            if let Err(err) = &batch {
                st.reject("getUpdates", p, err);
            }
            batch?
        };
        // The offset may have confirmed updates: waiters on
        // `pending_updates` see it now, not when this long poll ends.
        inner.bump_activity();
        if !batch.is_empty() || timeout.is_zero() {
            return Ok(Value::Array(batch));
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(json!([])),
        }
    }
}

async fn download(
    State(inner): State<Arc<Inner>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if !token_ok(&inner, &bot) {
        return reply(Err(ApiErr::unauthorized()));
    }
    let content = inner.state().file_content(&path);
    match content {
        // Materialised outside the lock: `Zeros` may be megabytes.
        Some(content) => (StatusCode::OK, content.to_bytes()).into_response(),
        None => reply(Err(ApiErr::not_found())),
    }
}

/// POSTs queued updates to the webhook one at a time, in order, retrying each
/// until the bot answers 2xx, as Telegram does.
async fn webhook_sender(inner: Arc<Inner>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut rx = inner.updates_tx.subscribe();
    loop {
        rx.borrow_and_update();
        let next = inner.state().next_webhook_update();
        let Some((hook, update)) = next else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let id = update.get("update_id").and_then(Value::as_i64).unwrap_or(0);
        let mut request = client.post(&hook.url).json(&update);
        if let Some(secret) = &hook.secret_token {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let sent = request.send().await;
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        inner.state().webhook_attempts.push((id, status));
        match sent {
            Ok(response) if response.status().is_success() => {
                inner.state().confirm_webhook_update(id);
                inner.bump_activity();
            }
            _ => {
                inner.bump_activity();
                tokio::time::sleep(WEBHOOK_RETRY).await;
            }
        }
    }
}
