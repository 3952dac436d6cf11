//! A fake KIE server: real HTTP on loopback, KIE's response shapes,
//! scriptable outcomes and faults.
//!
//! [`FakeKie::start`] binds `127.0.0.1:0` and serves, on one listener:
//!
//! | endpoint | what it does |
//! |---|---|
//! | `POST /api/v1/jobs/createTask` | creates `task_<n>` (or fails as scripted) |
//! | `GET /api/v1/jobs/recordInfo?taskId=` | the task's record; `resultJson` is a JSON string |
//! | `GET /api/v1/chat/credit` | the credit balance ([`FakeKie::set_credits`]) |
//! | `POST /api/file-stream-upload` | multipart `file`, `uploadPath`, `fileName` |
//! | `POST /api/file-url-upload` | fetches `fileUrl` and stores it |
//! | `POST /api/file-base64-upload` | decodes `base64Data` (a data URL or plain base64) |
//! | `GET /files/<path>` | result files (a real tiny PNG; small blobs served as `video/mp4`, `audio/mpeg`) and uploads |
//!
//! Every endpoint but `/files` checks `Authorization: Bearer <key>`
//! ([`FakeKie::api_key`]); a wrong or missing key gets KIE's
//! `{"code":401,"msg":"You do not have access permissions"}`.
//!
//! # Scripting
//! A task's fate is decided when it is created: the per-model [`Outcome`] if
//! one is set, else the default (succeed at once with one URL). It finishes
//! after a time or after a number of recordInfo polls ([`Finish`]). A task
//! with a `callBackUrl` is posted to it when it finishes
//! ([`CallbackMode`]: off, once, twice). Faults: [`FakeKie::fail_next_creates`]
//! (429/500/455 bursts), [`FakeKie::reject_creates_with`] (422, 402),
//! [`FakeKie::drop_next_create_replies`] (the task is created but the reply
//! never comes), [`FakeKie::bad_replies`] (malformed replies),
//! [`FakeKie::fail_next_polls`].
//!
//! # Speed
//! Zero latency by default. One mutex guards the state and is held only for
//! map updates; JSON is built outside it, and call counters are atomics, so a
//! benchmark can push thousands of tasks per second through it. The server
//! stops when the last clone of the handle is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The key the fake accepts.
const API_KEY: &str = "fake-kie-key-0123456789abcdef";

/// Largest upload the fake accepts (axum's default is 2 MiB).
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// When a task finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// At creation: the first recordInfo already shows the final state.
    Now,
    /// Once this much time has passed since creation.
    After(Duration),
    /// On this recordInfo poll (1 = the first poll shows the final state).
    Polls(u32),
}

/// What a task's result holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// Chosen from the model string: video for `sora`, `kling`, `wan/`,
    /// `hailuo` and anything with `video`; text for `speech-to-text`; audio
    /// for `suno`, `music`, `audio`, `tts`; an image otherwise.
    Auto,
    /// PNG images.
    Image,
    /// MP4 videos (Sora models also get watermarked variants).
    Video,
    /// MP3 audio.
    Audio,
    /// A transcript in `resultJson` (`resultObject.text`), no URLs.
    Text,
}

/// How a task ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success with `urls` result files.
    Succeed {
        /// When it finishes.
        when: Finish,
        /// How many result URLs.
        urls: usize,
        /// What the results are.
        media: Media,
    },
    /// Failure with KIE's `failCode` and `failMsg`.
    Fail {
        /// When it finishes.
        when: Finish,
        /// `failCode` (KIE sends text such as `"500"`).
        code: String,
        /// `failMsg`.
        msg: String,
    },
    /// Stays `generating` forever.
    Never,
}

impl Outcome {
    /// Succeeds at once with `urls` results of the model's media.
    pub fn succeed(urls: usize) -> Outcome {
        Outcome::Succeed {
            when: Finish::Now,
            urls,
            media: Media::Auto,
        }
    }

    /// Succeeds on the `polls`-th recordInfo.
    pub fn succeed_after_polls(polls: u32, urls: usize) -> Outcome {
        Outcome::Succeed {
            when: Finish::Polls(polls),
            urls,
            media: Media::Auto,
        }
    }

    /// Succeeds `after` creation.
    pub fn succeed_after(after: Duration, urls: usize) -> Outcome {
        Outcome::Succeed {
            when: Finish::After(after),
            urls,
            media: Media::Auto,
        }
    }

    /// Fails at once.
    pub fn fail(code: impl Into<String>, msg: impl Into<String>) -> Outcome {
        Outcome::Fail {
            when: Finish::Now,
            code: code.into(),
            msg: msg.into(),
        }
    }

    fn when(&self) -> Option<Finish> {
        match self {
            Outcome::Succeed { when, .. } | Outcome::Fail { when, .. } => Some(*when),
            Outcome::Never => None,
        }
    }
}

/// Malformed replies, for testing that the client fails cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// An HTML page with status 200 (a captive portal, a misrouted proxy), on
    /// every API endpoint.
    HtmlPage,
    /// An HTML error page with this status and no envelope (a gateway's 502),
    /// on every API endpoint.
    HtmlErrorPage(u16),
    /// JSON cut off in the middle, status 200, on every API endpoint.
    TruncatedJson,
    /// recordInfo answers with a state KIE never documented.
    UnknownState,
    /// createTask and recordInfo answer without `taskId` (no task is created).
    MissingTaskId,
    /// recordInfo answers `success` with a `resultJson` that is not JSON.
    ResultJsonNotJson,
}

/// Whether finished tasks are posted to their `callBackUrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackMode {
    /// Never.
    Off,
    /// Once (the default).
    Once,
    /// Twice, the same body: a duplicate delivery.
    Twice,
}

/// The fake's endpoints, for [`FakeKie::calls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /api/v1/jobs/createTask`.
    CreateTask,
    /// `GET /api/v1/jobs/recordInfo`.
    RecordInfo,
    /// `GET /api/v1/chat/credit`.
    Credit,
    /// `POST /api/file-stream-upload`.
    StreamUpload,
    /// `POST /api/file-url-upload`.
    UrlUpload,
    /// `POST /api/file-base64-upload`.
    Base64Upload,
    /// `GET /files/...`.
    Files,
}

impl Endpoint {
    const ALL: usize = 7;

    fn index(self) -> usize {
        self as usize
    }
}

/// A task as the fake sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    /// `task_<n>`.
    pub id: String,
    /// The `model` of the request.
    pub model: String,
    /// The `input` of the request.
    pub input: Value,
    /// The `callBackUrl` of the request.
    pub callback_url: Option<String>,
    /// KIE's state name as the last poll saw it (`waiting`, ..., `success`,
    /// `fail`).
    pub state: &'static str,
    /// recordInfo calls for this task so far.
    pub polls: u32,
    /// The result URLs, once succeeded.
    pub result_urls: Vec<String>,
}

/// A handle to a running fake KIE server. Clones share the server; it stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct FakeKie {
    shared: Arc<Shared>,
    _stop: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for FakeKie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKie")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    base_url: String,
    state: Mutex<State>,
    calls: [AtomicU64; Endpoint::ALL],
    created: AtomicU64,
    next_id: AtomicU64,
    callbacks_delivered: AtomicU64,
    callbacks_failed: AtomicU64,
    http: reqwest::Client,
    stopped: watch::Receiver<bool>,
}

struct State {
    latency: Duration,
    default_outcome: Outcome,
    model_outcomes: HashMap<String, Outcome>,
    fail_creates: Option<(u32, i64)>,
    reject_creates: Option<(i64, String)>,
    drop_create_replies: u32,
    fail_polls: Option<(u32, i64)>,
    bad_reply: Option<BadReply>,
    callbacks: CallbackMode,
    credits: f64,
    tasks: HashMap<String, Task>,
    files: HashMap<String, StoredFile>,
}

struct Task {
    model: String,
    input: Value,
    callback_url: Option<String>,
    /// The request as KIE echoes it in `param` (built outside the lock).
    param: Arc<str>,
    outcome: Outcome,
    created_at: Instant,
    create_time_ms: u64,
    polls: u32,
    finished: Option<Finished>,
}

#[derive(Clone)]
struct Finished {
    complete_time_ms: u64,
    state: FinalState,
}

#[derive(Clone)]
enum FinalState {
    Success {
        result_urls: Vec<String>,
        result_json: Arc<str>,
    },
    Fail {
        code: String,
        msg: String,
    },
}

#[derive(Clone)]
struct StoredFile {
    bytes: Bytes,
    mime: String,
}

/// What recordInfo and callbacks need, copied out of the lock.
struct RecordView {
    id: String,
    model: String,
    param: Arc<str>,
    state: &'static str,
    create_time_ms: u64,
    finished: Option<Finished>,
    callback_url: Option<String>,
}

impl FakeKie {
    /// Starts a fake on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine).
    pub async fn start() -> FakeKie {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port for the fake KIE");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            state: Mutex::new(State {
                latency: Duration::ZERO,
                default_outcome: Outcome::succeed(1),
                model_outcomes: HashMap::new(),
                fail_creates: None,
                reject_creates: None,
                drop_create_replies: 0,
                fail_polls: None,
                bad_reply: None,
                callbacks: CallbackMode::Once,
                credits: 1000.0,
                tasks: HashMap::new(),
                files: HashMap::new(),
            }),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            created: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            callbacks_delivered: AtomicU64::new(0),
            callbacks_failed: AtomicU64::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client for the fake KIE"),
            stopped: stop_rx.clone(),
        });
        let app = Router::new()
            .route("/api/v1/jobs/createTask", post(create_task))
            .route("/api/v1/jobs/recordInfo", get(record_info))
            .route("/api/v1/chat/credit", get(credit))
            .route("/api/file-stream-upload", post(stream_upload))
            .route("/api/file-url-upload", post(url_upload))
            .route("/api/file-base64-upload", post(base64_upload))
            .route("/files/{*path}", get(file))
            .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
            .with_state(shared.clone());
        let mut stop = stop_rx;
        tokio::spawn(async move {
            let shutdown = async move {
                // Resolves when the last handle drops the sender.
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        FakeKie {
            shared,
            _stop: Arc::new(stop_tx),
        }
    }

    /// `http://127.0.0.1:<port>`: the API base URL.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The upload base URL (the same listener).
    pub fn upload_base(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The API key the fake accepts.
    pub fn api_key(&self) -> &'static str {
        API_KEY
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Delay before every API reply (not `/files`).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// How tasks of models without an override end.
    pub fn set_default_outcome(&self, outcome: Outcome) {
        self.lock().default_outcome = outcome;
    }

    /// How tasks of `model` end.
    pub fn set_model_outcome(&self, model: &str, outcome: Outcome) {
        self.lock().model_outcomes.insert(model.to_owned(), outcome);
    }

    /// The next `n` createTask calls fail with `code` (429, 500, 455...), as
    /// both the HTTP status and the envelope code. No task is created.
    pub fn fail_next_creates(&self, n: u32, code: u16) {
        self.lock().fail_creates = (n > 0).then_some((n, i64::from(code)));
    }

    /// Every createTask from now on is rejected with `code` and `msg` in the
    /// envelope under HTTP 200, as KIE does for 422 and 402. No task is
    /// created. Undo with [`FakeKie::accept_creates`].
    pub fn reject_creates_with(&self, code: u16, msg: &str) {
        self.lock().reject_creates = Some((i64::from(code), msg.to_owned()));
    }

    /// Stops rejecting creates.
    pub fn accept_creates(&self) {
        self.lock().reject_creates = None;
    }

    /// The next `n` createTask calls create their task but never answer: the
    /// request hangs until the client gives up (the lost-reply case).
    pub fn drop_next_create_replies(&self, n: u32) {
        self.lock().drop_create_replies = n;
    }

    /// The next `n` recordInfo calls fail with `code` (HTTP status and
    /// envelope). Polls that fail do not count towards [`Finish::Polls`].
    pub fn fail_next_polls(&self, n: u32, code: u16) {
        self.lock().fail_polls = (n > 0).then_some((n, i64::from(code)));
    }

    /// Malformed replies from now on (see [`BadReply`] for which endpoints).
    /// Undo with [`FakeKie::good_replies`].
    pub fn bad_replies(&self, kind: BadReply) {
        self.lock().bad_reply = Some(kind);
    }

    /// Well-formed replies again.
    pub fn good_replies(&self) {
        self.lock().bad_reply = None;
    }

    /// Whether finished tasks are posted to their `callBackUrl`.
    pub fn set_callbacks(&self, mode: CallbackMode) {
        self.lock().callbacks = mode;
    }

    /// The balance `/api/v1/chat/credit` reports, in whole credits.
    pub fn set_credits(&self, credits: f64) {
        self.lock().credits = credits;
    }

    /// Posts a callback claiming `task_id` succeeded (with a result URL on the
    /// fake), whatever the task's real state: anyone who learns a callback URL
    /// can do this. Returns the receiver's HTTP status.
    pub async fn send_forged_callback(
        &self,
        url: &str,
        task_id: &str,
    ) -> Result<u16, reqwest::Error> {
        let result_json = json!({
            "resultUrls": [format!("{}/files/results/forged/0.png", self.shared.base_url)]
        })
        .to_string();
        let body = json!({
            "code": 200,
            "msg": "Playground task completed successfully.",
            "data": {
                "taskId": task_id, "model": "google/nano-banana", "state": "success",
                "param": "{}", "resultJson": result_json, "failCode": "", "failMsg": "",
                "costTime": 1, "completeTime": now_ms(), "createTime": now_ms()
            }
        });
        let response = self.shared.http.post(url).json(&body).send().await?;
        Ok(response.status().as_u16())
    }

    /// Every task created so far, in creation order.
    pub fn tasks(&self) -> Vec<TaskSnapshot> {
        let state = self.lock();
        let mut tasks: Vec<TaskSnapshot> = state
            .tasks
            .iter()
            .map(|(id, task)| snapshot(id, task))
            .collect();
        drop(state);
        tasks.sort_by_key(|t| task_number(&t.id));
        tasks
    }

    /// One task.
    pub fn task(&self, task_id: &str) -> Option<TaskSnapshot> {
        self.lock().tasks.get(task_id).map(|t| snapshot(task_id, t))
    }

    /// Tasks created so far (including those whose reply was dropped).
    pub fn created_count(&self) -> u64 {
        self.shared.created.load(Ordering::Relaxed)
    }

    /// Requests received by `endpoint` so far, whatever their outcome.
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.shared.calls[endpoint.index()].load(Ordering::Relaxed)
    }

    /// Callback posts answered with a 2xx status.
    pub fn callbacks_delivered(&self) -> u64 {
        self.shared.callbacks_delivered.load(Ordering::Relaxed)
    }

    /// Callback posts that failed (connection error or non-2xx status).
    pub fn callbacks_failed(&self) -> u64 {
        self.shared.callbacks_failed.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take every later test down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, endpoint: Endpoint) {
        self.calls[endpoint.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the call, waits the scripted latency, checks the key.
    async fn admit(&self, endpoint: Endpoint, headers: &HeaderMap) -> Result<(), Response> {
        self.count(endpoint);
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
            Err(envelope_error(
                StatusCode::UNAUTHORIZED,
                401,
                "You do not have access permissions",
            ))
        }
    }

    fn bad_reply(&self) -> Option<BadReply> {
        self.lock().bad_reply
    }

    /// Hangs until the fake stops.
    async fn hang(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }

    fn result_url(&self, task_id: &str, name: &str) -> String {
        format!("{}/files/results/{task_id}/{name}", self.base_url)
    }

    /// Decides a finished task's final state.
    fn finish(&self, id: &str, model: &str, outcome: &Outcome) -> Option<Finished> {
        let state = match outcome {
            Outcome::Never => return None,
            Outcome::Fail { code, msg, .. } => FinalState::Fail {
                code: code.clone(),
                msg: msg.clone(),
            },
            Outcome::Succeed { urls, media, .. } => {
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
                        .map(|i| self.result_url(id, &format!("{i}.{ext}")))
                        .collect();
                    let mut result = json!({ "resultUrls": urls });
                    if model.starts_with("sora") {
                        result["resultWaterMarkUrls"] = (0..urls.len())
                            .map(|i| self.result_url(id, &format!("{i}-watermark.{ext}")))
                            .collect();
                    }
                    (urls, result)
                };
                FinalState::Success {
                    result_urls,
                    result_json: result_json.to_string().into(),
                }
            }
        };
        Some(Finished {
            complete_time_ms: now_ms(),
            state,
        })
    }

    /// Posts a finished task to its callback URL, as scripted.
    fn spawn_callback(self: &Arc<Self>, view: RecordView) {
        let Some(url) = view.callback_url.clone() else {
            return;
        };
        let times = match self.lock().callbacks {
            CallbackMode::Off => return,
            CallbackMode::Once => 1,
            CallbackMode::Twice => 2,
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let (code, msg) = match &view.finished {
                Some(Finished {
                    state: FinalState::Fail { .. },
                    ..
                }) => (501, "Playground task failed."),
                _ => (200, "Playground task completed successfully."),
            };
            let body = json!({"code": code, "msg": msg, "data": record_json(&view, None)});
            for _ in 0..times {
                let ok = shared
                    .http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let counter = if ok {
                    &shared.callbacks_delivered
                } else {
                    &shared.callbacks_failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Finishes a time-based task when its time comes (only needed when
    /// someone waits for a callback; polls notice the time by themselves).
    fn spawn_timer(self: &Arc<Self>, id: String, after: Duration) {
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let view = {
                let mut state = shared.lock();
                let Some(task) = state.tasks.get_mut(&id) else {
                    return;
                };
                if task.finished.is_some() {
                    return;
                }
                task.finished = shared.finish(&id, &task.model, &task.outcome);
                view_of(&id, task)
            };
            shared.spawn_callback(view);
        });
    }
}

fn snapshot(id: &str, task: &Task) -> TaskSnapshot {
    TaskSnapshot {
        id: id.to_owned(),
        model: task.model.clone(),
        input: task.input.clone(),
        callback_url: task.callback_url.clone(),
        state: state_name(task),
        polls: task.polls,
        result_urls: match &task.finished {
            Some(Finished {
                state: FinalState::Success { result_urls, .. },
                ..
            }) => result_urls.clone(),
            _ => Vec::new(),
        },
    }
}

fn state_name(task: &Task) -> &'static str {
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

fn view_of(id: &str, task: &Task) -> RecordView {
    RecordView {
        id: id.to_owned(),
        model: task.model.clone(),
        param: task.param.clone(),
        state: state_name(task),
        create_time_ms: task.create_time_ms,
        finished: task.finished.clone(),
        callback_url: task.callback_url.clone(),
    }
}

/// The `data` of recordInfo and callbacks. `bad` bends it as scripted.
fn record_json(view: &RecordView, bad: Option<BadReply>) -> Value {
    let (mut state, mut result_json, fail_code, fail_msg, complete_time) = match &view.finished {
        None => (
            view.state,
            String::new(),
            String::new(),
            String::new(),
            None,
        ),
        Some(f) => match &f.state {
            FinalState::Success { result_json, .. } => (
                "success",
                result_json.to_string(),
                String::new(),
                String::new(),
                Some(f.complete_time_ms),
            ),
            FinalState::Fail { code, msg } => (
                "fail",
                String::new(),
                code.clone(),
                msg.clone(),
                Some(f.complete_time_ms),
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
    });
    if bad == Some(BadReply::MissingTaskId)
        && let Some(obj) = data.as_object_mut()
    {
        obj.remove("taskId");
    }
    data
}

fn media_of(model: &str) -> Media {
    let m = model.to_ascii_lowercase();
    if m.contains("speech-to-text") {
        Media::Text
    } else if m.contains("video")
        || m.starts_with("sora")
        || m.starts_with("kling")
        || m.starts_with("wan/")
        || m.starts_with("hailuo")
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

fn task_number(id: &str) -> u64 {
    id.strip_prefix("task_")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn json_reply(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn envelope_error(status: StatusCode, code: i64, msg: &str) -> Response {
    json_reply(status, &json!({"code": code, "msg": msg, "data": null}))
}

fn success(data: Value) -> Response {
    json_reply(
        StatusCode::OK,
        &json!({"code": 200, "msg": "success", "data": data}),
    )
}

fn message_for(code: i64) -> &'static str {
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

fn status_of(code: i64) -> StatusCode {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The generic malformed replies (HTML pages, truncated JSON).
fn generic_bad_reply(bad: Option<BadReply>) -> Option<Response> {
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

enum CreateDecision {
    Fail(i64),
    Reject(i64, String),
    Created {
        id: String,
        dropped: bool,
        /// Finish this task after a delay (someone waits for its callback).
        timer: Option<Duration>,
        /// The finished record (finished at creation).
        view: Option<RecordView>,
    },
}

async fn create_task(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = shared.admit(Endpoint::CreateTask, &headers).await {
        return denied;
    }
    let bad = shared.bad_reply();
    if let Some(reply) = generic_bad_reply(bad) {
        return reply;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return envelope_error(StatusCode::OK, 422, "Invalid JSON body");
    };
    let Some(model) = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
    else {
        return envelope_error(StatusCode::OK, 422, "model is required");
    };
    let Some(input) = request.get("input").filter(|i| i.is_object()).cloned() else {
        return envelope_error(StatusCode::OK, 422, "input is required");
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
    let number = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("task_{number}");
    let decision = {
        let mut state = shared.lock();
        if let Some((code, msg)) = state.reject_creates.clone() {
            CreateDecision::Reject(code, msg)
        } else if let Some((n, code)) = state.fail_creates {
            state.fail_creates = (n > 1).then_some((n - 1, code));
            CreateDecision::Fail(code)
        } else {
            let dropped = state.drop_create_replies > 0;
            if dropped {
                state.drop_create_replies -= 1;
            }
            let outcome = state
                .model_outcomes
                .get(&model)
                .unwrap_or(&state.default_outcome)
                .clone();
            let when = outcome.when();
            let timer = match when {
                Some(Finish::After(after))
                    if callback_url.is_some() && state.callbacks != CallbackMode::Off =>
                {
                    Some(after)
                }
                _ => None,
            };
            let finished = if when == Some(Finish::Now) || when == Some(Finish::Polls(0)) {
                shared.finish(&id, &model, &outcome)
            } else {
                None
            };
            let task = Task {
                model,
                input,
                callback_url,
                param,
                outcome,
                created_at: Instant::now(),
                create_time_ms: now_ms(),
                polls: 0,
                finished,
            };
            let view = task.finished.is_some().then(|| view_of(&id, &task));
            state.tasks.insert(id.clone(), task);
            shared.created.fetch_add(1, Ordering::Relaxed);
            CreateDecision::Created {
                id,
                dropped,
                timer,
                view,
            }
        }
    };
    match decision {
        CreateDecision::Reject(code, msg) => envelope_error(StatusCode::OK, code, &msg),
        CreateDecision::Fail(code) => envelope_error(status_of(code), code, message_for(code)),
        CreateDecision::Created {
            id,
            dropped,
            timer,
            view,
        } => {
            if let Some(view) = view {
                shared.spawn_callback(view);
            } else if let Some(after) = timer {
                shared.spawn_timer(id.clone(), after);
            }
            if dropped {
                shared.hang().await;
            }
            success(json!({ "taskId": id }))
        }
    }
}

async fn record_info(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = shared.admit(Endpoint::RecordInfo, &headers).await {
        return denied;
    }
    let bad = shared.bad_reply();
    if let Some(reply) = generic_bad_reply(bad) {
        return reply;
    }
    let Some(id) = query.get("taskId").filter(|t| !t.is_empty()) else {
        return envelope_error(StatusCode::OK, 422, "taskId is required");
    };
    let (view, just_finished) = {
        let mut state = shared.lock();
        if let Some((n, code)) = state.fail_polls {
            state.fail_polls = (n > 1).then_some((n - 1, code));
            drop(state);
            return envelope_error(status_of(code), code, message_for(code));
        }
        let Some(task) = state.tasks.get_mut(id.as_str()) else {
            drop(state);
            return envelope_error(StatusCode::OK, 404, "Task not found");
        };
        task.polls = task.polls.saturating_add(1);
        let due = match task.outcome.when() {
            _ if task.finished.is_some() => false,
            None => false,
            Some(Finish::Now) => true,
            Some(Finish::After(after)) => task.created_at.elapsed() >= after,
            Some(Finish::Polls(n)) => task.polls >= n,
        };
        if due {
            task.finished = shared.finish(id, &task.model, &task.outcome);
        }
        (view_of(id, task), due)
    };
    let data = record_json(&view, bad);
    if just_finished {
        shared.spawn_callback(view);
    }
    success(data)
}

async fn credit(AxumState(shared): AxumState<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(denied) = shared.admit(Endpoint::Credit, &headers).await {
        return denied;
    }
    if let Some(reply) = generic_bad_reply(shared.bad_reply()) {
        return reply;
    }
    let credits = shared.lock().credits;
    success(json!(credits))
}

/// Keeps `[A-Za-z0-9._-]`; anything else becomes `_` (names go into URLs).
fn safe_name(name: &str) -> String {
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

/// Stores an upload and answers with KIE's upload reply.
fn store_upload(
    shared: &Shared,
    upload_path: &str,
    file_name: &str,
    mime: &str,
    bytes: Bytes,
) -> Response {
    let number = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let dir = safe_name(upload_path);
    let name = safe_name(file_name);
    let key = format!("uploads/{dir}/{number}/{name}");
    let size = bytes.len();
    let mime = if mime.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        mime.to_owned()
    };
    shared.lock().files.insert(
        key.clone(),
        StoredFile {
            bytes,
            mime: mime.clone(),
        },
    );
    json_reply(
        StatusCode::OK,
        &json!({
            "success": true,
            "code": 200,
            "msg": "File uploaded successfully",
            "data": {
                "fileName": name,
                "filePath": format!("{dir}/{number}/{name}"),
                "downloadUrl": format!("{}/files/{key}", shared.base_url),
                "fileSize": size,
                "mimeType": mime,
                "uploadedAt": iso_now(),
            }
        }),
    )
}

fn upload_error(code: i64, msg: &str) -> Response {
    json_reply(
        StatusCode::OK,
        &json!({"success": false, "code": code, "msg": msg, "data": null}),
    )
}

async fn stream_upload(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    if let Err(denied) = shared.admit(Endpoint::StreamUpload, &headers).await {
        return denied;
    }
    if let Some(reply) = generic_bad_reply(shared.bad_reply()) {
        return reply;
    }
    let mut file: Option<(Bytes, String, String)> = None;
    let mut upload_path = String::new();
    let mut file_name: Option<String> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return upload_error(400, "Malformed multipart body"),
        };
        let name = field.name().unwrap_or("").to_owned();
        let part_file_name = field.file_name().unwrap_or("").to_owned();
        let mime = field.content_type().unwrap_or("").to_owned();
        let Ok(bytes) = field.bytes().await else {
            return upload_error(400, "Malformed multipart body");
        };
        match name.as_str() {
            "file" => file = Some((bytes, part_file_name, mime)),
            "uploadPath" => upload_path = String::from_utf8_lossy(&bytes).into_owned(),
            "fileName" => file_name = Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => {}
        }
    }
    let Some((bytes, part_file_name, mime)) = file else {
        return upload_error(400, "file is required");
    };
    if upload_path.is_empty() {
        return upload_error(400, "uploadPath is required");
    }
    let name = file_name
        .filter(|n| !n.is_empty())
        .unwrap_or(part_file_name);
    store_upload(&shared, &upload_path, &name, &mime, bytes)
}

async fn url_upload(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = shared.admit(Endpoint::UrlUpload, &headers).await {
        return denied;
    }
    if let Some(reply) = generic_bad_reply(shared.bad_reply()) {
        return reply;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return upload_error(400, "Invalid JSON body");
    };
    let text = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
    let (file_url, upload_path, file_name) =
        (text("fileUrl"), text("uploadPath"), text("fileName"));
    if file_url.is_empty() || upload_path.is_empty() {
        return upload_error(400, "fileUrl and uploadPath are required");
    }
    let fetched = async {
        let response = shared.http.get(file_url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mime = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.ok()?;
        Some((bytes, mime))
    }
    .await;
    let Some((bytes, mime)) = fetched else {
        return upload_error(400, "Failed to download the file from fileUrl");
    };
    let name = if file_name.is_empty() {
        file_url.rsplit('/').next().unwrap_or("file")
    } else {
        file_name
    };
    store_upload(&shared, upload_path, name, &mime, bytes)
}

async fn base64_upload(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = shared.admit(Endpoint::Base64Upload, &headers).await {
        return denied;
    }
    if let Some(reply) = generic_bad_reply(shared.bad_reply()) {
        return reply;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return upload_error(400, "Invalid JSON body");
    };
    let text = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
    let (data, upload_path, file_name) = (text("base64Data"), text("uploadPath"), text("fileName"));
    if data.is_empty() || upload_path.is_empty() {
        return upload_error(400, "base64Data and uploadPath are required");
    }
    // `data:image/png;base64,<payload>` or the bare payload.
    let (mime, payload) = match data.strip_prefix("data:").and_then(|d| d.split_once(',')) {
        Some((meta, payload)) => (meta.trim_end_matches(";base64"), payload),
        None => ("", data),
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload.trim()) else {
        return upload_error(400, "base64Data is not valid base64");
    };
    store_upload(&shared, upload_path, file_name, mime, Bytes::from(bytes))
}

async fn file(AxumState(shared): AxumState<Arc<Shared>>, Path(path): Path<String>) -> Response {
    shared.count(Endpoint::Files);
    if path.starts_with("results/") {
        let (mime, bytes): (&str, &'static [u8]) = if path.ends_with(".png") {
            ("image/png", TINY_PNG)
        } else if path.ends_with(".mp4") {
            ("video/mp4", TINY_MP4)
        } else if path.ends_with(".mp3") {
            ("audio/mpeg", TINY_MP3)
        } else {
            return StatusCode::NOT_FOUND.into_response();
        };
        return file_reply(mime, Bytes::from_static(bytes));
    }
    let stored = shared.lock().files.get(&path).cloned();
    match stored {
        Some(f) => file_reply(&f.mime, f.bytes),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn file_reply(mime: &str, bytes: Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    if let Ok(value) = HeaderValue::from_str(mime) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// `2025-09-11T10:02:44.490Z` for now, without a date library.
fn iso_now() -> String {
    let ms = now_ms();
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A valid 2x2 orange PNG.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xf8, 0xdf, 0xc0, 0x00,
    0x44, 0x0c, 0x10, 0x0a, 0x00, 0x2d, 0xee, 0x05, 0xfd, 0x63, 0x3e, 0xc1, 0x0b, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A small blob served as `video/mp4` (an `ftyp` box and an empty `mdat`; not
/// playable).
pub const TINY_MP4: &[u8] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41\x00\x00\x00\x08mdat";

/// A small blob served as `audio/mpeg` (an ID3 header and one silent-frame
/// header; not playable).
pub const TINY_MP3: &[u8] = b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00\x00\x00\x00";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_follows_the_model_string() {
        assert_eq!(media_of("google/nano-banana"), Media::Image);
        assert_eq!(media_of("sora-2-text-to-video"), Media::Video);
        assert_eq!(media_of("wan/2-2-animate-move"), Media::Video);
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
}
