//! Tasks: ids, records, states and results, parsed from recordInfo replies
//! and callbacks.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
pub fn parse_callback(body: &[u8]) -> Result<TaskRecord, KieError> {
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|e| KieError::BadResponse(format!("callback is not JSON: {e}")))?;
    let data = envelope
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| KieError::BadResponse("callback has no data object".into()))?;
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
    })
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
    fn callbacks_need_a_data_object() {
        assert!(parse_callback(b"<html>").is_err());
        assert!(parse_callback(br#"{"code":200,"data":null}"#).is_err());
        let ok = parse_callback(br#"{"code":501,"msg":"x","data":{"taskId":"t","state":"fail","failCode":"","failMsg":"boom"}}"#).unwrap();
        assert_eq!(ok.task_id.as_str(), "t");
    }
}
