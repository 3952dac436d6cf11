//! Reply builders, clocks and small helpers shared by the fake's endpoints.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{BadReply, Media};

pub(super) fn json_reply(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"code":200,"msg":"success","data":...}`.
pub(super) fn success(data: Value) -> Response {
    json_reply(
        StatusCode::OK,
        &json!({"code": 200, "msg": "success", "data": data}),
    )
}

pub(super) fn message_for(code: i64) -> &'static str {
    match code {
        401 => "You do not have access permissions",
        402 => "The current credits are insufficient. Please top up.",
        404 => "Not found",
        422 => "Validation error",
        429 => "Rate limited: too many requests, please try again later",
        455 => "Service unavailable: the system is under maintenance",
        500 => "Server error, please try again later",
        501 => "Generation failed",
        505 => "Feature disabled",
        _ => "Error",
    }
}

pub(super) fn status_of(code: i64) -> StatusCode {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The generic malformed replies (HTML pages, truncated JSON).
pub(super) fn generic_bad_reply(bad: Option<BadReply>) -> Option<Response> {
    match bad? {
        BadReply::HtmlPage => Some(html(
            StatusCode::OK,
            "<!DOCTYPE html><html><head><title>Welcome</title></head><body>Please sign in to the network.</body></html>",
        )),
        BadReply::HtmlErrorPage(status) => Some(html(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        )),
        BadReply::TruncatedJson => {
            let mut response = (
                StatusCode::OK,
                r#"{"code":200,"msg":"success","data":{"taskId":"task_"#,
            )
                .into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Some(response)
        }
        BadReply::UnknownState | BadReply::MissingTaskId | BadReply::ResultJsonNotJson => None,
    }
}

fn html(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Keeps `[A-Za-z0-9._-]`; anything else becomes `_` (names go into URLs).
pub(super) fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('.');
    if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}

pub(super) fn media_of(model: &str) -> Media {
    let m = model.to_ascii_lowercase();
    if m.contains("speech-to-text") {
        Media::Text
    } else if m.contains("video")
        || m.starts_with("sora")
        || m.starts_with("kling")
        || m.starts_with("wan/")
        || m.starts_with("hailuo")
        || m.starts_with("veo")
    {
        Media::Video
    } else if ["suno", "music", "audio", "tts"]
        .iter()
        .any(|k| m.contains(k))
    {
        Media::Audio
    } else {
        Media::Image
    }
}

pub(super) fn task_number(id: &str) -> u64 {
    id.strip_prefix("task_")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A UTC calendar time, without a date library.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: u64,
    minute: u64,
    second: u64,
    milli: u64,
}

fn civil(ms: u64) -> Civil {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        milli: ms % 1000,
    }
}

/// `2025-09-11T10:02:44.490Z` for now (the upload replies' format).
pub(super) fn iso_now() -> String {
    let c = civil(now_ms());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
    )
}

/// `2025-06-06 10:30:00` (UTC): how the Veo and Suno records write times.
pub(super) fn kie_datetime(ms: u64) -> String {
    let c = civil(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// The integer form of a scripted failure code (`"400"` -> 400); `fallback`
/// when it is not a number or not an error code.
pub(super) fn numeric_code(code: &str, fallback: i64) -> i64 {
    code.trim()
        .parse::<i64>()
        .ok()
        .filter(|c| (400..600).contains(c))
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_follows_the_model_string() {
        assert_eq!(media_of("google/nano-banana"), Media::Image);
        assert_eq!(media_of("sora-2-text-to-video"), Media::Video);
        assert_eq!(media_of("wan/2-2-animate-move"), Media::Video);
        assert_eq!(media_of("veo3_fast"), Media::Video);
        assert_eq!(media_of("elevenlabs/speech-to-text"), Media::Text);
        assert_eq!(media_of("suno/v4"), Media::Audio);
    }

    #[test]
    fn upload_names_are_made_url_safe() {
        assert_eq!(safe_name("my photo (1).png"), "my_photo__1_.png");
        assert_eq!(safe_name("../.."), "_");
        assert_eq!(safe_name(""), "file");
    }

    #[test]
    fn iso_timestamps_look_like_kie_ones() {
        let s = iso_now();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }

    #[test]
    fn record_times_are_calendar_times() {
        assert_eq!(kie_datetime(0), "1970-01-01 00:00:00");
        // 2025-06-06 10:30:00 UTC.
        assert_eq!(kie_datetime(1_749_205_800_000), "2025-06-06 10:30:00");
        // A leap day.
        assert_eq!(kie_datetime(1_709_164_800_000), "2024-02-29 00:00:00");
    }

    #[test]
    fn failure_codes_become_numbers_when_they_can() {
        assert_eq!(numeric_code("400", 501), 400);
        assert_eq!(numeric_code("nsfw", 501), 501);
        assert_eq!(numeric_code("200", 501), 501);
    }
}
