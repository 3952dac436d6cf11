//! KIE's model catalogue: `GET /api/v1/models`, `/api/v1/models/<model>/schema`
//! and `/api/v1/models/<model>/price`, served from the recorded fixtures
//! ([`crate::kie_catalog`]) as a test edits them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::Endpoint;
use super::state::{Shared, State};
use super::util::success;
use crate::kie_catalog::{RecordedModel, recorded};

/// The fixtures, parsed once per process.
fn fixtures() -> &'static [RecordedModel] {
    static RECORDED: OnceLock<Vec<RecordedModel>> = OnceLock::new();
    RECORDED.get_or_init(recorded)
}

impl State {
    /// What the catalogue serves (the fixtures until a test edits them).
    pub(super) fn catalogue(&mut self) -> &mut Vec<RecordedModel> {
        self.catalogue.get_or_insert_with(|| fixtures().to_vec())
    }
}

impl Shared {
    /// Admission for a catalogue request: the usual checks, then the pacing
    /// KIE enforces (one request a second; here the set minimum interval
    /// since the previous catalogue request, answered or not).
    async fn admit_catalogue(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> Result<(), Response> {
        self.admit_api(endpoint, headers).await?;
        let mut state = self.lock();
        let now = Instant::now();
        let too_soon = match (
            state.catalogue_min_interval,
            state.catalogue_requests.last(),
        ) {
            (Some(min), Some(last)) => now.saturating_duration_since(*last) < min,
            _ => false,
        } || state.catalogue_refusals > 0;
        state.catalogue_refusals = state.catalogue_refusals.saturating_sub(1);
        state.catalogue_requests.push(now);
        drop(state);
        if too_soon {
            Err(self.fault(429))
        } else {
            Ok(())
        }
    }
}

fn matches(m: &RecordedModel, query: &HashMap<String, String>) -> bool {
    let given = |k: &str| query.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(q) = given("q") {
        let q = q.to_ascii_lowercase();
        if ![&m.model, &m.provider, &m.pricing_desc]
            .iter()
            .any(|t| t.to_ascii_lowercase().contains(&q))
        {
            return false;
        }
    }
    if let Some(p) = given("provider")
        && !m.provider.eq_ignore_ascii_case(p)
    {
        return false;
    }
    if let Some(t) = given("taskType")
        && !m.task_types.iter().any(|x| x.eq_ignore_ascii_case(t))
    {
        return false;
    }
    true
}

/// `GET /api/v1/models[?q=&provider=&taskType=]`.
pub(super) async fn list(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(reply) = shared.admit_catalogue(Endpoint::Models, &headers).await {
        return reply;
    }
    let models: Vec<Value> = shared
        .lock()
        .catalogue()
        .iter()
        .filter(|m| matches(m, &query))
        .map(RecordedModel::listing)
        .collect();
    success(json!({"total": models.len(), "models": models}))
}

/// `GET /api/v1/models/<model>/schema` and `.../price`; the model id may hold
/// slashes.
pub(super) async fn detail(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Response {
    let (model, what) = rest.rsplit_once('/').unwrap_or(("", rest.as_str()));
    let endpoint = match what {
        "schema" => Endpoint::ModelSchema,
        "price" => Endpoint::ModelPrice,
        _ => Endpoint::Models,
    };
    if let Err(reply) = shared.admit_catalogue(endpoint, &headers).await {
        return reply;
    }
    if endpoint == Endpoint::Models || model.is_empty() {
        return shared.error(StatusCode::OK, 404, "Not found");
    }
    let found = shared
        .lock()
        .catalogue()
        .iter()
        .find(|m| m.model == model)
        .cloned();
    let Some(m) = found else {
        return shared.error(StatusCode::OK, 404, &format!("Model {model} not found"));
    };
    match endpoint {
        Endpoint::ModelPrice => success(json!({"model": m.model, "pricingDesc": m.pricing_desc})),
        _ => success(json!({"model": m.model, "openapi": m.openapi()})),
    }
}
