//! A fake KIE server: real HTTP on loopback, KIE's response shapes,
//! scriptable outcomes, faults and limits.
//!
//! [`FakeKie::start`] binds `127.0.0.1:0` and serves, on one listener:
//!
//! | endpoint | what it does |
//! |---|---|
//! | `POST /api/v1/jobs/createTask` | market: creates `task_<n>` (or fails as scripted) |
//! | `GET /api/v1/jobs/recordInfo?taskId=` | market: the task's record (`state`; `resultJson` is a JSON string) |
//! | `POST /api/v1/veo/generate` | Veo 3.1: checks the body (422 naming the field), creates `task_<n>` |
//! | `GET /api/v1/veo/record-info?taskId=` | Veo: `successFlag` 0/1/3, `response.resultUrls` |
//! | `POST /api/v1/generate` | Suno: checks the body (422 naming the field; `callBackUrl` required), creates `task_<n>` |
//! | `GET /api/v1/generate/record-info?taskId=` | Suno: `status` `PENDING` .. `SUCCESS`, two tracks in `response.sunoData` |
//! | `GET /api/v1/chat/credit` | the credit balance ([`FakeKie::set_credits`]) |
//! | `GET /api/v1/models[?q=&provider=&taskType=]` | the catalogue: `{total, models: [listing]}` |
//! | `GET /api/v1/models/<model>/schema` | `{model, openapi}` (the id may hold slashes; unknown: code 404) |
//! | `GET /api/v1/models/<model>/price` | `{model, pricingDesc}` |
//! | `POST /api/v1/common/download-url` | `{"url"}` of a file on the fake: a fresh direct link; other hosts 422 |
//! | `POST /api/file-stream-upload` | multipart `file`, `uploadPath`, `fileName` |
//! | `POST /api/file-url-upload` | fetches `fileUrl` and stores it |
//! | `POST /api/file-base64-upload` | decodes `base64Data` (a data URL or plain base64) |
//! | `GET /files/<path>` | result files (a real tiny PNG, covers included; small blobs served as `video/mp4`, `audio/mpeg`; or zeros of a set size, [`FakeKie::set_result_size`]), uploads, and scripted redirects ([`FakeKie::redirect_file`]) |
//!
//! Every endpoint but `/files` checks `Authorization: Bearer <key>`
//! ([`FakeKie::api_key`]); a wrong or missing key gets KIE's
//! `{"code":401,"msg":"You do not have access permissions"}`. Error
//! envelopes put their text under `msg`, or `message`
//! ([`FakeKie::set_error_text_key`]). Requests other than multipart uploads
//! that lack `Content-Type: application/json` are counted
//! ([`FakeKie::requests_without_json_content_type`]).
//!
//! # Families
//! Market, Veo and Suno tasks share one id space (`task_<n>`) and one
//! scripting, but a task is found only through its own family's status
//! endpoint (another family's answers 404 `Task not found`). Veo and Suno
//! check their bodies as KIE's pages describe them. Suno tasks always make
//! two tracks and pass `PENDING`, `TEXT_SUCCESS`, `FIRST_SUCCESS` (a third
//! of their run or polls each) before `SUCCESS`; their callbacks come in the
//! same stages: `text`, `first`, `complete` (or `error`).
//!
//! # Scripting
//! A task's fate is decided when it is created: the per-model [`Outcome`]
//! (keyed by the request's `model`: `google/nano-banana`, `veo3_fast`, `V5`)
//! if one is set, else the default (succeed at once with one URL). It
//! finishes after a time, a time drawn from a range, or a number of status
//! polls ([`Finish`]). A task with a `callBackUrl` is posted to it when it
//! finishes ([`CallbackMode`]: off, once, twice), signed when a webhook key
//! is set ([`FakeKie::set_webhook_hmac_key`]). Faults, for every family:
//! [`FakeKie::fail_next_creates`] (429/500/455 bursts),
//! [`FakeKie::reject_creates_with`] (422, 402),
//! [`FakeKie::drop_next_create_replies`] (the task is created but the reply
//! never comes), [`FakeKie::bad_replies`] (malformed replies),
//! [`FakeKie::fail_next_polls`].
//!
//! # Limits
//! None by default. [`FakeKie::set_create_limit`] caps accepted creates (all
//! families) in a sliding window, as KIE's 20 per 10 s;
//! [`FakeKie::set_poll_limit`] caps status requests, as KIE's 10 per second;
//! [`FakeKie::set_catalogue_min_interval`] spaces catalogue requests, as
//! KIE's one per second. Refusals are HTTP 429 with envelope code 429. The
//! times of accepted creates, polls and catalogue requests are kept for
//! checks.
//!
//! # Speed
//! Zero latency by default. One mutex guards the state and is held only for
//! map updates; JSON is built outside it, and call counters are atomics, so a
//! benchmark can push thousands of tasks per second through it. The server
//! stops when the last clone of the handle is dropped.

mod callbacks;
mod catalogue;
mod files;
mod market;
mod state;
mod suno;
mod tasks;
mod util;
mod veo;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

pub use callbacks::{SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature};

use crate::kie_catalog::RecordedModel;
use state::{Due, FinalState, Finished, Shared, State, Task};
use util::{now_ms, task_number};

/// The key the fake accepts.
const API_KEY: &str = "fake-kie-key-0123456789abcdef";

/// Largest upload the fake accepts (axum's default is 2 MiB).
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// When a task finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// At creation: the first status poll already shows the final state.
    Now,
    /// Once this much time has passed since creation.
    After(Duration),
    /// On this status poll (1 = the first poll shows the final state).
    Polls(u32),
    /// After a run time drawn uniformly from this range (inclusive) when the
    /// task is created.
    Between(Duration, Duration),
}

/// What a task's result holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// Chosen from the model string: video for `sora`, `kling`, `wan/`,
    /// `hailuo`, `veo` and anything with `video`; text for `speech-to-text`;
    /// audio for `suno`, `music`, `audio`, `tts`; an image otherwise.
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
    /// Success with `urls` result files. (Veo makes `urls` MP4 videos
    /// whatever the media; Suno always makes two tracks.)
    Succeed {
        /// When it finishes.
        when: Finish,
        /// How many result URLs.
        urls: usize,
        /// What the results are (market only).
        media: Media,
    },
    /// Failure with KIE's `failCode` and `failMsg`. Veo reports the code as
    /// `errorCode` (a number; 501 when the code is not one); Suno shows the
    /// code as its `status` when it is one of its failure statuses
    /// (`CREATE_TASK_FAILED`, `SENSITIVE_WORD_ERROR`, ...), else
    /// `GENERATE_AUDIO_FAILED`.
    Fail {
        /// When it finishes.
        when: Finish,
        /// `failCode` (KIE sends text such as `"500"`).
        code: String,
        /// `failMsg`.
        msg: String,
    },
    /// Stays running forever.
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

    /// Succeeds on the `polls`-th status poll.
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

    /// Succeeds after a run time drawn from `min..=max` at creation.
    pub fn succeed_between(min: Duration, max: Duration, urls: usize) -> Outcome {
        Outcome::Succeed {
            when: Finish::Between(min, max),
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
    /// The status endpoints answer with a state KIE never documented
    /// (`paused`; Veo `successFlag` 7; Suno `PAUSED`).
    UnknownState,
    /// The create and status endpoints answer without `taskId` (no task is
    /// created).
    MissingTaskId,
    /// The status endpoints answer success with a result that cannot be read:
    /// a `resultJson` that is not JSON (Veo: `resultUrls` a number; Suno:
    /// `sunoData` a string).
    ResultJsonNotJson,
}

/// Whether finished tasks are posted to their `callBackUrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackMode {
    /// Never.
    Off,
    /// Once (the default).
    Once,
    /// Twice, the same body: a duplicate delivery (each Suno stage twice).
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
    /// `POST /api/v1/veo/generate`.
    VeoGenerate,
    /// `GET /api/v1/veo/record-info`.
    VeoRecordInfo,
    /// `POST /api/v1/generate` (Suno).
    SunoGenerate,
    /// `GET /api/v1/generate/record-info` (Suno).
    SunoRecordInfo,
    /// `GET /api/v1/models` (and any `/api/v1/models/...` that is neither a
    /// schema nor a price).
    Models,
    /// `GET /api/v1/models/<model>/schema`.
    ModelSchema,
    /// `GET /api/v1/models/<model>/price`.
    ModelPrice,
    /// `POST /api/v1/common/download-url`.
    DownloadUrl,
}

impl Endpoint {
    const ALL: usize = 15;

    fn index(self) -> usize {
        self as usize
    }
}

/// A task as the fake sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    /// `task_<n>`.
    pub id: String,
    /// The API it came through: `market`, `veo` or `suno`.
    pub family: &'static str,
    /// The `model` of the request (Veo's default `veo3_fast` when it named
    /// none).
    pub model: String,
    /// The market request's `input`; the whole body for Veo and Suno.
    pub input: Value,
    /// The `callBackUrl` of the request.
    pub callback_url: Option<String>,
    /// The market's name of the state as the last poll saw it (`waiting`,
    /// ..., `success`, `fail`), for every family.
    pub state: &'static str,
    /// Status polls for this task so far.
    pub polls: u32,
    /// The result URLs (Suno: the tracks' audio), once succeeded.
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
            result_base: Mutex::new(None),
            addr,
            state: Mutex::new(State::new()),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            created: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            callbacks_delivered: AtomicU64::new(0),
            callbacks_failed: AtomicU64::new(0),
            rate_limited_creates: AtomicU64::new(0),
            rate_limited_polls: AtomicU64::new(0),
            without_json_content_type: AtomicU64::new(0),
            error_text_message: AtomicBool::new(false),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client for the fake KIE"),
            stopped: stop_rx.clone(),
        });
        let app = Router::new()
            .route("/api/v1/jobs/createTask", post(market::create_task))
            .route("/api/v1/jobs/recordInfo", get(market::record_info))
            .route("/api/v1/veo/generate", post(veo::generate))
            .route("/api/v1/veo/record-info", get(veo::record_info))
            .route("/api/v1/generate", post(suno::generate))
            .route("/api/v1/generate/record-info", get(suno::record_info))
            .route("/api/v1/chat/credit", get(market::credit))
            .route("/api/v1/models", get(catalogue::list))
            .route("/api/v1/models/{*rest}", get(catalogue::detail))
            .route("/api/v1/common/download-url", post(files::download_url))
            .route("/api/file-stream-upload", post(files::stream_upload))
            .route("/api/file-url-upload", post(files::url_upload))
            .route("/api/file-base64-upload", post(files::base64_upload))
            .route("/files/{*path}", get(files::file))
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

    /// Result media (`/files/results/...`) served as `size` zero bytes,
    /// streamed, with a `Content-Length` only if `declare_length`; `None`
    /// goes back to the tiny samples.
    pub fn set_result_size(&self, size: Option<u64>, declare_length: bool) {
        self.lock().result_size = size.map(|s| (s, declare_length));
    }

    /// Market results finishing from now on name `base` (say
    /// `http://results.kie.test:<port>`) instead of the fake's own address.
    pub fn set_result_base(&self, base: Option<String>) {
        *self
            .shared
            .result_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = base;
    }

    /// `GET /files/<path>` answers `302 Location: <location>`.
    pub fn redirect_file(&self, path: &str, location: &str) {
        self.lock()
            .redirects
            .insert(path.to_owned(), location.to_owned());
    }

    /// Paths of every `/files` request so far (after `/files/`), in order.
    pub fn file_requests(&self) -> Vec<String> {
        self.lock().file_requests.clone()
    }

    /// Also treats URLs on `host` (at the fake's port) as KIE's files for
    /// download-url, as if the fake were reachable under that name.
    pub fn add_file_host(&self, host: &str) {
        self.lock().file_hosts.push(host.to_owned());
    }

    /// Delay before every API reply (not `/files`).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// How tasks of models without an override end.
    pub fn set_default_outcome(&self, outcome: Outcome) {
        self.lock().default_outcome = outcome;
    }

    /// How tasks of `model` end (the request's `model`, whatever the family:
    /// `google/nano-banana`, `veo3_fast`, `V5`).
    pub fn set_model_outcome(&self, model: &str, outcome: Outcome) {
        self.lock().model_outcomes.insert(model.to_owned(), outcome);
    }

    /// What a successful task of `model` reports as `creditsConsumed` (1.0
    /// unless set; a failed task reports 0).
    pub fn set_credits_consumed(&self, model: &str, credits: f64) {
        self.lock()
            .credits_consumed
            .insert(model.to_owned(), credits);
    }

    /// The next `n` creates (any family) fail with `code` (429, 500, 455...),
    /// as both the HTTP status and the envelope code. No task is created.
    pub fn fail_next_creates(&self, n: u32, code: u16) {
        self.lock().fail_creates = (n > 0).then_some((n, i64::from(code)));
    }

    /// Every create (any family) from now on is rejected with `code` and
    /// `msg` in the envelope under HTTP 200, as KIE does for 422 and 402. No
    /// task is created. Undo with [`FakeKie::accept_creates`].
    pub fn reject_creates_with(&self, code: u16, msg: &str) {
        self.lock().reject_creates = Some((i64::from(code), msg.to_owned()));
    }

    /// Stops rejecting creates.
    pub fn accept_creates(&self) {
        self.lock().reject_creates = None;
    }

    /// The next `n` creates (any family) create their task but never answer:
    /// the request hangs until the client gives up (the lost-reply case).
    pub fn drop_next_create_replies(&self, n: u32) {
        self.lock().drop_create_replies = n;
    }

    /// The next `n` status polls (any family) fail with `code` (HTTP status
    /// and envelope). Polls that fail do not count towards [`Finish::Polls`].
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

    /// Signs every callback from now on, as KIE's webhook verification does:
    /// [`TIMESTAMP_HEADER`] (unix seconds) and [`SIGNATURE_HEADER`] =
    /// [`webhook_signature`]`(key, taskId, timestamp)`. `None` stops signing.
    pub fn set_webhook_hmac_key(&self, key: Option<String>) {
        self.lock().webhook_key = key;
    }

    /// Which key error envelopes carry their text under: `"msg"` (the
    /// default) or `"message"` (as KIE's recordInfo pages document).
    ///
    /// # Panics
    /// For any other key.
    pub fn set_error_text_key(&self, key: &str) {
        let message = match key {
            "msg" => false,
            "message" => true,
            other => panic!("error text key must be \"msg\" or \"message\", not {other:?}"),
        };
        self.shared
            .error_text_message
            .store(message, Ordering::Relaxed);
    }

    /// The balance `/api/v1/chat/credit` reports, in whole credits.
    pub fn set_credits(&self, credits: f64) {
        self.lock().credits = credits;
    }

    /// At most `n` accepted creates (all families together) in any sliding
    /// `window`; a create beyond it gets HTTP 429 with envelope code 429 and
    /// creates nothing. `None` (the default) lifts the limit. KIE's own: 20
    /// per 10 seconds.
    pub fn set_create_limit(&self, limit: Option<(u32, Duration)>) {
        self.lock().create_limit = limit;
    }

    /// When each create was accepted (a task made), in order.
    pub fn accepted_create_times(&self) -> Vec<Instant> {
        self.lock().accepted_creates.clone()
    }

    /// Creates refused by [`FakeKie::set_create_limit`].
    pub fn rate_limited_creates(&self) -> u64 {
        self.shared.rate_limited_creates.load(Ordering::Relaxed)
    }

    /// The most creates accepted within any `window` (a window holds the
    /// creates less than `window` apart from its first).
    pub fn max_creates_in_any_window(&self, window: Duration) -> usize {
        state::max_in_any_window(&self.lock().accepted_creates, window)
    }

    /// At most `n` status requests (recordInfo and the Veo and Suno
    /// record-info, together) in any sliding `window`; one beyond it gets
    /// HTTP 429 with envelope code 429. `None` (the default) lifts the limit.
    /// KIE's own: 10 per second.
    pub fn set_poll_limit(&self, limit: Option<(u32, Duration)>) {
        self.lock().poll_limit = limit;
    }

    /// When each status request was let through the poll limit (with a key
    /// the fake accepts), in order.
    pub fn poll_times(&self) -> Vec<Instant> {
        self.lock().polls.clone()
    }

    /// Status requests refused by [`FakeKie::set_poll_limit`].
    pub fn rate_limited_polls(&self) -> u64 {
        self.shared.rate_limited_polls.load(Ordering::Relaxed)
    }

    /// The most status requests let through within any `window`.
    pub fn max_polls_in_any_window(&self, window: Duration) -> usize {
        state::max_in_any_window(&self.lock().polls, window)
    }

    /// When each task finished, by KIE's clock: creation plus its run time
    /// for time-based tasks (whether or not anyone has polled since), the
    /// deciding poll for poll-based ones. Ordered by time; running tasks are
    /// left out.
    pub fn finish_times(&self) -> Vec<(String, Instant)> {
        let now = Instant::now();
        let state = self.lock();
        let mut out: Vec<(String, Instant)> = state
            .tasks
            .iter()
            .filter_map(|(id, task)| {
                let at = match (task.finished_at, task.due) {
                    (Some(at), _) => at,
                    (None, Due::After(run)) if task.outcome != Outcome::Never => {
                        task.created_at.checked_add(run).filter(|at| *at <= now)?
                    }
                    _ => return None,
                };
                Some((id.clone(), at))
            })
            .collect();
        drop(state);
        out.sort_by_key(|(id, at)| (*at, task_number(id)));
        out
    }

    /// Every request to the catalogue endpoints (with a key the fake
    /// accepts), in order, refused ones included.
    pub fn catalogue_request_times(&self) -> Vec<Instant> {
        self.lock().catalogue_requests.clone()
    }

    /// A catalogue request closer than `interval` to the previous one
    /// (answered or not) is refused with HTTP 429 and envelope code 429, as
    /// KIE does beyond one request a second. `None` (the default) lifts it.
    pub fn set_catalogue_min_interval(&self, interval: Option<Duration>) {
        self.lock().catalogue_min_interval = interval;
    }

    /// The next `n` catalogue requests are refused with HTTP 429, whatever
    /// their pace.
    pub fn refuse_next_catalogue_requests(&self, n: u32) {
        self.lock().catalogue_refusals = n;
    }

    /// Changes what the catalogue endpoints serve (they start with
    /// [`crate::kie_catalog::recorded`]): rename a field, drop an enum value
    /// or a model, turn a list into a single value.
    pub fn edit_catalogue(&self, edit: impl FnOnce(&mut Vec<RecordedModel>)) {
        edit(self.lock().catalogue());
    }

    /// What the catalogue endpoints serve now.
    pub fn catalogue(&self) -> Vec<RecordedModel> {
        self.lock().catalogue().clone()
    }

    /// API requests (not `/files`, not multipart uploads) that came without
    /// `Content-Type: application/json`, which KIE asks for on every request.
    pub fn requests_without_json_content_type(&self) -> u64 {
        self.shared
            .without_json_content_type
            .load(Ordering::Relaxed)
    }

    /// A market callback body claiming `task_id` succeeded, with a result URL
    /// on the fake.
    fn forged_body(&self, task_id: &str) -> Value {
        let result_json = json!({
            "resultUrls": [format!("{}/files/results/forged/0.png", self.shared.base_url)]
        })
        .to_string();
        json!({
            "code": 200,
            "msg": "Playground task completed successfully.",
            "data": {
                "taskId": task_id, "model": "google/nano-banana", "state": "success",
                "param": "{}", "resultJson": result_json, "failCode": "", "failMsg": "",
                "costTime": 1, "completeTime": now_ms(), "createTime": now_ms()
            }
        })
    }

    /// Posts a callback claiming `task_id` succeeded (with a result URL on the
    /// fake), whatever the task's real state: anyone who learns a callback URL
    /// can do this. Returns the receiver's HTTP status.
    pub async fn send_forged_callback(
        &self,
        url: &str,
        task_id: &str,
    ) -> Result<u16, reqwest::Error> {
        let body = self.forged_body(task_id);
        let response = self.shared.http.post(url).json(&body).send().await?;
        Ok(response.status().as_u16())
    }

    /// Like [`FakeKie::send_forged_callback`], with the webhook headers set to
    /// `timestamp` and `signature` as given (a forger's guess, a stale
    /// timestamp, or a correct one). Returns the receiver's HTTP status.
    pub async fn send_callback_with_signature(
        &self,
        url: &str,
        task_id: &str,
        timestamp: u64,
        signature: &str,
    ) -> Result<u16, reqwest::Error> {
        let body = self.forged_body(task_id);
        let response = self
            .shared
            .http
            .post(url)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .json(&body)
            .send()
            .await?;
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

    /// Callback posts that failed (connection error or non-2xx status; a
    /// `.invalid` host is never tried).
    pub fn callbacks_failed(&self) -> u64 {
        self.shared.callbacks_failed.load(Ordering::Relaxed)
    }
}

fn snapshot(id: &str, task: &Task) -> TaskSnapshot {
    TaskSnapshot {
        id: id.to_owned(),
        family: task.family.name(),
        model: task.model.clone(),
        input: (*task.input).clone(),
        callback_url: task.callback_url.clone(),
        state: state::state_name(task),
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

/// Suno's model strings, as `/api/v1/generate` accepts them.
pub const SUNO_MODELS: [&str; 6] = suno::MODELS;

/// Veo's model strings, as `/api/v1/veo/generate` accepts them.
pub const VEO_MODELS: [&str; 3] = veo::MODELS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_found() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let times = [ms(0), ms(5), ms(9), ms(10), ms(30), ms(31)];
        assert_eq!(
            state::max_in_any_window(&times, Duration::from_millis(10)),
            3
        );
        assert_eq!(
            state::max_in_any_window(&times, Duration::from_millis(11)),
            4
        );
        assert_eq!(state::max_in_any_window(&[], Duration::from_millis(10)), 0);
        assert_eq!(
            state::in_window(&times, ms(31), Duration::from_millis(2)),
            2
        );
    }

    #[test]
    fn a_drawn_run_time_stays_in_its_range() {
        let (lo, hi) = (Duration::from_millis(10), Duration::from_millis(20));
        for _ in 0..100 {
            let Due::After(run) = Due::of(&Outcome::succeed_between(hi, lo, 1)) else {
                panic!("not time-based")
            };
            assert!((lo..=hi).contains(&run), "{run:?}");
        }
        assert_eq!(Due::of(&Outcome::succeed_after_polls(0, 1)), Due::Now);
        assert_eq!(Due::of(&Outcome::Never), Due::Never);
    }
}
