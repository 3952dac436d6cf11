//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP: restart me if this
//! fails. `/readyz` also checks the database and the queue: send me work
//! only if this succeeds. The readiness body names what failed but not why
//! (the probe is unauthenticated, and a driver's error can name hosts); the
//! reason goes to the log.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use crate::OpsState;

/// How long one readiness check may take before it counts as failed: a
/// database that takes longer is as good as down for a request.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /healthz`: 200 `ok`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The readiness answer.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Both checks passed.
    pub ready: bool,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// `ok` or `unavailable`.
    pub queue: &'static str,
    /// The names of the failed checks (`database`, `queue`).
    pub failed: Vec<&'static str>,
}

/// `GET /readyz`: 200 when the database and the queue answer, 503 naming
/// the ones that did not.
pub async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let (db, queue) = tokio::join!(
        check("database", state.store.ping()),
        check("queue", state.queues.ping()),
    );
    let mut failed = Vec::new();
    if !db {
        failed.push("database");
    }
    if !queue {
        failed.push("queue");
    }
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = Readiness {
        ready: failed.is_empty(),
        database: word(db),
        queue: word(queue),
        failed,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn check<E: std::fmt::Display>(
    what: &'static str,
    probe: impl Future<Output = Result<(), E>>,
) -> bool {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(check = what, error = %e, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(
                check = what,
                timeout_ms = CHECK_TIMEOUT.as_millis() as u64,
                "readiness check timed out"
            );
            false
        }
    }
}
