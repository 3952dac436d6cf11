//! Tasks: ids, records, states and results, parsed from recordInfo replies
//! and callbacks.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use kiebot_domain::Credits;

use crate::error::KieError;

/// KIE's id of a task (`task_12345678`). Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// A task id from KIE's text; `None` for an empty or blank string.
    pub fn parse(s: &str) -> Option<TaskId> {
        let t = s.trim();
        (!t.is_empty()).then(|| TaskId(t.to_owned()))
    }

    /// The id as KIE spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What KIE knows about a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task.
    pub task_id: TaskId,
    /// The KIE model string, when the reply names it (callbacks may not).
    pub model: Option<String>,
    /// Where the task is.
    pub state: TaskState,
    /// What KIE billed for it (`creditsConsumed`), when the reply says: the
    /// cost truth for margin reports.
    pub credits_consumed: Option<Credits>,
    /// How long KIE took from accepting the task to finishing it, from its own
    /// clock (`completeTime - createTime`, else `costTime`), when it says.
    pub run_ms: Option<u64>,
}

/// The state of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Accepted, not yet queued.
    Waiting,
    /// In KIE's queue.
    Queuing,
    /// Being generated.
    Generating,
    /// Finished with a result.
    Success(TaskResult),
    /// Finished without a result.
    Fail {
        /// KIE's `failCode` (text; may be empty).
        code: String,
        /// KIE's `failMsg` (may be empty).
        message: String,
    },
}

impl TaskState {
    /// Whether the task has finished (success or fail).
    pub fn is_final(&self) -> bool {
        matches!(self, TaskState::Success(_) | TaskState::Fail { .. })
    }

    /// KIE's name of the state (`waiting`, ..., `success`, `fail`).
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Queuing => "queuing",
            TaskState::Generating => "generating",
            TaskState::Success(_) => "success",
            TaskState::Fail { .. } => "fail",
        }
    }
}

/// The result of a successful task, parsed from the `resultJson` string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskResult {
    /// `resultUrls`: the generated files (watermark-free where a model offers
    /// both).
    pub result_urls: Vec<String>,
    /// `resultWaterMarkUrls`: watermarked variants (Sora).
    pub watermark_urls: Vec<String>,
    /// A text result (speech-to-text): the first string under a text-like key
    /// (`text`, `transcript`, `transcription`, `resultText`), at the top level
    /// or one object down (`resultObject.text`).
    pub text: Option<String>,
    /// Every other key of `resultJson`, kept as data.
    pub extra: Map<String, Value>,
    /// Music tracks with their titles and covers (Suno: two per task).
    /// `result_urls` holds their audio URLs in the same order.
    pub tracks: Vec<Track>,
}

/// One generated music track.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Track {
    /// The audio file.
    pub audio_url: String,
    /// The cover picture.
    pub image_url: Option<String>,
    /// The title Suno gave it.
    pub title: Option<String>,
    /// Length in seconds.
    pub duration_secs: Option<f64>,
}

impl TaskResult {
    /// Whether there is nothing to deliver (no URL and no text).
    pub fn is_empty(&self) -> bool {
        self.result_urls.is_empty() && self.text.is_none()
    }
}

const TEXT_KEYS: [&str; 4] = ["text", "transcript", "transcription", "resultText"];

/// Parses a callback body: an envelope whose `data` has the fields of a
/// recordInfo reply.
///
/// A callback is only a hint that the task may have finished; anyone who
/// knows the URL can post one. Re-read the task with
/// [`KieClient::record_info`](crate::KieClient::record_info) before acting.
/// The envelope `code` is not checked: KIE reports failed tasks with a
/// non-200 code, and the `state` inside says the same.
///
/// The three families post three shapes, told apart by their keys: the
/// market's `data` is a recordInfo record (`state`); Veo's carries `info`
/// (and `code` 200 for success); Suno's carries `callbackType` (`text`,
/// `first`, `complete`, `error`) and `task_id`.
pub fn parse_callback(body: &[u8]) -> Result<TaskRecord, KieError> {
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|e| KieError::BadResponse(format!("callback is not JSON: {e}")))?;
    let data = envelope
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| KieError::BadResponse("callback has no data object".into()))?;
    let code = envelope.get("code").and_then(Value::as_i64).unwrap_or(200);
    let msg = envelope.get("msg").and_then(Value::as_str).unwrap_or("");
    if let Some(kind) = data.get("callbackType").and_then(Value::as_str) {
        let obj = data.as_object().expect("checked above");
        let task_id = task_id_of(obj)
            .ok_or_else(|| KieError::BadResponse("callback has no task id".into()))?;
        let state = match kind {
            "complete" => {
                let tracks = data
                    .get("data")
                    .and_then(Value::as_array)
                    .map(|l| suno_tracks(l))
                    .unwrap_or_default();
                TaskState::Success(TaskResult {
                    result_urls: tracks.iter().map(|t| t.audio_url.clone()).collect(),
                    tracks,
                    ..TaskResult::default()
                })
            }
            "error" => TaskState::Fail {
                code: code.to_string(),
                message: msg.to_owned(),
            },
            _ => TaskState::Generating,
        };
        return Ok(TaskRecord {
            task_id,
            model: None,
            state,
            credits_consumed: None,
            run_ms: None,
        });
    }
    if data.get("state").is_none() && (data.get("info").is_some() || code != 200) {
        let obj = data.as_object().expect("checked above");
        let task_id = task_id_of(obj)
            .ok_or_else(|| KieError::BadResponse("callback has no task id".into()))?;
        let urls = data
            .get("info")
            .and_then(|i| i.get("resultUrls"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let state = if code == 200 && !urls.is_empty() {
            TaskState::Success(TaskResult {
                result_urls: urls,
                ..TaskResult::default()
            })
        } else {
            TaskState::Fail {
                code: code.to_string(),
                message: msg.to_owned(),
            }
        };
        return Ok(TaskRecord {
            task_id,
            model: None,
            state,
            credits_consumed: None,
            run_ms: None,
        });
    }
    parse_record(data)
}

/// Parses the `data` of a recordInfo reply (or of a callback).
pub(crate) fn parse_record(data: &Value) -> Result<TaskRecord, KieError> {
    let bad = |m: &str| KieError::BadResponse(m.to_owned());
    let obj = data
        .as_object()
        .ok_or_else(|| bad("task record is not an object"))?;
    let task_id = obj
        .get("taskId")
        .and_then(Value::as_str)
        .and_then(TaskId::parse)
        .ok_or_else(|| bad("task record has no taskId"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    let state_name = obj
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("task record has no state"))?;
    let state = match state_name {
        "waiting" => TaskState::Waiting,
        "queuing" => TaskState::Queuing,
        "generating" => TaskState::Generating,
        "success" => TaskState::Success(parse_result(obj.get("resultJson"))?),
        "fail" => TaskState::Fail {
            code: text_of(obj.get("failCode")),
            message: text_of(obj.get("failMsg")),
        },
        other => {
            // Truncated: the value came from outside.
            let shown: String = other.chars().take(32).collect();
            return Err(KieError::BadResponse(format!(
                "unknown task state {shown:?}"
            )));
        }
    };
    Ok(TaskRecord {
        task_id,
        model,
        state,
        credits_consumed: credits_of(obj.get("creditsConsumed")),
        run_ms: run_ms_of(obj),
    })
}

/// `creditsConsumed`: a number of credits (or its text).
fn credits_of(v: Option<&Value>) -> Option<Credits> {
    let x = match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    (x.is_finite() && (0.0..1e12).contains(&x))
        .then(|| Credits::from_milli((x * 1000.0).round() as i64))
}

/// KIE's own run time: `completeTime - createTime` (unix milliseconds), else
/// `costTime` (milliseconds).
fn run_ms_of(obj: &Map<String, Value>) -> Option<u64> {
    let ms = |k: &str| obj.get(k).and_then(Value::as_u64).filter(|v| *v > 0);
    match (ms("createTime"), ms("completeTime")) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => ms("costTime"),
    }
}

/// Parses the `data` of a Veo 3.1 record (`/api/v1/veo/record-info`):
/// `successFlag` 0 running, 1 success (`response.resultUrls`), 2 and 3 failed
/// (`errorCode`, `errorMessage`).
pub(crate) fn parse_veo_record(data: &Value) -> Result<TaskRecord, KieError> {
    let bad = |m: &str| KieError::BadResponse(m.to_owned());
    let obj = data
        .as_object()
        .ok_or_else(|| bad("task record is not an object"))?;
    let task_id = task_id_of(obj).ok_or_else(|| bad("task record has no taskId"))?;
    let flag = match obj.get("successFlag") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad("Veo record has no successFlag"))?;
    let state = match flag {
        0 => TaskState::Generating,
        1 => {
            let response = obj.get("response").or_else(|| obj.get("info"));
            let mut map = response
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut urls = take_urls(&mut map, "resultUrls")?;
            if urls.is_empty() {
                urls = take_urls(&mut map, "originUrls")?;
            }
            if urls.is_empty() {
                return Err(bad("Veo reports success without resultUrls"));
            }
            TaskState::Success(TaskResult {
                result_urls: urls,
                extra: map,
                ..TaskResult::default()
            })
        }
        2 | 3 => TaskState::Fail {
            code: text_of(obj.get("errorCode")),
            message: text_of(obj.get("errorMessage")),
        },
        other => {
            return Err(KieError::BadResponse(format!(
                "unknown Veo successFlag {other}"
            )));
        }
    };
    Ok(TaskRecord {
        task_id,
        model: None,
        state,
        credits_consumed: credits_of(obj.get("creditsConsumed")),
        run_ms: None,
    })
}

/// Parses the `data` of a Suno record (`/api/v1/generate/record-info`):
/// `status` PENDING, TEXT_SUCCESS and FIRST_SUCCESS are still running; SUCCESS
/// carries the tracks in `response.sunoData` (camelCase) or `response.data`
/// (the callbacks' snake_case); the failure statuses end the task.
pub(crate) fn parse_suno_record(data: &Value) -> Result<TaskRecord, KieError> {
    let bad = |m: &str| KieError::BadResponse(m.to_owned());
    let obj = data
        .as_object()
        .ok_or_else(|| bad("task record is not an object"))?;
    let task_id = task_id_of(obj).ok_or_else(|| bad("task record has no taskId"))?;
    let status = obj
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Suno record has no status"))?;
    let tracks = || {
        let response = obj.get("response");
        let list = response
            .and_then(|r| r.get("sunoData").or_else(|| r.get("data")))
            .or_else(|| obj.get("data"))
            .and_then(Value::as_array);
        list.map(|l| suno_tracks(l)).unwrap_or_default()
    };
    let state = match status {
        "PENDING" | "TEXT_SUCCESS" | "FIRST_SUCCESS" => TaskState::Generating,
        "SUCCESS" => {
            let tracks = tracks();
            if tracks.is_empty() {
                return Err(bad("Suno reports success without tracks"));
            }
            TaskState::Success(TaskResult {
                result_urls: tracks.iter().map(|t| t.audio_url.clone()).collect(),
                tracks,
                ..TaskResult::default()
            })
        }
        "CREATE_TASK_FAILED"
        | "GENERATE_AUDIO_FAILED"
        | "CALLBACK_EXCEPTION"
        | "SENSITIVE_WORD_ERROR" => TaskState::Fail {
            code: status.to_ascii_lowercase(),
            message: text_of(obj.get("errorMessage")),
        },
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(KieError::BadResponse(format!(
                "unknown Suno status {shown:?}"
            )));
        }
    };
    Ok(TaskRecord {
        task_id,
        model: None,
        state,
        credits_consumed: credits_of(obj.get("creditsConsumed")),
        run_ms: None,
    })
}

fn suno_tracks(list: &[Value]) -> Vec<Track> {
    let text = |v: &Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    list.iter()
        .filter_map(|t| {
            Some(Track {
                audio_url: text(t, &["audioUrl", "audio_url"])?,
                image_url: text(t, &["imageUrl", "image_url"]),
                title: text(t, &["title"]),
                duration_secs: t.get("duration").and_then(Value::as_f64),
            })
        })
        .collect()
}

fn task_id_of(obj: &Map<String, Value>) -> Option<TaskId> {
    obj.get("taskId")
        .or_else(|| obj.get("task_id"))
        .and_then(Value::as_str)
        .and_then(TaskId::parse)
}

/// `failCode` is `""`, a string or a number depending on the model.
fn text_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Parses `resultJson`: a JSON string holding an object (an object in place of
/// the string is accepted too).
fn parse_result(raw: Option<&Value>) -> Result<TaskResult, KieError> {
    let bad = |m: String| KieError::BadResponse(m);
    let parsed: Value = match raw {
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| bad(format!("resultJson is not JSON: {e}")))?
        }
        Some(v @ Value::Object(_)) => v.clone(),
        None | Some(Value::Null) => return Err(bad("successful task has no resultJson".into())),
        Some(_) => return Err(bad("resultJson is neither a string nor an object".into())),
    };
    let Value::Object(mut map) = parsed else {
        return Err(bad("resultJson is not a JSON object".into()));
    };
    let result_urls = take_urls(&mut map, "resultUrls")?;
    let watermark_urls = take_urls(&mut map, "resultWaterMarkUrls")?;
    let text = find_text(&map);
    Ok(TaskResult {
        result_urls,
        watermark_urls,
        text,
        extra: map,
        tracks: Vec::new(),
    })
}

fn take_urls(map: &mut Map<String, Value>, key: &str) -> Result<Vec<String>, KieError> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(KieError::BadResponse(format!("{key} holds a non-string"))),
            })
            .collect(),
        Some(_) => Err(KieError::BadResponse(format!("{key} is not a list"))),
    }
}

fn find_text(map: &Map<String, Value>) -> Option<String> {
    let direct = |m: &Map<String, Value>| {
        TEXT_KEYS
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str).map(str::to_owned))
    };
    direct(map).or_else(|| map.values().filter_map(Value::as_object).find_map(direct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_json_inside_json_is_parsed_with_extras_kept() {
        let data = json!({
            "taskId": "task_1", "model": "sora-2-text-to-video", "state": "success",
            "resultJson": "{\"resultUrls\":[\"https://x/1.mp4\"],\"resultWaterMarkUrls\":[\"https://x/1w.mp4\"],\"seed\":7}",
            "failCode": "", "failMsg": ""
        });
        let record = parse_record(&data).unwrap();
        let TaskState::Success(result) = record.state else {
            panic!("not success")
        };
        assert_eq!(result.result_urls, vec!["https://x/1.mp4"]);
        assert_eq!(result.watermark_urls, vec!["https://x/1w.mp4"]);
        assert_eq!(result.extra.get("seed"), Some(&json!(7)));
        assert_eq!(result.text, None);
    }

    #[test]
    fn a_transcript_one_level_down_is_found() {
        let data = json!({
            "taskId": "task_2", "state": "success",
            "resultJson": "{\"resultObject\":{\"language_code\":\"ru\",\"text\":\"привет\"}}"
        });
        let TaskState::Success(result) = parse_record(&data).unwrap().state else {
            panic!("not success")
        };
        assert_eq!(result.text.as_deref(), Some("привет"));
        assert!(!result.is_empty());
    }

    #[test]
    fn fail_codes_may_be_numbers() {
        let data = json!({"taskId": "t", "state": "fail", "failCode": 500, "failMsg": "nsfw"});
        assert_eq!(
            parse_record(&data).unwrap().state,
            TaskState::Fail {
                code: "500".into(),
                message: "nsfw".into()
            }
        );
    }

    #[test]
    fn malformed_records_are_bad_responses() {
        for data in [
            json!({"state": "success", "resultJson": "{}"}),
            json!({"taskId": "t", "state": "exploded"}),
            json!({"taskId": "t", "state": "success", "resultJson": "{\"resultUrls\":[\"a\""}),
            json!({"taskId": "t", "state": "success"}),
            json!({"taskId": "t", "state": "success", "resultJson": "[1]"}),
            json!({"taskId": "t", "state": "success", "resultJson": "{\"resultUrls\":[1]}"}),
            json!("task_1"),
        ] {
            assert!(
                matches!(parse_record(&data), Err(KieError::BadResponse(_))),
                "{data}"
            );
        }
    }

    #[test]
    fn kie_s_own_run_time_and_cost_are_read() {
        let data = json!({"taskId": "t", "state": "generating", "createTime": 1000, "completeTime": 7500,
            "creditsConsumed": 12.5});
        let r = parse_record(&data).unwrap();
        assert_eq!(r.run_ms, Some(6500));
        assert_eq!(r.credits_consumed, Some(Credits::from_milli(12_500)));
        let only_cost = json!({"taskId": "t", "state": "generating", "costTime": 4200});
        assert_eq!(parse_record(&only_cost).unwrap().run_ms, Some(4200));
    }

    #[test]
    fn veo_records_follow_the_success_flag() {
        let running = json!({"taskId": "v", "successFlag": 0});
        assert_eq!(
            parse_veo_record(&running).unwrap().state,
            TaskState::Generating
        );
        let done = json!({"taskId": "v", "successFlag": 1,
            "response": {"resultUrls": ["https://x/1.mp4"], "resolution": "1080p"}});
        let TaskState::Success(r) = parse_veo_record(&done).unwrap().state else {
            panic!("not success")
        };
        assert_eq!(r.result_urls, ["https://x/1.mp4"]);
        assert_eq!(r.extra.get("resolution"), Some(&json!("1080p")));
        let failed =
            json!({"taskId": "v", "successFlag": 3, "errorCode": 400, "errorMessage": "flagged"});
        assert_eq!(
            parse_veo_record(&failed).unwrap().state,
            TaskState::Fail {
                code: "400".into(),
                message: "flagged".into()
            }
        );
        assert!(parse_veo_record(&json!({"taskId": "v", "successFlag": 9})).is_err());
        assert!(
            parse_veo_record(&json!({"taskId": "v", "successFlag": 1, "response": {}})).is_err()
        );
    }

    #[test]
    fn suno_records_carry_two_tracks_with_titles_and_covers() {
        let first = json!({"taskId": "s", "status": "FIRST_SUCCESS"});
        assert_eq!(
            parse_suno_record(&first).unwrap().state,
            TaskState::Generating
        );
        let done = json!({"taskId": "s", "status": "SUCCESS", "response": {"sunoData": [
            {"audioUrl": "https://x/a.mp3", "imageUrl": "https://x/a.jpg", "title": "One", "duration": 198.4},
            {"audioUrl": "https://x/b.mp3", "imageUrl": "https://x/b.jpg", "title": "Two"}]}});
        let TaskState::Success(r) = parse_suno_record(&done).unwrap().state else {
            panic!("not success")
        };
        assert_eq!(r.result_urls, ["https://x/a.mp3", "https://x/b.mp3"]);
        assert_eq!(r.tracks[0].title.as_deref(), Some("One"));
        assert_eq!(r.tracks[1].image_url.as_deref(), Some("https://x/b.jpg"));
        let bad = json!({"taskId": "s", "status": "SENSITIVE_WORD_ERROR", "errorMessage": "words"});
        assert!(matches!(
            parse_suno_record(&bad).unwrap().state,
            TaskState::Fail { .. }
        ));
        assert!(
            parse_suno_record(&json!({"taskId": "s", "status": "SUCCESS", "response": {}}))
                .is_err()
        );
    }

    #[test]
    fn each_family_s_callback_names_its_task() {
        let veo = br#"{"code":200,"msg":"ok","data":{"taskId":"v1","info":{"resultUrls":["https://x/v.mp4"]}}}"#;
        let r = parse_callback(veo).unwrap();
        assert_eq!(r.task_id.as_str(), "v1");
        assert!(matches!(r.state, TaskState::Success(_)));
        let veo_failed = br#"{"code":400,"msg":"flagged","data":{"taskId":"v2"}}"#;
        assert!(matches!(
            parse_callback(veo_failed).unwrap().state,
            TaskState::Fail { .. }
        ));
        let suno =
            br#"{"code":200,"msg":"ok","data":{"callbackType":"first","task_id":"s1","data":[]}}"#;
        let r = parse_callback(suno).unwrap();
        assert_eq!((r.task_id.as_str(), r.state.name()), ("s1", "generating"));
    }

    #[test]
    fn callbacks_need_a_data_object() {
        assert!(parse_callback(b"<html>").is_err());
        assert!(parse_callback(br#"{"code":200,"data":null}"#).is_err());
        let ok = parse_callback(br#"{"code":501,"msg":"x","data":{"taskId":"t","state":"fail","failCode":"","failMsg":"boom"}}"#).unwrap();
        assert_eq!(ok.task_id.as_str(), "t");
    }
}
