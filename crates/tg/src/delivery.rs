//! Sending a finished generation to its user.
//!
//! [`deliver`] walks a ladder per media item, stopping at the first rung that
//! works:
//!
//! 1. **By URL**: Telegram fetches the result itself (no bytes through us).
//! 2. **Upload**: Telegram refused the URL (could not fetch it, wrong content
//!    type, too big to fetch): we download it (capped at 50 MB, Telegram's
//!    upload limit) into a temporary file and upload it as multipart from
//!    there, so memory stays flat whatever the size. A photo above
//!    Telegram's 10 MB photo limit goes up as a document.
//! 3. **Link**: the upload failed too (or the download did): the user gets a
//!    message with the link, so a result is never lost.
//!
//! Result URLs come from KIE and are checked against the
//! [`EgressPolicy`](crate::egress::EgressPolicy) of
//! [`DeliveryOptions::egress`] before anything is done with them (https, an
//! allowed KIE host) and again, address by address and redirect by
//! redirect, while downloading. A URL the policy refuses is exchanged for a
//! fresh link from KIE ([`DeliveryOptions::fresh_links`], KIE's download-url
//! endpoint), itself checked; when there is none, a URL refused up front ends
//! the delivery with [`DeliveryError::Refused`] (final: nothing is sent, and
//! no forbidden link is shown to the user), and a download refused on its
//! addresses falls to the link rung. Every refusal is reported in
//! [`Delivered::refusals`].
//!
//! Several images go as albums of up to 10 (`sendMediaGroup`), one as a
//! photo; video, audio and documents go one message each; text is split into
//! 4096-character messages. One item with a short caption carries the caption
//! and keyboard itself; otherwise (albums, several items, a caption over 1024
//! characters) the caption and keyboard follow in a message of their own,
//! because albums cannot carry a keyboard. All text is sent without a parse
//! mode, so a prompt containing `<` or `*` is shown as typed.
//!
//! Every Bot API call first waits on the shared [`DeliveryLimiter`]. A 429 is
//! reported to the limiter (so every worker pauses), waited out and retried,
//! within a bounded total wait ([`DeliveryOptions::max_retry_wait`]); beyond
//! that the delivery fails with [`DeliveryError::RateLimited`] for the caller
//! to retry later. A user who blocked the bot is final
//! ([`DeliveryError::Blocked`]); network errors are retryable. Retrying a
//! whole delivery after a partial failure may repeat the items already sent:
//! the caller's retry re-runs the same request.
//!
//! Each Bot API call runs in a `telegram_call` tracing span with `method`,
//! `chat_id` and `outcome`. The token never appears: network errors are
//! described without their URL (which would contain it).

mod split;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use teloxide::payloads::{
    SendAudioSetters, SendDocumentSetters, SendMessageSetters, SendPhotoSetters, SendVideoSetters,
};
use teloxide::prelude::*;
use teloxide::types::{
    InlineKeyboardMarkup, InputFile, InputMedia, InputMediaDocument, InputMediaPhoto, Message,
    MessageId,
};
use teloxide::{ApiError, RequestError};
use tracing::Instrument;

use crate::egress::{EgressPolicy, FetchError, Fetched, Refusal, fetch_to_file};
use crate::rate_limit::DeliveryLimiter;

pub use split::{split_text, utf16_len};

/// The longest message text Telegram accepts (UTF-16 code units).
pub const MAX_TEXT_UTF16: usize = 4096;
/// The longest media caption Telegram accepts (UTF-16 code units).
pub const MAX_CAPTION_UTF16: usize = 1024;
/// Telegram's limit on uploads by bots (per file).
pub const MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;
/// Telegram's limit on photos uploaded by bots; larger images go as documents.
pub const MAX_PHOTO_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;
/// Telegram's limit on items in one album.
pub const MAX_ALBUM_ITEMS: usize = 10;
/// Sent as the text of the closing message when an album has a keyboard but
/// no caption (a message needs text); language-neutral on purpose.
const POINTER: &str = "\u{2b06}\u{fe0f}";

/// What kind of result is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// Photos; several make an album.
    Image,
    /// Videos.
    Video,
    /// Audio for the music player.
    Audio,
    /// Text (a transcript, an answer).
    Text,
    /// Files sent as they are.
    Document,
}

impl From<kiebot_domain::OutputKind> for DeliveryKind {
    fn from(kind: kiebot_domain::OutputKind) -> Self {
        match kind {
            kiebot_domain::OutputKind::Image => Self::Image,
            kiebot_domain::OutputKind::Video => Self::Video,
            kiebot_domain::OutputKind::Audio => Self::Audio,
            kiebot_domain::OutputKind::Text => Self::Text,
        }
    }
}

/// One result to send.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRequest {
    /// How to present it.
    pub kind: DeliveryKind,
    /// Result files, in order (for text results: extra links, usually none).
    pub urls: Vec<String>,
    /// The text of a text result (for media: shown with the caption).
    pub text: Option<String>,
    /// Already-localised plain text shown with the result (may be empty).
    pub caption: String,
    /// Buttons under the result (Repeat, History, Menu).
    pub keyboard: Option<InlineKeyboardMarkup>,
    /// Music tracks' titles and covers, in the order of `urls` (empty for
    /// other results): each track goes as an audio message with its title,
    /// after the first cover as a photo.
    pub tracks: Vec<TrackMeta>,
}

/// What a music player shows of one track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackMeta {
    /// The title.
    pub title: Option<String>,
    /// The cover picture's URL.
    pub cover: Option<String>,
    /// Who made it (shown as the performer).
    pub performer: Option<String>,
}

/// How a result reached the user; later variants are worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// A text result, sent as messages.
    Text,
    /// Telegram fetched every file by URL.
    Url,
    /// At least one file had to be downloaded and uploaded.
    Upload,
    /// At least one file could only be sent as a link.
    Link,
}

/// A delivery that reached the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Every message sent, in order.
    pub message_ids: Vec<MessageId>,
    /// Telegram file ids of the media sent (largest size for photos), in
    /// order: sending them again needs no URL and no upload.
    pub file_ids: Vec<String>,
    /// The worst rung any item needed.
    pub route: Route,
    /// URLs or downloads refused on the way (egress policy, size cap), in
    /// order; a fresh link or another rung delivered the result anyway.
    pub refusals: Vec<Refusal>,
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The user blocked the bot, deleted their account, or the chat is gone.
    /// Final: retrying cannot help.
    #[error("the chat cannot be written to: {0}")]
    Blocked(String),
    /// Telegram kept answering 429 past the bounded wait. Retry after
    /// `retry_after`.
    #[error("Telegram rate limit: retry after {retry_after:?}")]
    RateLimited {
        /// What Telegram asked for last.
        retry_after: Duration,
    },
    /// Telegram could not be reached or answered nonsense. Retryable.
    #[error("Bot API unreachable: {0}")]
    Network(String),
    /// Telegram refused the request for another reason (a bug on our side,
    /// such as an invalid keyboard). Final.
    #[error("Bot API refused the request: {0}")]
    Rejected(String),
    /// The request had nothing to send.
    #[error("nothing to deliver")]
    Empty,
    /// A result URL may not be fetched (see [`crate::egress`]) and KIE gave
    /// no acceptable fresh link. Final: nothing was sent.
    #[error("result URL refused: {0}")]
    Refused(Refusal),
}

impl DeliveryError {
    /// Whether trying the same delivery later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Network(_))
    }
}

/// Why KIE gave no fresh link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError {
    /// Whether asking again later may work (KIE unreachable, 5xx).
    pub retryable: bool,
    /// What went wrong.
    pub message: String,
}

/// A future of [`FreshLinks::fresh_link`].
pub type FreshLinkFuture<'a> = Pin<Box<dyn Future<Output = Result<String, LinkError>> + Send + 'a>>;

/// Where a refused result URL is exchanged for a fresh one: KIE's
/// download-url endpoint in production.
pub trait FreshLinks: Send + Sync {
    /// A fresh direct link to the file at `url`.
    fn fresh_link<'a>(&'a self, url: &'a str) -> FreshLinkFuture<'a>;
}

/// Knobs of [`deliver_with`]; [`deliver`] uses the defaults.
#[derive(Clone)]
pub struct DeliveryOptions {
    /// Longest total time one delivery waits out 429s before giving up.
    pub max_retry_wait: Duration,
    /// Largest file downloaded for re-upload (and largest album in total).
    pub max_download_bytes: u64,
    /// Time limit for one download.
    pub download_timeout: Duration,
    /// What downloads may reach.
    pub egress: EgressPolicy,
    /// Client for downloads, enforcing `egress` (see
    /// [`EgressPolicy::client`]).
    pub http: reqwest::Client,
    /// Where downloads wait for their upload.
    pub temp_dir: PathBuf,
    /// Fresh links for refused URLs (`None`: none to be had).
    pub fresh_links: Option<Arc<dyn FreshLinks>>,
}

impl std::fmt::Debug for DeliveryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryOptions")
            .field("max_retry_wait", &self.max_retry_wait)
            .field("max_download_bytes", &self.max_download_bytes)
            .field("download_timeout", &self.download_timeout)
            .field("egress", &self.egress)
            .field("temp_dir", &self.temp_dir)
            .field("fresh_links", &self.fresh_links.is_some())
            .finish()
    }
}

impl Default for DeliveryOptions {
    /// KIE's hosts over https ([`EgressPolicy::default`]), no fresh links.
    fn default() -> Self {
        static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
        let egress = EgressPolicy::default();
        let http = HTTP
            .get_or_init(|| {
                egress
                    .client(DOWNLOAD_CONNECT_TIMEOUT)
                    .expect("the TLS backend of the download client")
            })
            .clone();
        Self {
            max_retry_wait: Duration::from_secs(30),
            max_download_bytes: MAX_UPLOAD_BYTES,
            download_timeout: Duration::from_secs(120),
            egress,
            http,
            temp_dir: std::env::temp_dir(),
            fresh_links: None,
        }
    }
}

/// Connect timeout of result downloads.
const DOWNLOAD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl DeliveryOptions {
    /// The defaults with downloads held to `egress`.
    ///
    /// # Errors
    /// The TLS backend of the download client could not be set up.
    pub fn with_egress(egress: EgressPolicy) -> reqwest::Result<Self> {
        let http = egress.client(DOWNLOAD_CONNECT_TIMEOUT)?;
        Ok(Self {
            egress,
            http,
            ..Self::default()
        })
    }
}

/// Sends `request` to `chat_id` with [`DeliveryOptions::default`].
///
/// # Errors
/// See [`DeliveryError`]; [`DeliveryError::is_retryable`] tells the caller
/// whether to try again later.
pub async fn deliver(
    bot: &Bot,
    limiter: &dyn DeliveryLimiter,
    chat_id: ChatId,
    request: &DeliveryRequest,
) -> Result<Delivered, DeliveryError> {
    deliver_with(bot, limiter, chat_id, request, &DeliveryOptions::default()).await
}

/// Sends `request` to `chat_id`: see the module docs for the ladder.
///
/// # Errors
/// See [`DeliveryError`].
pub async fn deliver_with(
    bot: &Bot,
    limiter: &dyn DeliveryLimiter,
    chat_id: ChatId,
    request: &DeliveryRequest,
    options: &DeliveryOptions,
) -> Result<Delivered, DeliveryError> {
    let span = tracing::info_span!(
        "deliver",
        chat_id = chat_id.0,
        kind = ?request.kind,
        items = request.urls.len(),
        route = tracing::field::Empty,
    );
    let sender = Sender {
        bot,
        limiter,
        chat: chat_id,
        options,
        waited_ms: AtomicU64::new(0),
        refusals: Mutex::new(Vec::new()),
    };
    async {
        let result = sender.deliver(request).await.map(|mut done| {
            done.refusals = sender.take_refusals();
            done
        });
        match &result {
            Ok(done) => {
                tracing::Span::current().record("route", tracing::field::debug(done.route));
                tracing::info!(messages = done.message_ids.len(), "result delivered");
            }
            Err(err) => {
                tracing::warn!(error = %err, retryable = err.is_retryable(), "result not delivered")
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Sends a delivered result again by the Telegram file ids its delivery
/// stored ([`Delivered::file_ids`]): one message per file, as `kind`, the
/// keyboard under the last; the ids of the messages sent. Nothing is
/// fetched or uploaded. Every call waits
/// on the shared `limiter` and a 429 is waited out within
/// [`DeliveryOptions::max_retry_wait`], as in [`deliver_with`], so a re-send
/// spends from the same budget as first deliveries.
///
/// # Errors
/// [`DeliveryError::Empty`] without file ids; otherwise see
/// [`DeliveryError`]. A failure after some files went out leaves them sent.
pub async fn resend_files(
    bot: &Bot,
    limiter: &dyn DeliveryLimiter,
    chat_id: ChatId,
    kind: DeliveryKind,
    file_ids: &[String],
    keyboard: Option<&InlineKeyboardMarkup>,
    options: &DeliveryOptions,
) -> Result<Vec<MessageId>, DeliveryError> {
    if file_ids.is_empty() {
        return Err(DeliveryError::Empty);
    }
    let span = tracing::info_span!(
        "resend",
        chat_id = chat_id.0,
        kind = ?kind,
        items = file_ids.len(),
    );
    let sender = Sender {
        bot,
        limiter,
        chat: chat_id,
        options,
        waited_ms: AtomicU64::new(0),
        refusals: Mutex::new(Vec::new()),
    };
    async {
        let last = file_ids.len() - 1;
        let mut sent = Vec::with_capacity(file_ids.len());
        for (i, id) in file_ids.iter().enumerate() {
            let file = InputFile::file_id(teloxide::types::FileId(id.clone()));
            let keyboard = if i == last { keyboard } else { None };
            let message = sender
                .send_media(Media::of(kind), file, None, keyboard, None)
                .await
                .map_err(CallError::into_delivery)?;
            sent.push(message.id);
        }
        tracing::info!(messages = sent.len(), "result sent again");
        Ok(sent)
    }
    .instrument(span)
    .await
}

/// A failed Bot API call, classified.
#[derive(Debug)]
enum CallError {
    RateLimited(Duration),
    Blocked(String),
    /// Telegram would not take this media (URL, type, size): try the next rung.
    MediaRefused(String),
    Rejected(String),
    Network(String),
}

impl CallError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "rate_limited",
            Self::Blocked(_) => "blocked",
            Self::MediaRefused(_) => "media_refused",
            Self::Rejected(_) => "rejected",
            Self::Network(_) => "network_error",
        }
    }

    fn into_delivery(self) -> DeliveryError {
        match self {
            Self::RateLimited(retry_after) => DeliveryError::RateLimited { retry_after },
            Self::Blocked(d) => DeliveryError::Blocked(d),
            Self::MediaRefused(d) | Self::Rejected(d) => DeliveryError::Rejected(d),
            Self::Network(d) => DeliveryError::Network(d),
        }
    }
}

fn api_description(err: &ApiError) -> String {
    match err {
        ApiError::Unknown(description) => description.clone(),
        other => other.to_string(),
    }
}

fn is_blocked(err: &ApiError, description: &str) -> bool {
    matches!(
        err,
        ApiError::BotBlocked
            | ApiError::UserDeactivated
            | ApiError::CantInitiateConversation
            | ApiError::CantTalkWithBots
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::BotKickedFromChannel
            | ApiError::ChatNotFound
            | ApiError::GroupDeactivated
    ) || description.starts_with("Forbidden:")
}

fn is_media_refusal(err: &ApiError, description: &str) -> bool {
    if matches!(
        err,
        ApiError::FailedToGetUrlContent
            | ApiError::WrongFileIdOrUrl
            | ApiError::WrongHttpUrl
            | ApiError::WrongFileId
            | ApiError::FileIdInvalid
            | ApiError::CantParseUrl
            | ApiError::RequestEntityTooLarge
            | ApiError::ImageProcessFailed
            | ApiError::PhotoAsInputFileRequired
    ) {
        return true;
    }
    let d = description.to_ascii_lowercase();
    [
        "http url",
        "web page",
        "webpage_",
        "failed to send message #",
        "too big",
        "too large",
        "photo_",
        "image_",
        "video_",
        "media_",
        "non-empty",
        "wrong type",
        "file of type",
        "wrong file",
        "failed to get",
    ]
    .iter()
    .any(|needle| d.contains(needle))
}

/// Describes a network failure without the request URL, which contains the
/// bot token.
fn describe_network(
    err: &(dyn std::error::Error + 'static),
    timeout: bool,
    connect: bool,
) -> String {
    let mut text = String::from(if timeout {
        "timed out"
    } else if connect {
        "could not connect"
    } else {
        "request failed"
    });
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify(err: RequestError) -> CallError {
    match err {
        RequestError::Api(api) => {
            let description = api_description(&api);
            if is_blocked(&api, &description) {
                CallError::Blocked(description)
            } else if is_media_refusal(&api, &description) {
                CallError::MediaRefused(description)
            } else {
                CallError::Rejected(description)
            }
        }
        RequestError::RetryAfter(seconds) => CallError::RateLimited(seconds.duration()),
        RequestError::MigrateToChatId(_) => {
            CallError::Rejected("the group became a supergroup".into())
        }
        RequestError::Network(e) => {
            CallError::Network(describe_network(e.as_ref(), e.is_timeout(), e.is_connect()))
        }
        RequestError::InvalidJson { .. } => {
            CallError::Network("unparseable answer from the Bot API".into())
        }
        RequestError::Io(e) => CallError::Network(format!("I/O error: {e}")),
    }
}

/// A file fetched for re-upload, on disk until it is dropped.
struct Downloaded {
    file: Fetched,
    file_name: String,
}

impl Downloaded {
    fn size(&self) -> u64 {
        self.file.size
    }

    /// The upload, streamed from the file.
    fn input(&self) -> InputFile {
        InputFile::file(self.file.path.to_path_buf()).file_name(self.file_name.clone())
    }
}

fn file_name_for(url: &str, content_type: Option<&str>, kind: DeliveryKind) -> String {
    let from_url = url::Url::parse(url).ok().and_then(|u| {
        u.path_segments()
            .and_then(|mut s| s.next_back().map(str::to_owned))
            .filter(|name| name.contains('.') && name.len() <= 100)
    });
    if let Some(name) = from_url {
        return name;
    }
    let ext = match content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
    {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "audio/mpeg" => "mp3",
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/ogg" => "ogg",
        "text/plain" => "txt",
        _ => match kind {
            DeliveryKind::Image => "png",
            DeliveryKind::Video => "mp4",
            DeliveryKind::Audio => "mp3",
            DeliveryKind::Text => "txt",
            DeliveryKind::Document => "bin",
        },
    };
    format!("result.{ext}")
}

fn file_id_of(message: &Message) -> Option<String> {
    message
        .photo()
        .and_then(|sizes| {
            sizes
                .iter()
                .max_by_key(|s| u64::from(s.width) * u64::from(s.height))
        })
        .map(|p| p.file.id.0.clone())
        .or_else(|| message.video().map(|v| v.file.id.0.clone()))
        .or_else(|| message.audio().map(|a| a.file.id.0.clone()))
        .or_else(|| message.document().map(|d| d.file.id.0.clone()))
        .or_else(|| message.animation().map(|a| a.file.id.0.clone()))
        .or_else(|| message.voice().map(|v| v.file.id.0.clone()))
}

/// What one rung of the ladder achieved.
enum Outcome {
    Sent(Vec<Message>, Route),
    /// Only a link will do.
    Link,
}

/// The media a single message carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Media {
    Photo,
    Video,
    Audio,
    Document,
}

impl Media {
    fn of(kind: DeliveryKind) -> Self {
        match kind {
            DeliveryKind::Image => Self::Photo,
            DeliveryKind::Video => Self::Video,
            DeliveryKind::Audio => Self::Audio,
            DeliveryKind::Text | DeliveryKind::Document => Self::Document,
        }
    }
}

struct Sender<'a> {
    bot: &'a Bot,
    limiter: &'a dyn DeliveryLimiter,
    chat: ChatId,
    options: &'a DeliveryOptions,
    /// 429 waits so far (atomic only so the future stays `Send`).
    waited_ms: AtomicU64,
    /// Refusals so far (never held across an await).
    refusals: Mutex<Vec<Refusal>>,
}

fn join_nonempty<'t>(parts: impl IntoIterator<Item = &'t str>) -> String {
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

impl Sender<'_> {
    /// One Bot API call: waits on the limiter, honours 429 within the budget,
    /// and traces the outcome.
    async fn call<T, F, Fut>(&self, method: &'static str, mut make: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        loop {
            self.limiter.acquire(self.chat).await;
            let span = tracing::info_span!(
                "telegram_call",
                method,
                chat_id = self.chat.0,
                outcome = tracing::field::Empty,
            );
            let result = make().instrument(span.clone()).await;
            let err = match result {
                Ok(value) => {
                    span.record("outcome", "ok");
                    return Ok(value);
                }
                Err(err) => classify(err),
            };
            span.record("outcome", err.outcome());
            let CallError::RateLimited(wait) = err else {
                tracing::debug!(parent: &span, error = ?err, "Bot API call failed");
                return Err(err);
            };
            metrics::counter!(crate::rate_limit::TELEGRAM_429).increment(1);
            // Pause everyone: after our own per-chat spacing, a 429 most
            // likely means the bot as a whole is over Telegram's budget.
            self.limiter.note_retry_after(None, wait).await;
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let waited = self.waited_ms.load(Ordering::Relaxed);
            let budget = u64::try_from(self.options.max_retry_wait.as_millis()).unwrap_or(u64::MAX);
            if waited.saturating_add(wait_ms) > budget {
                tracing::warn!(parent: &span, retry_after_s = wait.as_secs(), "429 beyond the wait budget");
                return Err(err);
            }
            self.waited_ms.store(waited + wait_ms, Ordering::Relaxed);
            tracing::info!(parent: &span, retry_after_s = wait.as_secs(), "429: waiting, then retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn note(&self, refusal: Refusal) {
        tracing::warn!(reason = refusal.reason(), %refusal, "result URL refused");
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(refusal);
    }

    fn take_refusals(&self) -> Vec<Refusal> {
        std::mem::take(
            &mut *self
                .refusals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// `url` if the policy allows it, else a fresh link KIE gives for it that
    /// the policy allows. An unparseable URL is kept: it can only ever be
    /// shown as text.
    async fn vet(&self, url: &str) -> Result<String, DeliveryError> {
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(url.to_owned());
        };
        let Err(refusal) = self.options.egress.check_url(&parsed) else {
            return Ok(url.to_owned());
        };
        self.note(refusal.clone());
        match self.fresh(url).await? {
            Some(fresh) => Ok(fresh),
            None => Err(DeliveryError::Refused(refusal)),
        }
    }

    /// A fresh link for `url` from KIE that the policy allows; `None` when
    /// KIE has none (or only one the policy refuses). KIE being unreachable
    /// is retryable.
    async fn fresh(&self, url: &str) -> Result<Option<String>, DeliveryError> {
        let Some(source) = &self.options.fresh_links else {
            return Ok(None);
        };
        match source.fresh_link(url).await {
            Ok(fresh) => match url::Url::parse(&fresh) {
                Ok(parsed) => match self.options.egress.check_url(&parsed) {
                    Ok(()) => {
                        tracing::info!("refused result URL exchanged for a fresh link from KIE");
                        Ok(Some(fresh))
                    }
                    Err(refusal) => {
                        self.note(refusal);
                        Ok(None)
                    }
                },
                Err(_) => {
                    tracing::warn!("KIE's fresh link is not a URL");
                    Ok(None)
                }
            },
            Err(e) if e.retryable => Err(DeliveryError::Network(format!(
                "fresh link from KIE: {}",
                e.message
            ))),
            Err(e) => {
                tracing::warn!(error = %e.message, "KIE gave no fresh link");
                Ok(None)
            }
        }
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Delivered, DeliveryError> {
        let mut urls = Vec::with_capacity(request.urls.len());
        for url in &request.urls {
            urls.push(self.vet(url).await?);
        }
        let urls = &urls;
        let caption = join_nonempty([
            request.caption.as_str(),
            request.text.as_deref().unwrap_or(""),
        ]);
        let keyboard = request.keyboard.as_ref();
        if request.kind == DeliveryKind::Text || urls.is_empty() {
            let body = join_nonempty(
                std::iter::once(caption.as_str()).chain(urls.iter().map(String::as_str)),
            );
            if body.is_empty() {
                return Err(DeliveryError::Empty);
            }
            let messages = self.send_text(&body, keyboard).await?;
            return Ok(Delivered {
                message_ids: messages.iter().map(|m| m.id).collect(),
                file_ids: Vec::new(),
                route: Route::Text,
                refusals: Vec::new(),
            });
        }

        let mut sent: Vec<Message> = Vec::new();
        let mut route = Route::Url;
        let single = urls.len() == 1;
        if single && utf16_len(&caption) <= MAX_CAPTION_UTF16 {
            let url = &urls[0];
            let caption = (!caption.is_empty()).then_some(caption.as_str());
            let track = request
                .tracks
                .first()
                .filter(|_| request.kind == DeliveryKind::Audio);
            match self
                .single_with(Media::of(request.kind), url, caption, keyboard, track)
                .await?
            {
                Outcome::Sent(messages, r) => {
                    sent.extend(messages);
                    route = r;
                }
                Outcome::Link => {
                    let body = join_nonempty([caption.unwrap_or(""), url.as_str()]);
                    sent.extend(self.send_text(&body, keyboard).await?);
                    route = Route::Link;
                }
            }
        } else {
            let mut links: Vec<&str> = Vec::new();
            // Music: the cover first, as the record sleeve; a cover Telegram
            // cannot fetch is left out rather than sent as a link.
            if request.kind == DeliveryKind::Audio
                && let Some(cover) = request.tracks.iter().find_map(|t| t.cover.as_deref())
                && let Ok(parsed) = url::Url::parse(cover)
                && self.options.egress.check_url(&parsed).is_ok()
            {
                match self
                    .send_media(Media::Photo, InputFile::url(parsed), None, None, None)
                    .await
                {
                    Ok(message) => sent.push(message),
                    Err(CallError::MediaRefused(reason)) => {
                        tracing::info!(%reason, "Telegram refused the cover; tracks go without it");
                    }
                    Err(err) => return Err(err.into_delivery()),
                }
            }
            let groups: Vec<&[String]> = if request.kind == DeliveryKind::Image {
                urls.chunks(MAX_ALBUM_ITEMS).collect()
            } else {
                urls.chunks(1).collect()
            };
            for (i, group) in groups.into_iter().enumerate() {
                let track = request
                    .tracks
                    .get(i)
                    .filter(|_| request.kind == DeliveryKind::Audio);
                let outcome = if group.len() == 1 {
                    self.single_with(Media::of(request.kind), &group[0], None, None, track)
                        .await?
                } else {
                    self.album(group).await?
                };
                match outcome {
                    Outcome::Sent(messages, r) => {
                        sent.extend(messages);
                        route = route.max(r);
                    }
                    Outcome::Link => {
                        links.extend(group.iter().map(String::as_str));
                        route = Route::Link;
                    }
                }
            }
            let mut closing =
                join_nonempty(std::iter::once(caption.as_str()).chain(links.iter().copied()));
            if closing.is_empty() && keyboard.is_some() {
                closing = POINTER.to_owned();
            }
            if !closing.is_empty() {
                sent.extend(self.send_text(&closing, keyboard).await?);
            }
        }
        Ok(Delivered {
            message_ids: sent.iter().map(|m| m.id).collect(),
            file_ids: sent.iter().filter_map(file_id_of).collect(),
            route,
            refusals: Vec::new(),
        })
    }

    /// Text in as many messages as it takes; the keyboard goes under the last.
    async fn send_text(
        &self,
        text: &str,
        keyboard: Option<&InlineKeyboardMarkup>,
    ) -> Result<Vec<Message>, DeliveryError> {
        let pieces = split_text(text, MAX_TEXT_UTF16);
        let last = pieces.len().saturating_sub(1);
        let mut sent = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.into_iter().enumerate() {
            let keyboard = if i == last { keyboard } else { None };
            let message = self
                .call("sendMessage", || {
                    let mut req = self.bot.send_message(self.chat, piece.clone());
                    if let Some(kb) = keyboard {
                        req = req.reply_markup(kb.clone());
                    }
                    req.send()
                })
                .await
                .map_err(CallError::into_delivery)?;
            sent.push(message);
        }
        Ok(sent)
    }

    /// One media message.
    async fn send_media(
        &self,
        media: Media,
        file: InputFile,
        caption: Option<&str>,
        keyboard: Option<&InlineKeyboardMarkup>,
        track: Option<&TrackMeta>,
    ) -> Result<Message, CallError> {
        let caption = caption.map(str::to_owned);
        let keyboard = keyboard.cloned();
        let title = track.and_then(|t| t.title.clone());
        let performer = track.and_then(|t| t.performer.clone());
        match media {
            Media::Photo => {
                self.call("sendPhoto", || {
                    let mut req = self.bot.send_photo(self.chat, file.clone());
                    req = match &caption {
                        Some(c) => req.caption(c.clone()),
                        None => req,
                    };
                    match &keyboard {
                        Some(kb) => req.reply_markup(kb.clone()).send(),
                        None => req.send(),
                    }
                })
                .await
            }
            Media::Video => {
                self.call("sendVideo", || {
                    let mut req = self
                        .bot
                        .send_video(self.chat, file.clone())
                        .supports_streaming(true);
                    req = match &caption {
                        Some(c) => req.caption(c.clone()),
                        None => req,
                    };
                    match &keyboard {
                        Some(kb) => req.reply_markup(kb.clone()).send(),
                        None => req.send(),
                    }
                })
                .await
            }
            Media::Audio => {
                self.call("sendAudio", || {
                    let mut req = self.bot.send_audio(self.chat, file.clone());
                    if let Some(t) = &title {
                        req = req.title(t.clone());
                    }
                    if let Some(p) = &performer {
                        req = req.performer(p.clone());
                    }
                    req = match &caption {
                        Some(c) => req.caption(c.clone()),
                        None => req,
                    };
                    match &keyboard {
                        Some(kb) => req.reply_markup(kb.clone()).send(),
                        None => req.send(),
                    }
                })
                .await
            }
            Media::Document => {
                self.call("sendDocument", || {
                    let mut req = self.bot.send_document(self.chat, file.clone());
                    req = match &caption {
                        Some(c) => req.caption(c.clone()),
                        None => req,
                    };
                    match &keyboard {
                        Some(kb) => req.reply_markup(kb.clone()).send(),
                        None => req.send(),
                    }
                })
                .await
            }
        }
    }

    /// The ladder for one file.
    async fn single_with(
        &self,
        media: Media,
        url: &str,
        caption: Option<&str>,
        keyboard: Option<&InlineKeyboardMarkup>,
        track: Option<&TrackMeta>,
    ) -> Result<Outcome, DeliveryError> {
        match url::Url::parse(url) {
            Ok(parsed) => match self
                .send_media(media, InputFile::url(parsed), caption, keyboard, track)
                .await
            {
                Ok(message) => return Ok(Outcome::Sent(vec![message], Route::Url)),
                Err(CallError::MediaRefused(reason)) => {
                    tracing::info!(%reason, "Telegram refused the URL; uploading the file instead");
                }
                Err(err) => return Err(err.into_delivery()),
            },
            Err(_) => return Ok(Outcome::Link),
        }
        let kind = match media {
            Media::Photo => DeliveryKind::Image,
            Media::Video => DeliveryKind::Video,
            Media::Audio => DeliveryKind::Audio,
            Media::Document => DeliveryKind::Document,
        };
        let file = match self
            .download(url, kind, self.options.max_download_bytes)
            .await
        {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(error = %err, "could not download the result; sending a link");
                return Ok(Outcome::Link);
            }
        };
        let media = if media == Media::Photo && file.size() > MAX_PHOTO_UPLOAD_BYTES {
            Media::Document
        } else {
            media
        };
        let input = file.input();
        match self
            .send_media(media, input, caption, keyboard, track)
            .await
        {
            Ok(message) => Ok(Outcome::Sent(vec![message], Route::Upload)),
            Err(CallError::MediaRefused(reason)) => {
                tracing::warn!(%reason, "Telegram refused the upload; sending a link");
                Ok(Outcome::Link)
            }
            Err(err) => Err(err.into_delivery()),
        }
    }

    /// The ladder for an album of 2 to 10 images.
    async fn album(&self, urls: &[String]) -> Result<Outcome, DeliveryError> {
        let parsed: Option<Vec<url::Url>> = urls.iter().map(|u| url::Url::parse(u).ok()).collect();
        let Some(parsed) = parsed else {
            return Ok(Outcome::Link);
        };
        let by_url: Vec<InputMedia> = parsed
            .into_iter()
            .map(|u| InputMedia::Photo(InputMediaPhoto::new(InputFile::url(u))))
            .collect();
        match self
            .call("sendMediaGroup", || {
                self.bot.send_media_group(self.chat, by_url.clone()).send()
            })
            .await
        {
            Ok(messages) => return Ok(Outcome::Sent(messages, Route::Url)),
            Err(CallError::MediaRefused(reason)) => {
                tracing::info!(%reason, "Telegram refused the album URLs; uploading the files instead");
            }
            Err(err) => return Err(err.into_delivery()),
        }

        let mut files = Vec::with_capacity(urls.len());
        let mut total: u64 = 0;
        for url in urls {
            let left = self.options.max_download_bytes.saturating_sub(total);
            match self.download(url, DeliveryKind::Image, left).await {
                Ok(file) => {
                    total += file.size();
                    files.push(file);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not download an album item; sending links");
                    return Ok(Outcome::Link);
                }
            }
        }
        let as_documents = files.iter().any(|f| f.size() > MAX_PHOTO_UPLOAD_BYTES);
        let uploads: Vec<InputMedia> = files
            .iter()
            .map(|f| {
                let input = f.input();
                if as_documents {
                    InputMedia::Document(InputMediaDocument::new(input))
                } else {
                    InputMedia::Photo(InputMediaPhoto::new(input))
                }
            })
            .collect();
        match self
            .call("sendMediaGroup", || {
                self.bot.send_media_group(self.chat, uploads.clone()).send()
            })
            .await
        {
            Ok(messages) => Ok(Outcome::Sent(messages, Route::Upload)),
            Err(CallError::MediaRefused(reason)) => {
                tracing::warn!(%reason, "Telegram refused the album upload; sending links");
                Ok(Outcome::Link)
            }
            Err(err) => Err(err.into_delivery()),
        }
    }

    /// Downloads `url` into a temporary file, refusing more than
    /// `max_bytes` (see [`fetch_to_file`]). A URL the egress policy refuses
    /// (on its addresses or a redirect) is exchanged for a fresh link from
    /// KIE once.
    async fn download(
        &self,
        url: &str,
        kind: DeliveryKind,
        max_bytes: u64,
    ) -> Result<Downloaded, FetchError> {
        let first = self.download_once(url, url, kind, max_bytes).await;
        let Err(FetchError::Refused(refusal)) = first else {
            return first;
        };
        self.note(refusal.clone());
        if !refusal.is_egress() {
            return Err(FetchError::Refused(refusal));
        }
        let Ok(Some(fresh)) = self.fresh(url).await else {
            return Err(FetchError::Refused(refusal));
        };
        let again = self.download_once(&fresh, url, kind, max_bytes).await;
        if let Err(FetchError::Refused(refusal)) = &again {
            self.note(refusal.clone());
        }
        again
    }

    /// One download of `url`, named after `original`.
    async fn download_once(
        &self,
        url: &str,
        original: &str,
        kind: DeliveryKind,
        max_bytes: u64,
    ) -> Result<Downloaded, FetchError> {
        let file = fetch_to_file(
            &self.options.http,
            &self.options.egress,
            url,
            max_bytes,
            self.options.download_timeout,
            &self.options.temp_dir,
        )
        .await?;
        Ok(Downloaded {
            file_name: file_name_for(original, file.content_type.as_deref(), kind),
            file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_urls_and_files_are_told_apart_from_other_errors() {
        assert!(is_media_refusal(
            &ApiError::FailedToGetUrlContent,
            "Bad Request: failed to get HTTP URL content"
        ));
        let album =
            "Bad Request: failed to send message #2 with the error message \"WEBPAGE_CURL_FAILED\"";
        assert!(is_media_refusal(&ApiError::Unknown(album.into()), album));
        let wrong = "Bad Request: wrong type of the web page content";
        assert!(is_media_refusal(&ApiError::Unknown(wrong.into()), wrong));
        assert!(!is_media_refusal(
            &ApiError::ButtonDataInvalid,
            "Bad Request: BUTTON_DATA_INVALID"
        ));
        assert!(is_blocked(
            &ApiError::BotBlocked,
            "Forbidden: bot was blocked by the user"
        ));
        let forbidden = "Forbidden: bot was kicked";
        assert!(is_blocked(&ApiError::Unknown(forbidden.into()), forbidden));
    }

    #[test]
    fn file_names_come_from_the_url_or_the_content_type() {
        assert_eq!(
            file_name_for(
                "https://x.test/a/b/cat.webp?sig=1",
                None,
                DeliveryKind::Image
            ),
            "cat.webp"
        );
        assert_eq!(
            file_name_for(
                "https://x.test/file",
                Some("video/mp4"),
                DeliveryKind::Video
            ),
            "result.mp4"
        );
        assert_eq!(
            file_name_for("https://x.test/", None, DeliveryKind::Audio),
            "result.mp3"
        );
    }
}
