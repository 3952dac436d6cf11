//! Veo 3.1: `POST /api/v1/veo/generate` (fields at the top level of the
//! body) and `GET /api/v1/veo/record-info` (`successFlag`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::state::{Family, FinalState, RecordView, Shared};
use super::tasks::NewTask;
use super::util::{kie_datetime, numeric_code, success};
use super::{BadReply, Endpoint};

/// Veo's model strings.
pub const MODELS: [&str; 3] = ["veo3", "veo3_fast", "veo3_lite"];
/// The model KIE uses when a request names none.
pub const DEFAULT_MODEL: &str = "veo3_fast";
const GENERATION_TYPES: [&str; 3] = [
    "TEXT_2_VIDEO",
    "FIRST_AND_LAST_FRAMES_2_VIDEO",
    "REFERENCE_2_VIDEO",
];
const ASPECT_RATIOS: [&str; 3] = ["16:9", "9:16", "Auto"];
const RESOLUTIONS: [&str; 3] = ["720p", "1080p", "4k"];
const DURATIONS: [u64; 3] = [4, 6, 8];

/// A field that is present and not `null`.
fn field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

/// An optional text field limited to `allowed`.
pub(super) fn one_of<'a>(
    body: &'a Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, String> {
    match field(body, key) {
        None => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(_) => Err(format!("{key} must be one of {}", allowed.join(", "))),
    }
}

/// An optional field of a JSON type (`"string"`, `"boolean"`).
pub(super) fn typed(body: &Map<String, Value>, key: &str, kind: &str) -> Result<(), String> {
    let ok = match (field(body, key), kind) {
        (None, _) => true,
        (Some(v), "string") => v.is_string(),
        (Some(v), "boolean") => v.is_boolean(),
        (Some(v), "number") => v.is_number(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{key} must be a {kind}"))
    }
}

/// Checks a generate request as KIE's page describes it; the error names the
/// field. Returns the model.
fn validate(body: &Map<String, Value>) -> Result<String, String> {
    match field(body, "prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => {}
        Some(Value::String(_)) | None => return Err("prompt is required".into()),
        Some(_) => return Err("prompt must be a string".into()),
    }
    let model = one_of(body, "model", &MODELS)?.unwrap_or(DEFAULT_MODEL);
    let generation = one_of(body, "generationType", &GENERATION_TYPES)?;
    let images = match field(body, "imageUrls") {
        None => 0,
        Some(Value::Array(list))
            if list
                .iter()
                .all(|u| u.as_str().is_some_and(|s| !s.trim().is_empty())) =>
        {
            list.len()
        }
        Some(_) => return Err("imageUrls must be a list of image URLs".into()),
    };
    one_of(body, "aspectRatio", &ASPECT_RATIOS)?;
    one_of(body, "resolution", &RESOLUTIONS)?;
    let duration = match field(body, "duration") {
        None => None,
        Some(v) => match v.as_u64().filter(|d| DURATIONS.contains(d)) {
            Some(d) => Some(d),
            None => return Err("duration must be one of 4, 6, 8 (an integer)".into()),
        },
    };
    typed(body, "watermark", "string")?;
    typed(body, "callBackUrl", "string")?;
    typed(body, "enableTranslation", "boolean")?;
    typed(body, "enableFallback", "boolean")?;
    match generation {
        Some("FIRST_AND_LAST_FRAMES_2_VIDEO") if !(1..=2).contains(&images) => {
            return Err("imageUrls: FIRST_AND_LAST_FRAMES_2_VIDEO takes 1 or 2 images".into());
        }
        Some("REFERENCE_2_VIDEO") => {
            if model == "veo3" {
                return Err(
                    "generationType: REFERENCE_2_VIDEO is only for veo3_fast and veo3_lite".into(),
                );
            }
            if !(1..=3).contains(&images) {
                return Err("imageUrls: REFERENCE_2_VIDEO takes 1 to 3 images".into());
            }
            if duration.is_some_and(|d| d != 8) {
                return Err("duration: REFERENCE_2_VIDEO supports only 8 seconds".into());
            }
        }
        _ => {}
    }
    Ok(model.to_owned())
}

pub(super) async fn generate(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bad = match shared.admit_api(Endpoint::VeoGenerate, &headers).await {
        Ok(bad) => bad,
        Err(reply) => return reply,
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return shared.error(StatusCode::OK, 422, "Invalid JSON body");
    };
    let model = match validate(&request) {
        Ok(model) => model,
        Err(msg) => return shared.error(StatusCode::OK, 422, &msg),
    };
    if bad == Some(BadReply::MissingTaskId) {
        return success(json!({}));
    }
    let callback_url = request
        .get("callBackUrl")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    let input = Value::Object(request);
    let param: Arc<str> = input.to_string().into();
    shared
        .create(NewTask {
            family: Family::Veo,
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
        .poll(Family::Veo, Endpoint::VeoRecordInfo, &headers, &query)
        .await
    {
        Ok((view, bad)) => success(record_json(&shared.base_url, &view, bad)),
        Err(reply) => reply,
    }
}

fn text_field<'a>(view: &'a RecordView, key: &str) -> Option<&'a str> {
    view.input.get(key).and_then(Value::as_str)
}

/// `info` / `response`: the videos, the uncropped originals when the aspect
/// ratio is not 16:9, and the resolution.
fn result_info(base_url: &str, view: &RecordView, urls: &[String]) -> Value {
    let aspect = text_field(view, "aspectRatio").unwrap_or("16:9");
    let origin: Vec<String> = if aspect == "16:9" {
        Vec::new()
    } else {
        (0..urls.len())
            .map(|i| format!("{base_url}/files/results/{}/origin-{i}.mp4", view.id))
            .collect()
    };
    json!({
        "resultUrls": urls,
        "originUrls": origin,
        "resolution": text_field(view, "resolution").unwrap_or("720p"),
    })
}

/// The `data` of `/api/v1/veo/record-info`. `bad` bends it as scripted.
pub(super) fn record_json(base_url: &str, view: &RecordView, bad: Option<BadReply>) -> Value {
    let mut data = json!({
        "taskId": view.id,
        "paramJson": &*view.param,
        "completeTime": null,
        "response": null,
        "successFlag": 0,
        "errorCode": null,
        "errorMessage": "",
        "createTime": kie_datetime(view.create_time_ms),
        "fallbackFlag": false,
    });
    if let Some(f) = &view.finished {
        data["completeTime"] = json!(kie_datetime(f.complete_time_ms));
        match &f.state {
            FinalState::Success { result_urls, .. } => {
                let mut response = result_info(base_url, view, result_urls);
                response["taskId"] = json!(view.id);
                data["response"] = response;
                data["successFlag"] = json!(1);
            }
            FinalState::Fail { code, msg } => {
                data["successFlag"] = json!(3);
                data["errorCode"] = json!(numeric_code(code, 501));
                data["errorMessage"] = json!(msg);
            }
        }
    }
    match bad {
        Some(BadReply::UnknownState) => data["successFlag"] = json!(7),
        Some(BadReply::ResultJsonNotJson) => {
            data["successFlag"] = json!(1);
            data["response"] = json!({"taskId": view.id, "resultUrls": 7});
        }
        Some(BadReply::MissingTaskId) => {
            if let Some(obj) = data.as_object_mut() {
                obj.remove("taskId");
            }
        }
        _ => {}
    }
    data
}

/// A Veo callback's body: `info` on success; the failure code and message in
/// the envelope otherwise.
pub(super) fn callback_json(base_url: &str, view: &RecordView) -> Value {
    match view.finished.as_ref().map(|f| &f.state) {
        Some(FinalState::Fail { code, msg }) => json!({
            "code": numeric_code(code, 501),
            "msg": msg,
            "data": {"taskId": view.id, "fallbackFlag": false},
        }),
        Some(FinalState::Success { result_urls, .. }) => json!({
            "code": 200,
            "msg": "Veo3.1 video generated successfully.",
            "data": {
                "taskId": view.id,
                "promptJson": &*view.param,
                "info": result_info(base_url, view, result_urls),
                "fallbackFlag": false,
            },
        }),
        None => json!({
            "code": 500,
            "msg": "Internal error",
            "data": {"taskId": view.id, "fallbackFlag": false},
        }),
    }
}
