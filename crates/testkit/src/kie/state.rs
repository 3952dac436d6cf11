//! The fake's state: tasks, files, scripting, limits and the admission steps
//! every endpoint shares.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::util::{generic_bad_reply, json_reply, media_of, message_for, status_of};
use super::{API_KEY, BadReply, CallbackMode, Endpoint, Finish, Media, Outcome};
use crate::kie_catalog::RecordedModel;

/// Which KIE API a task came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// `/api/v1/jobs/createTask`.
    Market,
    /// `/api/v1/veo/generate`.
    Veo,
    /// `/api/v1/generate`.
    Suno,
}

impl Family {
    pub(super) fn name(self) -> &'static str {
        match self {
            Family::Market => "market",
            Family::Veo => "veo",
            Family::Suno => "suno",
        }
    }
}

/// When a task finishes, fixed at creation (a [`Finish::Between`] is drawn
/// then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    Now,
    After(Duration),
    Polls(u32),
    Never,
}

impl Due {
    pub(super) fn of(outcome: &Outcome) -> Due {
        match outcome.when() {
            None => Due::Never,
            Some(Finish::Now | Finish::Polls(0)) => Due::Now,
            Some(Finish::After(after)) => Due::After(after),
            Some(Finish::Between(a, b)) => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                Due::After(if lo == hi {
                    lo
                } else {
                    rand::rng().random_range(lo..=hi)
                })
            }
            Some(Finish::Polls(n)) => Due::Polls(n),
        }
    }
}

pub(super) struct Shared {
    pub(super) base_url: String,
    /// Where market results are said to be (`None`: `base_url`).
    pub(super) result_base: Mutex<Option<String>>,
    pub(super) addr: SocketAddr,
    pub(super) state: Mutex<State>,
    pub(super) calls: [AtomicU64; Endpoint::ALL],
    pub(super) created: AtomicU64,
    pub(super) next_id: AtomicU64,
    pub(super) callbacks_delivered: AtomicU64,
    pub(super) callbacks_failed: AtomicU64,
    pub(super) rate_limited_creates: AtomicU64,
    pub(super) rate_limited_polls: AtomicU64,
    pub(super) without_json_content_type: AtomicU64,
    /// Error envelopes say `message` instead of `msg`.
    pub(super) error_text_message: AtomicBool,
    pub(super) http: reqwest::Client,
    pub(super) stopped: watch::Receiver<bool>,
}

pub(super) struct State {
    pub(super) latency: Duration,
    pub(super) default_outcome: Outcome,
    pub(super) model_outcomes: HashMap<String, Outcome>,
    pub(super) credits_consumed: HashMap<String, f64>,
    pub(super) fail_creates: Option<(u32, i64)>,
    pub(super) reject_creates: Option<(i64, String)>,
    pub(super) drop_create_replies: u32,
    pub(super) fail_polls: Option<(u32, i64)>,
    pub(super) bad_reply: Option<BadReply>,
    pub(super) callbacks: CallbackMode,
    pub(super) webhook_key: Option<String>,
    pub(super) credits: f64,
    pub(super) tasks: HashMap<String, Task>,
    pub(super) files: HashMap<String, StoredFile>,
    /// Callbacks waiting to be posted, in order, per task (Suno's stages).
    /// A task has an entry while a sender works through it.
    pub(super) outbox: HashMap<String, VecDeque<PendingCallback>>,
    pub(super) create_limit: Option<(u32, Duration)>,
    /// When each task was accepted, in order.
    pub(super) accepted_creates: Vec<Instant>,
    pub(super) poll_limit: Option<(u32, Duration)>,
    /// When each status request was admitted, in order.
    pub(super) polls: Vec<Instant>,
    /// What the catalogue endpoints serve; loaded on first use.
    pub(super) catalogue: Option<Vec<RecordedModel>>,
    pub(super) catalogue_min_interval: Option<Duration>,
    pub(super) catalogue_requests: Vec<Instant>,
    /// The next this many catalogue requests are refused for rate.
    pub(super) catalogue_refusals: u32,
    /// `/files/<path>` answered with a redirect to the value.
    pub(super) redirects: HashMap<String, String>,
    /// Result media served as this many zero bytes (with or without a
    /// `Content-Length`) instead of the tiny samples.
    pub(super) result_size: Option<(u64, bool)>,
    /// Paths of every `/files` request, in order.
    pub(super) file_requests: Vec<String>,
    /// Other host names under which the fake's files are KIE's (for
    /// download-url).
    pub(super) file_hosts: Vec<String>,
}

impl State {
    pub(super) fn new() -> State {
        State {
            latency: Duration::ZERO,
            redirects: HashMap::new(),
            result_size: None,
            file_requests: Vec::new(),
            file_hosts: Vec::new(),
            default_outcome: Outcome::succeed(1),
            model_outcomes: HashMap::new(),
            credits_consumed: HashMap::new(),
            fail_creates: None,
            reject_creates: None,
            drop_create_replies: 0,
            fail_polls: None,
            bad_reply: None,
            callbacks: CallbackMode::Once,
            webhook_key: None,
            credits: 1000.0,
            tasks: HashMap::new(),
            files: HashMap::new(),
            outbox: HashMap::new(),
            create_limit: None,
            accepted_creates: Vec::new(),
            poll_limit: None,
            polls: Vec::new(),
            catalogue: None,
            catalogue_min_interval: None,
            catalogue_requests: Vec::new(),
            catalogue_refusals: 0,
        }
    }
}

pub(super) struct Task {
    pub(super) family: Family,
    pub(super) model: String,
    /// The market's `input`; the whole body for Veo and Suno.
    pub(super) input: Arc<Value>,
    pub(super) callback_url: Option<String>,
    /// The request as KIE echoes it in `param` / `paramJson` (built outside
    /// the lock).
    pub(super) param: Arc<str>,
    pub(super) outcome: Outcome,
    pub(super) due: Due,
    pub(super) credits: f64,
    pub(super) created_at: Instant,
    pub(super) create_time_ms: u64,
    pub(super) polls: u32,
    pub(super) finished: Option<Finished>,
    pub(super) finished_at: Option<Instant>,
    /// Suno: the last stage whose callback was queued (see [`suno_stage`]).
    pub(super) stage_sent: u8,
}

#[derive(Clone)]
pub(super) struct Finished {
    pub(super) complete_time_ms: u64,
    pub(super) state: FinalState,
}

#[derive(Clone)]
pub(super) enum FinalState {
    Success {
        result_urls: Vec<String>,
        /// The market's `resultJson` (empty for Veo and Suno).
        result_json: Arc<str>,
    },
    Fail {
        code: String,
        msg: String,
    },
}

#[derive(Clone)]
pub(super) struct StoredFile {
    pub(super) bytes: Bytes,
    pub(super) mime: String,
}

pub(super) struct PendingCallback {
    pub(super) url: String,
    pub(super) body: Value,
    pub(super) times: u32,
}

/// Suno's progress: 0 `PENDING`, 1 `TEXT_SUCCESS`, 2 `FIRST_SUCCESS`,
/// 3 `SUCCESS`, 4 failed.
pub(super) const SUNO_FAILED: u8 = 4;
pub(super) const SUNO_DONE: u8 = 3;

/// Where a Suno task is at `now`. Running tasks move through a third of their
/// time (or polls) per stage; a task that will fail gets no further than the
/// text stage.
pub(super) fn suno_stage(task: &Task, now: Instant) -> u8 {
    match &task.finished {
        Some(Finished {
            state: FinalState::Success { .. },
            ..
        }) => SUNO_DONE,
        Some(Finished {
            state: FinalState::Fail { .. },
            ..
        }) => SUNO_FAILED,
        None => {
            let stage = match task.due {
                Due::After(run) => {
                    let elapsed = now
                        .saturating_duration_since(task.created_at)
                        .saturating_mul(3);
                    if elapsed >= run.saturating_mul(2) {
                        2
                    } else if elapsed >= run {
                        1
                    } else {
                        0
                    }
                }
                Due::Polls(n) => {
                    let (p, n) = (u64::from(task.polls) * 3, u64::from(n));
                    if p >= 2 * n {
                        2
                    } else if p >= n {
                        1
                    } else {
                        0
                    }
                }
                Due::Never => match task.polls {
                    0 | 1 => 0,
                    2 => 1,
                    _ => 2,
                },
                Due::Now => 0,
            };
            if matches!(task.outcome, Outcome::Fail { .. }) {
                stage.min(1)
            } else {
                stage
            }
        }
    }
}

/// What status replies and callbacks need, copied out of the lock.
#[derive(Clone)]
pub(super) struct RecordView {
    pub(super) id: String,
    pub(super) family: Family,
    pub(super) model: String,
    pub(super) param: Arc<str>,
    pub(super) input: Arc<Value>,
    pub(super) state: &'static str,
    pub(super) create_time_ms: u64,
    pub(super) finished: Option<Finished>,
    pub(super) callback_url: Option<String>,
    pub(super) credits: f64,
    pub(super) suno_stage: u8,
}

pub(super) fn state_name(task: &Task) -> &'static str {
    match &task.finished {
        Some(Finished {
            state: FinalState::Success { .. },
            ..
        }) => "success",
        Some(Finished {
            state: FinalState::Fail { .. },
            ..
        }) => "fail",
        None => match task.polls {
            0 | 1 => "waiting",
            2 => "queuing",
            _ => "generating",
        },
    }
}

pub(super) fn view_of(id: &str, task: &Task, now: Instant) -> RecordView {
    RecordView {
        id: id.to_owned(),
        family: task.family,
        model: task.model.clone(),
        param: task.param.clone(),
        input: task.input.clone(),
        state: state_name(task),
        create_time_ms: task.create_time_ms,
        finished: task.finished.clone(),
        callback_url: task.callback_url.clone(),
        credits: task.credits,
        suno_stage: if task.family == Family::Suno {
            suno_stage(task, now)
        } else {
            0
        },
    }
}

/// How many of the sorted `times` fall within `window` before `now`.
pub(super) fn in_window(times: &[Instant], now: Instant, window: Duration) -> usize {
    let old = times.partition_point(|t| now.saturating_duration_since(*t) >= window);
    times.len() - old
}

/// The most of the sorted `times` that fit in any window of this length.
pub(super) fn max_in_any_window(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut left = 0;
    for (right, t) in times.iter().enumerate() {
        while t.saturating_duration_since(times[left]) >= window {
            left += 1;
        }
        best = best.max(right + 1 - left);
    }
    best
}

/// The result of a task that is finishing.
pub(super) fn final_state(base_url: &str, id: &str, task: &Task) -> Option<FinalState> {
    let result_url = |name: &str| format!("{base_url}/files/results/{id}/{name}");
    match &task.outcome {
        Outcome::Never => None,
        Outcome::Fail { code, msg, .. } => Some(FinalState::Fail {
            code: code.clone(),
            msg: msg.clone(),
        }),
        Outcome::Succeed { urls, media, .. } => Some(match task.family {
            Family::Veo => FinalState::Success {
                result_urls: (0..*urls)
                    .map(|i| result_url(&format!("{i}.mp4")))
                    .collect(),
                result_json: "".into(),
            },
            Family::Suno => FinalState::Success {
                result_urls: (0..super::suno::TRACKS)
                    .map(|i| result_url(&format!("{i}.mp3")))
                    .collect(),
                result_json: "".into(),
            },
            Family::Market => {
                let model = task.model.as_str();
                let media = match media {
                    Media::Auto => media_of(model),
                    other => *other,
                };
                let ext = match media {
                    Media::Video => "mp4",
                    Media::Audio => "mp3",
                    _ => "png",
                };
                let (result_urls, result_json) = if media == Media::Text {
                    let text = format!("Fake transcript of {id}.");
                    (
                        Vec::new(),
                        json!({"resultObject": {"language_code": "ru", "text": text}}),
                    )
                } else {
                    let urls: Vec<String> = (0..*urls)
                        .map(|i| result_url(&format!("{i}.{ext}")))
                        .collect();
                    let mut result = json!({ "resultUrls": urls });
                    if model.starts_with("sora") {
                        result["resultWaterMarkUrls"] = (0..urls.len())
                            .map(|i| result_url(&format!("{i}-watermark.{ext}")))
                            .collect();
                    }
                    (urls, result)
                };
                FinalState::Success {
                    result_urls,
                    result_json: result_json.to_string().into(),
                }
            }
        }),
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take every later test down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn count(&self, endpoint: Endpoint) {
        self.calls[endpoint.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An error envelope, its text under `msg` or `message` as set.
    pub(super) fn error(&self, status: StatusCode, code: i64, msg: &str) -> Response {
        let key = if self.error_text_message.load(Ordering::Relaxed) {
            "message"
        } else {
            "msg"
        };
        let mut body = json!({"code": code, "data": null});
        body[key] = Value::String(msg.to_owned());
        json_reply(status, &body)
    }

    /// An error with KIE's text for `code`, as both status and envelope code.
    pub(super) fn fault(&self, code: i64) -> Response {
        self.error(status_of(code), code, message_for(code))
    }

    /// Counts the call (and a missing JSON content type), waits the scripted
    /// latency, checks the key.
    pub(super) async fn admit(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> Result<(), Response> {
        self.count(endpoint);
        if endpoint != Endpoint::StreamUpload {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                self.without_json_content_type
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let expected = format!("Bearer {API_KEY}");
        let authorized = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        if authorized {
            Ok(())
        } else {
            Err(self.error(
                StatusCode::UNAUTHORIZED,
                401,
                "You do not have access permissions",
            ))
        }
    }

    /// [`Shared::admit`], then the scripted malformed replies: the start of
    /// every API endpoint but the uploads.
    pub(super) async fn admit_api(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> Result<Option<BadReply>, Response> {
        self.admit(endpoint, headers).await?;
        let bad = self.bad_reply();
        match generic_bad_reply(bad) {
            Some(reply) => Err(reply),
            None => Ok(bad),
        }
    }

    /// Applies the poll limit to a status request and records it; `false`
    /// when the limit refuses it.
    pub(super) fn admit_poll(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some((n, window)) = state.poll_limit
            && in_window(&state.polls, now, window) >= n as usize
        {
            drop(state);
            self.rate_limited_polls.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        state.polls.push(now);
        true
    }

    pub(super) fn bad_reply(&self) -> Option<BadReply> {
        self.lock().bad_reply
    }

    /// Hangs until the fake stops.
    pub(super) async fn hang(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Finishes the task if its time has come (`now` is when the caller
    /// looked). Returns whether it finished just now.
    pub(super) fn settle(&self, id: &str, task: &mut Task, now: Instant) -> bool {
        if task.finished.is_some() {
            return false;
        }
        let at = match task.due {
            Due::Never => return false,
            Due::Now => task.created_at,
            Due::After(run) => match task.created_at.checked_add(run) {
                Some(at) if at <= now => at,
                _ => return false,
            },
            Due::Polls(n) => {
                if task.polls < n {
                    return false;
                }
                now
            }
        };
        let base = self
            .result_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| self.base_url.clone());
        let Some(state) = final_state(&base, id, task) else {
            return false;
        };
        let run_ms = u64::try_from(at.saturating_duration_since(task.created_at).as_millis())
            .unwrap_or(u64::MAX);
        task.finished = Some(Finished {
            complete_time_ms: task.create_time_ms.saturating_add(run_ms),
            state,
        });
        task.finished_at = Some(at);
        true
    }
}
