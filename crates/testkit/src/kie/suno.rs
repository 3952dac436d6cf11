//! Suno: `POST /api/v1/generate` (fields at the top level of the body) and
//! `GET /api/v1/generate/record-info` (`status`); two tracks per task, and
//! callbacks in stages (`text`, `first`, `complete`, or `error`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::state::{Family, FinalState, RecordView, SUNO_DONE, SUNO_FAILED, Shared};
use super::tasks::NewTask;
use super::util::{kie_datetime, numeric_code, success};
use super::veo::{one_of, typed};
use super::{BadReply, Endpoint};

/// Suno's model strings.
pub const MODELS: [&str; 6] = ["V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5"];
/// Tracks per task.
pub(super) const TRACKS: usize = 2;
/// The failure statuses a scripted `failCode` may name; any other code shows
/// as `GENERATE_AUDIO_FAILED`.
const FAIL_STATUSES: [&str; 4] = [
    "CREATE_TASK_FAILED",
    "GENERATE_AUDIO_FAILED",
    "CALLBACK_EXCEPTION",
    "SENSITIVE_WORD_ERROR",
];
/// Track lengths, seconds (the numbers of KIE's example).
const DURATIONS: [f64; TRACKS] = [198.44, 228.28];

fn required_bool(body: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match body.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        None | Some(Value::Null) => Err(format!("{key} is required")),
        Some(_) => Err(format!("{key} must be a boolean")),
    }
}

/// A text field within `max` characters; `required` says whether it must be
/// there (and not blank).
fn text(
    body: &Map<String, Value>,
    key: &str,
    required: bool,
    max: usize,
    why: &str,
) -> Result<(), String> {
    match body.get(key) {
        None | Some(Value::Null) if !required => Ok(()),
        None | Some(Value::Null) => Err(format!("{key} is required{why}")),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(format!("{key} is required{why}"))
        }
        Some(Value::String(s)) if s.chars().count() > max => {
            Err(format!("{key} is longer than {max} characters{why}"))
        }
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// Checks a generate request as KIE's page describes it; the error names the
/// field. Returns the model.
fn validate(body: &Map<String, Value>) -> Result<String, String> {
    let custom = required_bool(body, "customMode")?;
    let instrumental = required_bool(body, "instrumental")?;
    let model = one_of(body, "model", &MODELS)?.ok_or("model is required")?;
    match body.get("callBackUrl") {
        Some(Value::String(u)) if !u.trim().is_empty() => {}
        _ => return Err("callBackUrl is required".into()),
    }
    let v4 = model == "V4";
    if custom {
        let lyrics = if v4 { 3000 } else { 5000 };
        text(
            body,
            "prompt",
            !instrumental,
            lyrics,
            " (custom mode, with vocals)",
        )?;
        text(
            body,
            "style",
            true,
            if v4 { 200 } else { 1000 },
            " (custom mode)",
        )?;
        text(body, "title", true, 80, " (custom mode)")?;
    } else {
        text(body, "prompt", true, 500, " (non-custom mode)")?;
    }
    typed(body, "negativeTags", "string")?;
    typed(body, "personaId", "string")?;
    one_of(body, "vocalGender", &["m", "f"])?;
    one_of(body, "personaModel", &["style_persona", "voice_persona"])?;
    for key in ["styleWeight", "weirdnessConstraint", "audioWeight"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) => {}
            Some(_) => return Err(format!("{key} must be a number from 0 to 1")),
        }
    }
    Ok(model.to_owned())
}

pub(super) async fn generate(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bad = match shared.admit_api(Endpoint::SunoGenerate, &headers).await {
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
        .map(str::to_owned);
    let input = Value::Object(request);
    let param: Arc<str> = input.to_string().into();
    shared
        .create(NewTask {
            family: Family::Suno,
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
        .poll(Family::Suno, Endpoint::SunoRecordInfo, &headers, &query)
        .await
    {
        Ok((view, bad)) => success(record_json(&shared.base_url, &view, bad)),
        Err(reply) => reply,
    }
}

/// `chirp-v4`, `chirp-v4-5plus`, ...: the track's `modelName`.
fn chirp_name(model: &str) -> String {
    format!("chirp-{}", model.to_ascii_lowercase().replace('_', "-"))
}

/// Track `i` of a task at `stage` (1 text, 2 first, 3 complete): the text
/// and the stream exist from the text stage, the first track's files from
/// the first, the second's at the end. `snake` spells the keys as callbacks
/// do (`audio_url`), else as the record does (`audioUrl`).
fn track(base_url: &str, view: &RecordView, i: usize, stage: u8, snake: bool) -> Value {
    let input = &*view.input;
    let text = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or("");
    let custom = input.get("customMode").and_then(Value::as_bool) == Some(true);
    let instrumental = input.get("instrumental").and_then(Value::as_bool) == Some(true);
    let file = |name: String| format!("{base_url}/files/results/{}/{name}", view.id);
    let ready = stage >= SUNO_DONE || (stage == 2 && i == 0);
    let lyrics = match (custom, instrumental) {
        (_, true) => String::new(),
        (true, false) => text("prompt").to_owned(),
        (false, false) => format!("[Verse]\n{}", text("prompt")),
    };
    let title = if custom {
        text("title").to_owned()
    } else {
        format!("Song {} of {}", i + 1, view.id)
    };
    let fields: [(&str, &str, Value); 10] = [
        ("id", "id", json!(format!("{}-track-{i}", view.id))),
        (
            "audioUrl",
            "audio_url",
            json!(if ready {
                file(format!("{i}.mp3"))
            } else {
                String::new()
            }),
        ),
        (
            "streamAudioUrl",
            "stream_audio_url",
            json!(file(format!("stream-{i}.mp3"))),
        ),
        (
            "imageUrl",
            "image_url",
            json!(if ready {
                file(format!("cover-{i}.png"))
            } else {
                String::new()
            }),
        ),
        ("prompt", "prompt", json!(lyrics)),
        ("modelName", "model_name", json!(chirp_name(&view.model))),
        ("title", "title", json!(title)),
        (
            "tags",
            "tags",
            json!(if custom { text("style") } else { "" }),
        ),
        (
            "createTime",
            "createTime",
            json!(kie_datetime(view.create_time_ms)),
        ),
        (
            "duration",
            "duration",
            if ready {
                json!(DURATIONS[i])
            } else {
                Value::Null
            },
        ),
    ];
    let mut out = Map::new();
    for (camel, snake_key, value) in fields {
        out.insert(if snake { snake_key } else { camel }.to_owned(), value);
    }
    Value::Object(out)
}

fn tracks(base_url: &str, view: &RecordView, stage: u8, snake: bool) -> Vec<Value> {
    (0..TRACKS)
        .map(|i| track(base_url, view, i, stage, snake))
        .collect()
}

fn fail_status(code: &str) -> &'static str {
    FAIL_STATUSES
        .iter()
        .find(|s| **s == code)
        .copied()
        .unwrap_or("GENERATE_AUDIO_FAILED")
}

fn failure(view: &RecordView) -> Option<(&str, &str)> {
    match view.finished.as_ref().map(|f| &f.state) {
        Some(FinalState::Fail { code, msg }) => Some((code.as_str(), msg.as_str())),
        _ => None,
    }
}

/// The `data` of `/api/v1/generate/record-info`. `bad` bends it as scripted.
pub(super) fn record_json(base_url: &str, view: &RecordView, bad: Option<BadReply>) -> Value {
    let stage = view.suno_stage;
    let status = match (stage, failure(view)) {
        (_, Some((code, _))) => fail_status(code),
        (0, _) => "PENDING",
        (1, _) => "TEXT_SUCCESS",
        (2, _) => "FIRST_SUCCESS",
        _ => "SUCCESS",
    };
    let response = if (1..=SUNO_DONE).contains(&stage) {
        json!({"taskId": view.id, "sunoData": tracks(base_url, view, stage, false)})
    } else {
        Value::Null
    };
    let (error_code, error_message) = match failure(view) {
        Some((code, msg)) => (
            code.trim()
                .parse::<i64>()
                .ok()
                .map_or(Value::Null, Value::from),
            json!(msg),
        ),
        None => (Value::Null, Value::Null),
    };
    let mut data = json!({
        "taskId": view.id,
        "parentMusicId": "",
        "param": &*view.param,
        "response": response,
        "status": status,
        "type": "chirp-v4",
        "operationType": "generate",
        "errorCode": error_code,
        "errorMessage": error_message,
    });
    match bad {
        Some(BadReply::UnknownState) => data["status"] = json!("PAUSED"),
        Some(BadReply::ResultJsonNotJson) => {
            data["status"] = json!("SUCCESS");
            data["response"] = json!({"taskId": view.id, "sunoData": "oops"});
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

/// The callback for `stage` (1 `text`, 2 `first`, 3 `complete`, 4 `error`).
pub(super) fn callback_json(base_url: &str, view: &RecordView, stage: u8) -> Value {
    if stage == SUNO_FAILED {
        let (code, msg) = failure(view).unwrap_or(("", "Audio generation failed."));
        return json!({
            "code": numeric_code(code, 501),
            "msg": msg,
            "data": {"callbackType": "error", "task_id": view.id, "data": null},
        });
    }
    let (kind, msg) = match stage {
        1 => ("text", "Text generation completed successfully."),
        2 => ("first", "First track generated successfully."),
        _ => ("complete", "All generated successfully."),
    };
    json!({
        "code": 200,
        "msg": msg,
        "data": {
            "callbackType": kind,
            "task_id": view.id,
            "data": tracks(base_url, view, stage, true),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn custom_instrumental_needs_no_prompt_but_a_style_and_title() {
        let ok = body(
            json!({"customMode": true, "instrumental": true, "model": "V5",
            "callBackUrl": "http://x/cb", "style": "Jazz", "title": "T"}),
        );
        assert_eq!(validate(&ok).as_deref(), Ok("V5"));
        let mut no_title = ok.clone();
        no_title.remove("title");
        assert!(
            validate(&no_title)
                .unwrap_err()
                .starts_with("title is required")
        );
        let mut vocals = ok.clone();
        vocals.insert("instrumental".into(), json!(false));
        assert!(
            validate(&vocals)
                .unwrap_err()
                .starts_with("prompt is required")
        );
    }

    #[test]
    fn simple_mode_needs_a_short_prompt_and_every_mode_a_callback() {
        let ok = body(
            json!({"customMode": false, "instrumental": false, "model": "V4",
            "callBackUrl": "http://x/cb", "prompt": "a calm piano piece"}),
        );
        assert!(validate(&ok).is_ok());
        let mut long = ok.clone();
        long.insert("prompt".into(), json!("x".repeat(501)));
        assert!(
            validate(&long)
                .unwrap_err()
                .starts_with("prompt is longer than 500")
        );
        let mut no_cb = ok.clone();
        no_cb.remove("callBackUrl");
        assert_eq!(validate(&no_cb).unwrap_err(), "callBackUrl is required");
        let mut bad_model = ok.clone();
        bad_model.insert("model".into(), json!("V3_5"));
        assert!(
            validate(&bad_model)
                .unwrap_err()
                .starts_with("model must be one of")
        );
        let mut no_mode = ok;
        no_mode.remove("customMode");
        assert_eq!(validate(&no_mode).unwrap_err(), "customMode is required");
    }
}
