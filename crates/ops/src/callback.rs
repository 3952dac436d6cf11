//! `POST /kie/callback/{secret}`: KIE says a task may have finished.
//!
//! The URL carries a secret, and when the operator configures the account's
//! webhook HMAC key (`KIE_WEBHOOK_HMAC_KEY`) the callback must also carry
//! KIE's signature (`X-Webhook-Signature` over the task id and
//! `X-Webhook-Timestamp`; see [`kiebot_kie::webhook`]). Even a request that
//! passes both is only a hint: it moves the generation's next poll to now and
//! enqueues a `Poll`, and the poll re-reads the task from KIE before anything
//! is decided. Nothing here finalizes, charges or delivers. The three KIE
//! families' bodies (market, Veo, Suno) are all understood.
//!
//! The answer is fast and final for every well-formed callback (200, also for
//! tasks we do not know or no longer wait for), so KIE does not retry
//! forever. Only our own failure (the database is down) answers 500, so that
//! KIE tries again later.
//!
//! Every callback is counted in [`KIE_CALLBACKS`] by `outcome`: `bad_secret`,
//! `bad_signature`, `invalid`, `unknown_task`, `not_waiting`, `poll_queued`,
//! `poll_scheduled` (the push failed; the reconciler will enqueue the poll
//! the database now says is due) and `error`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiebot_domain::GenerationStatus;
use kiebot_jobs::Job;
use kiebot_kie::webhook;
use serde_json::json;

use crate::OpsState;
use crate::auth::secret_eq;
use crate::metrics::KIE_CALLBACKS;

/// The callback handler. See the [module docs](self).
pub async fn kie_callback(
    State(state): State<OpsState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = state.callback_secret.as_deref().filter(|s| !s.is_empty());
    if !expected.is_some_and(|expected| secret_eq(&secret, expected)) {
        // Said without the secret: the log must not teach anyone the URL.
        tracing::warn!(
            configured = expected.is_some(),
            "KIE callback with a wrong secret refused"
        );
        return answer(StatusCode::NOT_FOUND, "bad_secret", json!({"ok": false}));
    }
    let record = match kiebot_kie::parse_callback(&body) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(error = %e, body_bytes = body.len(), "KIE callback body refused");
            return answer(
                StatusCode::BAD_REQUEST,
                "invalid",
                json!({"ok": false, "error": "invalid callback body"}),
            );
        }
    };
    let task_id = record.task_id.as_str();
    let kie_state = record.state.name();
    if let Some(key) = state.callback_hmac_key.as_deref().filter(|k| !k.is_empty()) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let now_secs = kiebot_store::now_ms() / 1000;
        if let Err(why) = webhook::verify(
            key,
            task_id,
            header(webhook::TIMESTAMP_HEADER),
            header(webhook::SIGNATURE_HEADER),
            now_secs,
        ) {
            tracing::warn!(task_id, error = %why, "KIE callback refused: bad signature");
            return answer(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                json!({"ok": false, "error": "bad signature"}),
            );
        }
    }
    let gens = state.store.generations();
    let generation = match gens.by_task_id(task_id).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            tracing::info!(
                task_id,
                kie_state,
                "KIE callback for an unknown task ignored"
            );
            return ignored("unknown_task");
        }
        Err(e) => return failed(&e),
    };
    let id = generation.id;
    if generation.status != GenerationStatus::Submitted {
        tracing::info!(
            task_id,
            generation = %id,
            status = %generation.status,
            kie_state,
            "KIE callback for a generation no longer waiting ignored"
        );
        return ignored("not_waiting");
    }
    match gens.poll_now(id, kiebot_store::now_ms()).await {
        Ok(true) => {}
        // It left `submitted` in the meantime: whoever moved it has the rest.
        Ok(false) => return ignored("not_waiting"),
        Err(e) => return failed(&e),
    }
    match state.queues.push(Job::Poll(id)).await {
        Ok(true) => {
            tracing::info!(task_id, generation = %id, kie_state, "KIE callback: poll queued");
            answer(StatusCode::OK, "poll_queued", json!({"ok": true}))
        }
        // The queue is at its bound; the poll is due in the database.
        Ok(false) => answer(StatusCode::OK, "poll_scheduled", json!({"ok": true})),
        Err(e) => {
            // The poll is due in the database; the reconciler enqueues it.
            tracing::warn!(
                task_id,
                generation = %id,
                error = %e,
                "KIE callback: poll not queued; the reconciler will pick it up"
            );
            answer(StatusCode::OK, "poll_scheduled", json!({"ok": true}))
        }
    }
}

fn ignored(outcome: &'static str) -> Response {
    answer(
        StatusCode::OK,
        outcome,
        json!({"ok": true, "ignored": true}),
    )
}

fn failed(e: &kiebot_store::StoreError) -> Response {
    tracing::error!(error = %e, "KIE callback: database error");
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "error",
        json!({"ok": false, "error": "temporarily unavailable"}),
    )
}

fn answer(status: StatusCode, outcome: &'static str, body: serde_json::Value) -> Response {
    metrics::counter!(KIE_CALLBACKS, "outcome" => outcome).increment(1);
    (status, Json(body)).into_response()
}
