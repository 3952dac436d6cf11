//! A fake Telegram Bot API server speaking real HTTP on loopback.
//!
//! [`FakeTelegram::start`] binds `127.0.0.1:0` and serves the subset of the Bot
//! API kiebot uses, in Telegram's own shapes, so a real `teloxide::Bot` (or any
//! HTTP client) talks to it unchanged:
//!
//! ```text
//! POST /bot<token>/<method>          JSON, multipart (uploads, attach://) or query string
//! GET  /file/bot<token>/<file_path>  downloads of files users sent (after getFile)
//! ```
//!
//! A test plays the user through the handle: it injects updates
//! ([`send_text`](FakeTelegram::send_text),
//! [`press_button`](FakeTelegram::press_button),
//! [`pre_checkout`](FakeTelegram::pre_checkout), ...), which the bot receives
//! through `getUpdates` long polling or, once `setWebhook` was called, as POSTs
//! to the webhook with the `X-Telegram-Bot-Api-Secret-Token` header. It then
//! reads back what the bot did ([`sent`](FakeTelegram::sent),
//! [`messages_to`](FakeTelegram::messages_to),
//! [`answered_callbacks`](FakeTelegram::answered_callbacks), ...) and scripts
//! Telegram's failures ([`fail_next`](FakeTelegram::fail_next),
//! [`reject_url_media`](FakeTelegram::reject_url_media),
//! [`set_upload_limit`](FakeTelegram::set_upload_limit),
//! [`block_user`](FakeTelegram::block_user),
//! [`drop_reply_next`](FakeTelegram::drop_reply_next)). Stars charges are
//! listed by `getStarTransactions` (payments, refunds through the bot or
//! [`outside it`](FakeTelegram::refund_outside_the_bot), and
//! [charges whose update never arrives](FakeTelegram::register_charge)).
//! The webhook sender retries an update until the bot answers 2xx and keeps
//! [every attempt](FakeTelegram::webhook_attempts).
//!
//! What is faithful: response envelopes and error strings (so teloxide maps
//! them to its `ApiError` variants), `retry_after` on 429, message ids counted
//! per chat, `message is not modified` on identical edits, only inline
//! keyboards echoed back in messages, 4096-character texts and 1024-character
//! captions, 2-10 items per album, file ids that can be re-sent, the 20 MB
//! `getFile` limit and the 50 MB upload limit, callback and pre-checkout
//! queries that can be answered once.
//!
//! What is not: media sent by URL is never fetched (scripted refusals stand in
//! for Telegram failing to fetch), `parse_mode` is recorded but not rendered,
//! only private chats are modelled, and webhook URLs may be plain `http`.
//!
//! All state sits behind one mutex held only for in-memory bookkeeping (never
//! across an `.await`), so the server keeps up with thousands of requests per
//! second.

mod params;
mod server;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use state::State;

/// Telegram refuses to serve files above this size through `getFile`.
pub const GET_FILE_LIMIT_BYTES: u64 = 20 * 1024 * 1024;
/// Telegram refuses uploads above this size (per file) with 413.
pub const UPLOAD_LIMIT_BYTES: u64 = 50 * 1024 * 1024;
/// The longest message text Telegram accepts (UTF-16 code units).
pub const MAX_TEXT_UTF16: usize = 4096;
/// The longest media caption Telegram accepts (UTF-16 code units).
pub const MAX_CAPTION_UTF16: usize = 1024;

/// A handle on one running fake Bot API server. Clones share the server.
#[derive(Clone)]
pub struct FakeTelegram {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    token: String,
    bot_id: i64,
    addr: SocketAddr,
    state: Mutex<State>,
    /// Bumped whenever an update is queued or the webhook changes: wakes long
    /// polls and the webhook sender.
    updates_tx: watch::Sender<u64>,
    /// Bumped whenever a call changed what the readers see: wakes `wait_for`.
    activity_tx: watch::Sender<u64>,
    /// Subscribers of [`FakeTelegram::call_events`]; empty in most tests, so
    /// the common path pays one uncontended lock and a length check.
    call_watchers: Mutex<Vec<mpsc::UnboundedSender<CallEvent>>>,
    /// Uploads counted and dropped as they stream in
    /// ([`FakeTelegram::discard_uploads`]).
    pub(crate) discard_uploads: std::sync::atomic::AtomicBool,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bookkeeping behind; keep
        // serving rather than poisoning every later test assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bump_updates(&self) {
        self.updates_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn bump_activity(&self) {
        self.activity_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Tells the [`FakeTelegram::call_events`] subscribers about a call; the
    /// event is built only when someone listens.
    pub(crate) fn notify_call(&self, event: impl FnOnce() -> CallEvent) {
        let mut watchers = self.call_watchers.lock().unwrap_or_else(|e| e.into_inner());
        if watchers.is_empty() {
            return;
        }
        let event = event();
        watchers.retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// The fake bot's `@username`.
pub const BOT_USERNAME: &str = "kiebot_test_bot";

impl FakeTelegram {
    /// Starts a fake Bot API server on `127.0.0.1:0` with a fresh random
    /// token. The server lives as long as the Tokio runtime that started it.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        let bot_id: i64 = rand::random_range(1_000_000_000..2_000_000_000);
        let secret: u64 = rand::random();
        let token = format!("{bot_id}:TEST-{secret:016x}");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port for the fake Telegram");
        let addr = listener
            .local_addr()
            .expect("local address of a bound socket");
        let bot_user = serde_json::json!({
            "id": bot_id,
            "is_bot": true,
            "first_name": "Kiebot Test",
            "username": BOT_USERNAME,
        });
        let inner = Arc::new(Inner {
            token,
            bot_id,
            addr,
            state: Mutex::new(State::new(UPLOAD_LIMIT_BYTES, bot_user)),
            updates_tx: watch::channel(0).0,
            activity_tx: watch::channel(0).0,
            call_watchers: Mutex::new(Vec::new()),
            discard_uploads: std::sync::atomic::AtomicBool::new(false),
        });
        server::spawn(Arc::clone(&inner), listener);
        Self { inner }
    }

    /// The base URL to give teloxide (`Bot::new(token).set_api_url(url)`),
    /// e.g. `http://127.0.0.1:41234/`.
    pub fn api_url(&self) -> String {
        format!("http://{}/", self.inner.addr)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The bot token this server accepts (`<bot id>:<secret>`); any other
    /// token gets 401 Unauthorized.
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// The bot's own user id (the part of the token before the colon).
    pub fn bot_id(&self) -> i64 {
        self.inner.bot_id
    }

    /// The URL a client downloads a file from after `getFile` returned
    /// `file_path`.
    pub fn file_url(&self, file_path: &str) -> String {
        format!(
            "http://{}/file/bot{}/{file_path}",
            self.inner.addr, self.inner.token
        )
    }

    // ----- injecting updates -------------------------------------------------

    /// Queues an arbitrary update (its `update_id` is overwritten) and returns
    /// its id. For shapes the typed helpers below do not cover.
    pub fn inject_update(&self, update: Value) -> i64 {
        let id = self.inner.state().push_update(update);
        self.inner.bump_updates();
        id
    }

    /// The user sends a text message (commands get a `bot_command` entity, as
    /// Telegram adds). Returns the update id.
    pub fn send_text(&self, user: impl Into<FakeUser>, text: &str) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_text(&user, text);
        self.inner.bump_updates();
        id
    }

    /// The user presses an inline button with callback `data` under the bot's
    /// message `message_id` in their chat. The callback query id is the
    /// returned update id as a string, so tests can find its answer in
    /// [`answered_callbacks`](Self::answered_callbacks). A message id the bot
    /// never sent (or deleted) arrives as an inaccessible message (`date` 0),
    /// like a very old one.
    pub fn press_button(&self, user: impl Into<FakeUser>, message_id: i32, data: &str) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_callback(&user, message_id, data);
        self.inner.bump_updates();
        id
    }

    /// The user sends a photo. Telegram shows it in two sizes; the larger one
    /// carries `content` and can be fetched through `getFile`.
    pub fn send_photo(&self, user: impl Into<FakeUser>, content: impl Into<FileContent>) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_media(
            &user,
            MediaKind::Photo,
            content.into(),
            None,
            Some("image/jpeg"),
        );
        self.inner.bump_updates();
        id
    }

    /// The user sends a file as a document.
    pub fn send_document(
        &self,
        user: impl Into<FakeUser>,
        file_name: &str,
        mime_type: &str,
        content: impl Into<FileContent>,
    ) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_media(
            &user,
            MediaKind::Document,
            content.into(),
            Some(file_name),
            Some(mime_type),
        );
        self.inner.bump_updates();
        id
    }

    /// The user sends an audio file (shown in the music player).
    pub fn send_audio(
        &self,
        user: impl Into<FakeUser>,
        file_name: &str,
        mime_type: &str,
        content: impl Into<FileContent>,
    ) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_media(
            &user,
            MediaKind::Audio,
            content.into(),
            Some(file_name),
            Some(mime_type),
        );
        self.inner.bump_updates();
        id
    }

    /// The user records a voice message (OGG/Opus).
    pub fn send_voice(&self, user: impl Into<FakeUser>, content: impl Into<FileContent>) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_media(
            &user,
            MediaKind::Voice,
            content.into(),
            None,
            Some("audio/ogg"),
        );
        self.inner.bump_updates();
        id
    }

    /// The user confirms payment of an invoice: Telegram asks the bot to
    /// approve it. The pre-checkout query id is the returned update id as a
    /// string.
    pub fn pre_checkout(
        &self,
        user: impl Into<FakeUser>,
        payload: &str,
        currency: &str,
        total_amount: u32,
    ) -> i64 {
        let user = user.into();
        let id = self
            .inner
            .state()
            .user_pre_checkout(&user, payload, currency, total_amount);
        self.inner.bump_updates();
        id
    }

    /// The payment went through: a `successful_payment` service message in
    /// Telegram Stars (`XTR`). The charge can later be refunded once through
    /// `refundStarPayment`.
    pub fn successful_payment(
        &self,
        user: impl Into<FakeUser>,
        payload: &str,
        telegram_payment_charge_id: &str,
        total_amount: u32,
    ) -> i64 {
        let user = user.into();
        let id = self.inner.state().user_payment(
            &user,
            payload,
            telegram_payment_charge_id,
            total_amount,
        );
        self.inner.bump_updates();
        id
    }

    /// Telegram charged the user for an invoice but the `successful_payment`
    /// update never reaches the bot: the charge is only listed by
    /// `getStarTransactions` (and can be refunded).
    pub fn register_charge(
        &self,
        user: impl Into<FakeUser>,
        payload: &str,
        telegram_payment_charge_id: &str,
        total_amount: u32,
    ) {
        let user = user.into();
        self.inner
            .state()
            .record_charge(&user, payload, telegram_payment_charge_id, total_amount);
        self.inner.bump_activity();
    }

    /// The operator refunds a charge from Telegram's own tools, not through
    /// the bot: listed as an outgoing transaction. `false` if there is no
    /// such charge or it was refunded already.
    pub fn refund_outside_the_bot(&self, telegram_payment_charge_id: &str) -> bool {
        let done = self
            .inner
            .state()
            .refund_outside(telegram_payment_charge_id);
        self.inner.bump_activity();
        done
    }

    // ----- reading back ------------------------------------------------------

    /// Every call Telegram accepted that acts on a chat (send*, edit*,
    /// deleteMessage, sendChatAction, sendInvoice), in arrival order. Calls
    /// that failed are in [`rejected`](Self::rejected) instead.
    pub fn sent(&self) -> Vec<SentCall> {
        self.inner.state().sent.clone()
    }

    /// The accepted calls of one method, in order.
    pub fn sent_of(&self, method: &str) -> Vec<SentCall> {
        self.inner
            .state()
            .sent
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Calls that got an error answer (scripted faults included), in order.
    pub fn rejected(&self) -> Vec<RejectedCall> {
        self.inner.state().rejected.clone()
    }

    /// The bot's messages in `chat` as the user sees them now: edits applied,
    /// deleted ones gone, ordered by message id.
    pub fn messages_to(&self, chat: i64) -> Vec<BotMessage> {
        self.inner.state().bot_messages(chat)
    }

    /// Registers a callback query id for an update the test builds itself
    /// (and hands to the bot directly): `answerCallbackQuery` then accepts
    /// one answer to it, as for the presses of [`press_button`](Self::press_button).
    pub fn open_callback(&self, id: &str) {
        self.inner.state().open_callback(id);
    }

    /// The newest bot message in `chat` that carries an inline keyboard:
    /// its id and the `reply_markup` JSON. Cheap on long chats (no copy of
    /// the history), for tests that press thousands of buttons.
    pub fn last_keyboard(&self, chat: i64) -> Option<(i32, Value)> {
        self.inner.state().last_keyboard(chat)
    }

    /// How many requests reached `method` (successful or not).
    pub fn call_count(&self, method: &str) -> usize {
        self.inner.state().calls.get(method).copied().unwrap_or(0)
    }

    /// Requests per method so far.
    pub fn call_counts(&self) -> BTreeMap<String, usize> {
        self.inner
            .state()
            .calls
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// `answerCallbackQuery` calls, in order.
    pub fn answered_callbacks(&self) -> Vec<CallbackAnswer> {
        self.inner.state().callback_answers.clone()
    }

    /// `answerPreCheckoutQuery` calls, in order.
    pub fn pre_checkout_answers(&self) -> Vec<PreCheckoutAnswer> {
        self.inner.state().pre_checkout_answers.clone()
    }

    /// Every webhook delivery attempt, in order: the update id and the HTTP
    /// status the bot answered (`None`: no answer, e.g. a timeout).
    pub fn webhook_attempts(&self) -> Vec<(i64, Option<u16>)> {
        self.inner.state().webhook_attempts.clone()
    }

    /// Refunds done, in order: by `refundStarPayment` (even when its answer
    /// was dropped) and outside the bot.
    pub fn refunds(&self) -> Vec<StarRefund> {
        self.inner.state().refunds.clone()
    }

    /// The parameters of every successful `setMyCommands` call, in order.
    pub fn my_commands(&self) -> Vec<Value> {
        self.inner.state().commands.clone()
    }

    /// The webhook currently set, if any.
    pub fn webhook(&self) -> Option<WebhookInfo> {
        self.inner.state().webhook.clone()
    }

    /// Updates injected but not yet confirmed by the bot (through a later
    /// `getUpdates` offset or a 2xx webhook answer).
    pub fn pending_updates(&self) -> usize {
        self.inner.state().updates.len()
    }

    /// Waits until `predicate` holds, re-checking it after every call the
    /// server handles, for at most `timeout`. The predicate gets this handle,
    /// so it can look at anything (`|tg| tg.messages_to(42).len() == 2`).
    ///
    /// # Errors
    /// [`WaitTimeout`] (listing every call seen) when time runs out.
    pub async fn wait_for<F>(&self, mut predicate: F, timeout: Duration) -> Result<(), WaitTimeout>
    where
        F: FnMut(&FakeTelegram) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.activity_tx.subscribe();
        loop {
            rx.borrow_and_update();
            if predicate(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return if predicate(self) {
                    Ok(())
                } else {
                    Err(WaitTimeout {
                        timeout,
                        sent: self.sent(),
                        rejected: self.rejected(),
                    })
                };
            }
        }
    }

    /// Waits for the first accepted call matching `predicate` and returns it.
    ///
    /// # Errors
    /// [`WaitTimeout`] when no such call arrives within `timeout`.
    pub async fn wait_for_call<F>(
        &self,
        mut predicate: F,
        timeout: Duration,
    ) -> Result<SentCall, WaitTimeout>
    where
        F: FnMut(&SentCall) -> bool,
    {
        let mut found = None;
        self.wait_for(
            |tg| {
                found = tg.inner.state().sent.iter().find(|c| predicate(c)).cloned();
                found.is_some()
            },
            timeout,
        )
        .await?;
        found.ok_or_else(|| WaitTimeout {
            timeout,
            sent: self.sent(),
            rejected: self.rejected(),
        })
    }

    /// A stream of every API call handled from now on (except `getUpdates`),
    /// each stamped with the moment the server had read it, accepted or not.
    /// Cheaper than polling [`sent`](Self::sent) when a benchmark needs the
    /// latency of thousands of replies: nothing is cloned but the event.
    pub fn call_events(&self) -> mpsc::UnboundedReceiver<CallEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .call_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    // ----- faults ------------------------------------------------------------

    /// The next `n` calls to `method` (e.g. `"sendPhoto"`) fail with `fault`
    /// before doing anything. Queued faults are used up in order.
    pub fn fail_next(&self, method: &str, n: usize, fault: Fault) {
        let mut st = self.inner.state();
        let queue = st.faults.entry(method.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` requests that carry media by URL are refused as if
    /// Telegram could not fetch the URL: 400 `Bad Request: failed to get HTTP
    /// URL content` (for `sendMediaGroup`, the album form: `Bad Request:
    /// failed to send message #1 with the error message "WEBPAGE_CURL_FAILED"`).
    pub fn reject_url_media(&self, n: usize) {
        self.inner.state().url_rejections += n;
    }

    /// Per-file upload limit in bytes (default [`UPLOAD_LIMIT_BYTES`]); a
    /// larger upload gets 413 `Request Entity Too Large`. Lower it to test the
    /// limit without building 50 MB bodies.
    pub fn set_upload_limit(&self, bytes: u64) {
        self.inner.state().upload_limit = bytes;
    }

    /// The next `n` calls to `method` are carried out, but their answer is
    /// lost: the connection breaks off after the status line, as when a
    /// reply times out or a proxy drops it. The caller cannot tell whether
    /// the call took effect (e.g. `refundStarPayment` did refund).
    pub fn drop_reply_next(&self, method: &str, n: usize) {
        *self
            .inner
            .state()
            .drop_replies
            .entry(method.to_owned())
            .or_default() += n;
    }

    /// Uploaded files are counted as they stream in and then dropped (their
    /// bytes read back as zeros): a benchmark can push many large uploads
    /// through the fake without it holding them.
    pub fn discard_uploads(&self, discard: bool) {
        self.inner
            .discard_uploads
            .store(discard, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on every call aimed at this user's chat fails with 403
    /// `Forbidden: bot was blocked by the user`.
    pub fn block_user(&self, user_id: i64) {
        self.inner.state().blocked.insert(user_id);
    }

    /// The user unblocks the bot.
    pub fn unblock_user(&self, user_id: i64) {
        self.inner.state().blocked.remove(&user_id);
    }
}

impl fmt::Debug for FakeTelegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("FakeTelegram")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// A Telegram user the test acts as. `42.into()` gives an English-speaking
/// user with id 42.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// User id, also the id of the private chat with the bot.
    pub id: i64,
    /// First name.
    pub first_name: String,
    /// `@username` without the `@`.
    pub username: Option<String>,
    /// IETF language tag of the user's client (`"en"`, `"ru"`).
    pub language_code: Option<String>,
}

impl FakeUser {
    /// A user with `id`, first name `User <id>`, language `en`.
    pub fn new(id: i64) -> Self {
        Self {
            id,
            first_name: format!("User {id}"),
            username: None,
            language_code: Some("en".to_owned()),
        }
    }

    /// The same user with another client language.
    #[must_use]
    pub fn with_language(mut self, language_code: &str) -> Self {
        self.language_code = Some(language_code.to_owned());
        self
    }

    /// The same user with a `@username`.
    #[must_use]
    pub fn with_username(mut self, username: &str) -> Self {
        self.username = Some(username.to_owned());
        self
    }

    pub(crate) fn json(&self) -> Value {
        let mut user = serde_json::json!({
            "id": self.id,
            "is_bot": false,
            "first_name": self.first_name,
        });
        if let Some(username) = &self.username {
            user["username"] = Value::from(username.as_str());
        }
        if let Some(lang) = &self.language_code {
            user["language_code"] = Value::from(lang.as_str());
        }
        user
    }
}

impl From<i64> for FakeUser {
    fn from(id: i64) -> Self {
        Self::new(id)
    }
}

impl From<&FakeUser> for FakeUser {
    fn from(user: &FakeUser) -> Self {
        user.clone()
    }
}

/// The content of a file a user sends.
#[derive(Clone, PartialEq, Eq)]
pub enum FileContent {
    /// These exact bytes.
    Bytes(Bytes),
    /// `n` zero bytes, materialised only when downloaded: for size limits
    /// without allocating the file.
    Zeros(u64),
}

impl FileContent {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::Zeros(n) => *n,
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Zeros(n) => Bytes::from(vec![0u8; usize::try_from(*n).unwrap_or(usize::MAX)]),
        }
    }
}

impl fmt::Debug for FileContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Zeros(n) => write!(f, "Zeros({n})"),
        }
    }
}

impl From<Vec<u8>> for FileContent {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(Bytes::from(v))
    }
}

impl From<&'static [u8]> for FileContent {
    fn from(v: &'static [u8]) -> Self {
        Self::Bytes(Bytes::from_static(v))
    }
}

impl<const N: usize> From<&'static [u8; N]> for FileContent {
    fn from(v: &'static [u8; N]) -> Self {
        Self::Bytes(Bytes::from_static(v))
    }
}

impl From<Bytes> for FileContent {
    fn from(v: Bytes) -> Self {
        Self::Bytes(v)
    }
}

/// A scripted Bot API failure for [`FakeTelegram::fail_next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `Too Many Requests: retry after N` with `parameters.retry_after`.
    TooManyRequests {
        /// Seconds the client must wait.
        retry_after: u32,
    },
    /// 400 `Bad Request: message is not modified: ...`.
    NotModified,
    /// 403 `Forbidden: bot was blocked by the user`.
    Blocked,
    /// 400 `Bad Request: <description>`; pass the text after the prefix or a
    /// full description starting with `Bad Request:`.
    BadRequest(String),
    /// 500 `Internal Server Error`. Note that teloxide sleeps 10 s on any 5xx
    /// before reporting it.
    ServerError,
}

/// The kind of a media item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// A photo (`photo` array of sizes).
    Photo,
    /// A video.
    Video,
    /// An audio file for the music player.
    Audio,
    /// Any file.
    Document,
    /// A voice note.
    Voice,
}

impl MediaKind {
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::Photo => "photo",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Voice => "voice",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::Photo => "Photo",
            Self::Video => "Video",
            Self::Audio => "Audio",
            Self::Document => "Document",
            Self::Voice => "Voice",
        }
    }
}

/// Where the bot took a media item from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    /// An HTTP(S) URL Telegram was asked to fetch.
    Url(String),
    /// A multipart upload.
    Upload {
        /// The file name the client gave (may be empty).
        file_name: String,
        /// Size in bytes.
        size: u64,
    },
    /// A file id of a file Telegram already has.
    FileId(String),
}

/// One media item of an accepted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMedia {
    /// What it was sent as.
    pub kind: MediaKind,
    /// Where it came from.
    pub source: MediaSource,
    /// The file id Telegram answered with (for photos, the largest size).
    pub file_id: String,
    /// Its caption, if any.
    pub caption: Option<String>,
}

/// An accepted call that acts on a chat.
#[derive(Debug, Clone, PartialEq)]
pub struct SentCall {
    /// Bot API method, as Telegram documents it (`sendPhoto`).
    pub method: String,
    /// Target chat, when the call names one.
    pub chat_id: Option<i64>,
    /// The message created, edited or deleted (the first one of an album).
    pub message_id: Option<i32>,
    /// Every message created (albums create several).
    pub message_ids: Vec<i32>,
    /// Message text, or the caption of media.
    pub text: Option<String>,
    /// The `reply_markup` parameter as JSON.
    pub reply_markup: Option<Value>,
    /// Media items, in order.
    pub media: Vec<SentMedia>,
    /// Every parameter as JSON (uploads appear as their `attach://` names).
    pub params: Value,
}

/// One API call as seen by [`FakeTelegram::call_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Bot API method, as Telegram documents it (`editMessageText`).
    pub method: &'static str,
    /// Target chat, when the call names one.
    pub chat_id: Option<i64>,
    /// The message created or edited (from the answer, else the parameters).
    pub message_id: Option<i32>,
    /// The query answered, for `answerCallbackQuery`.
    pub callback_query_id: Option<String>,
    /// Whether Telegram accepted the call.
    pub ok: bool,
    /// When the server had read the request (before handling it).
    pub at: std::time::Instant,
}

/// A call that got an error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCall {
    /// Bot API method.
    pub method: String,
    /// Target chat, when the call names one.
    pub chat_id: Option<i64>,
    /// HTTP status and `error_code`.
    pub error_code: u16,
    /// Telegram's `description`.
    pub description: String,
}

/// A message of the bot as the user currently sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BotMessage {
    /// Message id within the chat.
    pub message_id: i32,
    /// Text, or the caption of media.
    pub text: Option<String>,
    /// The inline keyboard under it, as JSON.
    pub reply_markup: Option<Value>,
    /// Its media item, if any.
    pub media: Option<SentMedia>,
    /// Album id shared by the messages of one `sendMediaGroup`.
    pub media_group_id: Option<String>,
    /// Whether it was edited after sending.
    pub edited: bool,
    /// The full Telegram `Message` object.
    pub json: Value,
}

/// One `answerCallbackQuery` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackAnswer {
    /// The query answered (the update id of the press, as a string).
    pub callback_query_id: String,
    /// Notification text, if any.
    pub text: Option<String>,
    /// Whether it was an alert rather than a toast.
    pub show_alert: bool,
    /// URL to open, if any.
    pub url: Option<String>,
}

/// One `answerPreCheckoutQuery` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreCheckoutAnswer {
    /// The query answered (the update id of the query, as a string).
    pub pre_checkout_query_id: String,
    /// Whether the bot approved the payment.
    pub ok: bool,
    /// The reason shown to the user when it did not.
    pub error_message: Option<String>,
}

/// One successful `refundStarPayment` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarRefund {
    /// The user refunded.
    pub user_id: i64,
    /// The charge refunded.
    pub telegram_payment_charge_id: String,
}

/// The webhook set through `setWebhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookInfo {
    /// Where updates are POSTed.
    pub url: String,
    /// Sent as `X-Telegram-Bot-Api-Secret-Token` with every update.
    pub secret_token: Option<String>,
}

/// [`FakeTelegram::wait_for`] ran out of time.
#[derive(Clone)]
pub struct WaitTimeout {
    /// How long it waited.
    pub timeout: Duration,
    /// Every accepted call at that moment.
    pub sent: Vec<SentCall>,
    /// Every rejected call at that moment.
    pub rejected: Vec<RejectedCall>,
}

impl fmt::Debug for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "condition not met within {:?}; calls accepted:",
            self.timeout
        )?;
        for c in &self.sent {
            writeln!(
                f,
                "  {} chat={:?} msg={:?} text={:?}",
                c.method, c.chat_id, c.message_id, c.text
            )?;
        }
        writeln!(f, "calls rejected:")?;
        for c in &self.rejected {
            writeln!(
                f,
                "  {} chat={:?} {} {}",
                c.method, c.chat_id, c.error_code, c.description
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for WaitTimeout {}
