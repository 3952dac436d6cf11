//! The unified "market" API: `POST /api/v1/jobs/createTask`, `GET
//! /api/v1/jobs/recordInfo`, and the credit balance.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::state::{Family, FinalState, Finished, RecordView, Shared};
use super::tasks::NewTask;
use super::util::success;
use super::{BadReply, Endpoint};

pub(super) async fn create_task(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bad = match shared.admit_api(Endpoint::CreateTask, &headers).await {
        Ok(bad) => bad,
        Err(reply) => return reply,
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return shared.error(StatusCode::OK, 422, "Invalid JSON body");
    };
    let Some(model) = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
    else {
        return shared.error(StatusCode::OK, 422, "model is required");
    };
    let Some(input) = request.get("input").filter(|i| i.is_object()).cloned() else {
        return shared.error(StatusCode::OK, 422, "input is required");
    };
    if bad == Some(BadReply::MissingTaskId) {
        return success(json!({}));
    }
    let callback_url = request
        .get("callBackUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Built before taking the lock: serialising is the slow part.
    let param: Arc<str> = request.to_string().into();
    shared
        .create(NewTask {
            family: Family::Market,
            model,
            input,
            callback_url,
            param,
        })
        .await
}

pub(super) async fn record_info(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match shared
        .poll(Family::Market, Endpoint::RecordInfo, &headers, &query)
        .await
    {
        Ok((view, bad)) => success(record_json(&view, bad)),
        Err(reply) => reply,
    }
}

pub(super) async fn credit(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    if let Err(reply) = shared.admit_api(Endpoint::Credit, &headers).await {
        return reply;
    }
    let credits = shared.lock().credits;
    success(json!(credits))
}

/// A market callback's body: the record, under KIE's playground texts.
pub(super) fn callback_json(view: &RecordView) -> Value {
    let (code, msg) = match &view.finished {
        Some(Finished {
            state: FinalState::Fail { .. },
            ..
        }) => (501, "Playground task failed."),
        _ => (200, "Playground task completed successfully."),
    };
    json!({"code": code, "msg": msg, "data": record_json(view, None)})
}

/// The `data` of recordInfo and callbacks. `bad` bends it as scripted.
pub(super) fn record_json(view: &RecordView, bad: Option<BadReply>) -> Value {
    let (mut state, mut result_json, fail_code, fail_msg, complete_time, flag, credits) =
        match &view.finished {
            None => (
                view.state,
                String::new(),
                String::new(),
                String::new(),
                None,
                0,
                None,
            ),
            Some(f) => match &f.state {
                FinalState::Success { result_json, .. } => (
                    "success",
                    result_json.to_string(),
                    String::new(),
                    String::new(),
                    Some(f.complete_time_ms),
                    1,
                    Some(view.credits),
                ),
                FinalState::Fail { code, msg } => (
                    "fail",
                    String::new(),
                    code.clone(),
                    msg.clone(),
                    Some(f.complete_time_ms),
                    3,
                    Some(0.0),
                ),
            },
        };
    match bad {
        Some(BadReply::UnknownState) => state = "paused",
        Some(BadReply::ResultJsonNotJson) => {
            state = "success";
            result_json = "resultUrls: [oops".to_owned();
        }
        _ => {}
    }
    let mut data = json!({
        "taskId": view.id,
        "model": view.model,
        "state": state,
        "param": &*view.param,
        "resultJson": result_json,
        "failCode": fail_code,
        "failMsg": fail_msg,
        "costTime": complete_time.map(|c| c.saturating_sub(view.create_time_ms)),
        "completeTime": complete_time,
        "createTime": view.create_time_ms,
        "updateTime": complete_time.unwrap_or(view.create_time_ms),
        "successFlag": flag,
        "creditsConsumed": credits,
    });
    if bad == Some(BadReply::MissingTaskId)
        && let Some(obj) = data.as_object_mut()
    {
        obj.remove("taskId");
    }
    data
}
