//! The fake's whole state and the Bot API methods that only touch it.
//! Everything here is synchronous and runs under the state mutex; the HTTP
//! layer (server.rs) does the reading, waiting and sending outside it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::params::{Params, Upload};
use super::{
    BotMessage, CallbackAnswer, FakeUser, Fault, FileContent, GET_FILE_LIMIT_BYTES,
    MAX_CAPTION_UTF16, MAX_TEXT_UTF16, MediaKind, MediaSource, PreCheckoutAnswer, RejectedCall,
    SentCall, SentMedia, StarRefund, WebhookInfo,
};

/// Every method the fake serves, spelled as Telegram documents them. Telegram
/// matches method names case-insensitively; so does the fake.
const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
    "answerCallbackQuery",
    "sendPhoto",
    "sendMediaGroup",
    "sendVideo",
    "sendAudio",
    "sendDocument",
    "sendVoice",
    "sendChatAction",
    "deleteMessage",
    "getFile",
    "sendInvoice",
    "answerPreCheckoutQuery",
    "refundStarPayment",
    "getStarTransactions",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
];

/// Methods that act on a chat: recorded in `sent`, refused for blocked users.
const CHAT_METHODS: &[&str] = &[
    "sendMessage",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
    "sendPhoto",
    "sendMediaGroup",
    "sendVideo",
    "sendAudio",
    "sendDocument",
    "sendVoice",
    "sendChatAction",
    "deleteMessage",
    "sendInvoice",
];

pub(crate) fn canonical_method(name: &str) -> Option<&'static str> {
    METHODS
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(name))
}

/// An error answer in Telegram's shape.
#[derive(Debug, Clone)]
pub(crate) struct ApiErr {
    pub code: u16,
    pub description: String,
    pub retry_after: Option<u32>,
}

impl ApiErr {
    fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(what: &str) -> Self {
        if what.starts_with("Bad Request:") {
            Self::new(400, what)
        } else {
            Self::new(400, format!("Bad Request: {what}"))
        }
    }

    pub(crate) fn too_large() -> Self {
        Self::new(413, "Request Entity Too Large")
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    pub(crate) fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    fn blocked() -> Self {
        Self::new(403, "Forbidden: bot was blocked by the user")
    }

    fn not_modified() -> Self {
        Self::bad_request(
            "message is not modified: specified new message content and reply markup are \
             exactly the same as a current content and reply markup of the message",
        )
    }

    fn webhook_active() -> Self {
        Self::new(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook \
             to delete the webhook first",
        )
    }

    fn from_fault(fault: &Fault) -> Self {
        match fault {
            Fault::TooManyRequests { retry_after } => Self {
                code: 429,
                description: format!("Too Many Requests: retry after {retry_after}"),
                retry_after: Some(*retry_after),
            },
            Fault::NotModified => Self::not_modified(),
            Fault::Blocked => Self::blocked(),
            Fault::BadRequest(desc) => Self::bad_request(desc),
            Fault::ServerError => Self::new(500, "Internal Server Error"),
        }
    }

    pub(crate) fn body(&self) -> Value {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(retry_after) = self.retry_after {
            body["parameters"] = json!({ "retry_after": retry_after });
        }
        body
    }
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct ChatState {
    /// Telegram numbers messages per chat, the user's and the bot's alike.
    next_message_id: i32,
    messages: BTreeMap<i32, StoredMessage>,
}

impl Default for ChatState {
    fn default() -> Self {
        Self {
            next_message_id: 1,
            messages: BTreeMap::new(),
        }
    }
}

struct StoredMessage {
    json: Value,
    from_bot: bool,
    media: Option<SentMedia>,
    edited: bool,
    deleted: bool,
}

struct StoredFile {
    kind: MediaKind,
    unique_id: String,
    content: FileContent,
    file_path: String,
    file_name: Option<String>,
    mime_type: Option<String>,
    /// For photos: the file id of the small size Telegram adds.
    thumb_id: Option<String>,
}

struct Charge {
    user_id: i64,
    user: Value,
    payload: String,
    amount: u32,
    refunded: bool,
}

/// Where a media parameter points.
enum MediaRef {
    Url(String),
    Upload(Upload),
    FileId(String),
}

pub(crate) struct State {
    bot_user: Value,
    pub(crate) updates: VecDeque<Value>,
    next_update_id: i64,
    pub(crate) calls: HashMap<String, usize>,
    pub(crate) faults: HashMap<String, VecDeque<Fault>>,
    pub(crate) url_rejections: usize,
    pub(crate) upload_limit: u64,
    pub(crate) blocked: HashSet<i64>,
    users: HashMap<i64, FakeUser>,
    chats: HashMap<i64, ChatState>,
    files: HashMap<String, StoredFile>,
    paths: HashMap<String, String>,
    next_file: u64,
    next_group: u64,
    pub(crate) sent: Vec<SentCall>,
    pub(crate) rejected: Vec<RejectedCall>,
    open_callbacks: HashSet<String>,
    pub(crate) callback_answers: Vec<CallbackAnswer>,
    open_pre_checkouts: HashSet<String>,
    pub(crate) pre_checkout_answers: Vec<PreCheckoutAnswer>,
    charges: HashMap<String, Charge>,
    pub(crate) refunds: Vec<StarRefund>,
    /// The bot's Star transactions, oldest first (`getStarTransactions`).
    star_transactions: Vec<Value>,
    /// Methods whose next calls are applied and then get no answer (the
    /// connection is dropped).
    pub(crate) drop_replies: HashMap<String, usize>,
    /// Every webhook delivery attempt: (update id, HTTP status or `None`
    /// when no answer came).
    pub(crate) webhook_attempts: Vec<(i64, Option<u16>)>,
    pub(crate) webhook: Option<WebhookInfo>,
    pub(crate) commands: Vec<Value>,
}

impl State {
    pub(crate) fn new(upload_limit: u64, bot_user: Value) -> Self {
        Self {
            bot_user,
            updates: VecDeque::new(),
            next_update_id: 1,
            calls: HashMap::new(),
            faults: HashMap::new(),
            url_rejections: 0,
            upload_limit,
            blocked: HashSet::new(),
            users: HashMap::new(),
            chats: HashMap::new(),
            files: HashMap::new(),
            paths: HashMap::new(),
            next_file: 1,
            next_group: 1,
            sent: Vec::new(),
            rejected: Vec::new(),
            open_callbacks: HashSet::new(),
            callback_answers: Vec::new(),
            open_pre_checkouts: HashSet::new(),
            pre_checkout_answers: Vec::new(),
            charges: HashMap::new(),
            refunds: Vec::new(),
            star_transactions: Vec::new(),
            drop_replies: HashMap::new(),
            webhook_attempts: Vec::new(),
            webhook: None,
            commands: Vec::new(),
        }
    }

    // ----- call bookkeeping -------------------------------------------------

    /// Counts the call and applies scripted faults and blocks. Runs before any
    /// method does anything.
    pub(crate) fn begin(&mut self, method: &'static str, params: &Params) -> Result<(), ApiErr> {
        *self.calls.entry(method.to_owned()).or_default() += 1;
        let fault = self.faults.get_mut(method).and_then(VecDeque::pop_front);
        let result = match fault {
            Some(fault) => Err(ApiErr::from_fault(&fault)),
            None => match params.i64("chat_id") {
                Some(chat) if CHAT_METHODS.contains(&method) && self.blocked.contains(&chat) => {
                    Err(ApiErr::blocked())
                }
                _ => Ok(()),
            },
        };
        if let Err(err) = &result {
            self.reject(method, params, err);
        }
        result
    }

    pub(crate) fn reject(&mut self, method: &str, params: &Params, err: &ApiErr) {
        self.rejected.push(RejectedCall {
            method: method.to_owned(),
            chat_id: params.i64("chat_id"),
            error_code: err.code,
            description: err.description.clone(),
        });
    }

    /// Runs every method except `getUpdates` (which waits, see server.rs).
    pub(crate) fn dispatch(&mut self, method: &'static str, p: &Params) -> Result<Value, ApiErr> {
        let result = match method {
            "getMe" => Ok(self.get_me()),
            "setWebhook" => self.set_webhook(p),
            "deleteWebhook" => {
                self.webhook = None;
                if p.bool("drop_pending_updates") {
                    self.updates.clear();
                }
                Ok(Value::Bool(true))
            }
            "getWebhookInfo" => Ok(self.webhook_info()),
            "sendMessage" => self.send_message(p),
            "editMessageText" => self.edit_message(p, Edit::Text),
            "editMessageCaption" => self.edit_message(p, Edit::Caption),
            "editMessageReplyMarkup" => self.edit_message(p, Edit::Markup),
            "answerCallbackQuery" => self.answer_callback(p),
            "sendPhoto" => self.send_single(p, "sendPhoto", MediaKind::Photo),
            "sendVideo" => self.send_single(p, "sendVideo", MediaKind::Video),
            "sendAudio" => self.send_single(p, "sendAudio", MediaKind::Audio),
            "sendDocument" => self.send_single(p, "sendDocument", MediaKind::Document),
            "sendVoice" => self.send_single(p, "sendVoice", MediaKind::Voice),
            "sendMediaGroup" => self.send_media_group(p),
            "sendChatAction" => self.send_chat_action(p),
            "deleteMessage" => self.delete_message(p),
            "getFile" => self.get_file(p),
            "sendInvoice" => self.send_invoice(p),
            "answerPreCheckoutQuery" => self.answer_pre_checkout(p),
            "refundStarPayment" => self.refund(p),
            "getStarTransactions" => Ok(self.get_star_transactions(p)),
            "setMyCommands" => {
                let commands = p
                    .json("commands")
                    .ok_or_else(|| ApiErr::bad_request("parameter \"commands\" is required"))?;
                if !commands.is_array() {
                    return Err(ApiErr::bad_request("can't parse commands JSON object"));
                }
                self.commands.push(p.to_json());
                Ok(Value::Bool(true))
            }
            "getMyCommands" => Ok(self
                .commands
                .last()
                .and_then(|c| c.get("commands").cloned())
                .unwrap_or_else(|| json!([]))),
            "deleteMyCommands" => {
                self.commands.push(json!({ "commands": [] }));
                Ok(Value::Bool(true))
            }
            _ => Err(ApiErr::not_found()),
        };
        if let Err(err) = &result {
            self.reject(method, p, err);
        }
        result
    }

    // ----- updates ----------------------------------------------------------

    fn alloc_update_id(&mut self) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        id
    }

    fn queue(&mut self, id: i64, mut update: Value) -> i64 {
        update["update_id"] = Value::from(id);
        self.updates.push_back(update);
        id
    }

    pub(crate) fn push_update(&mut self, update: Value) -> i64 {
        let id = self.alloc_update_id();
        self.queue(id, update)
    }

    /// Confirms updates below `offset` (negative: keep only the last
    /// `-offset`) and returns up to `limit` of the rest.
    pub(crate) fn take_updates(
        &mut self,
        offset: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Value>, ApiErr> {
        if self.webhook.is_some() {
            return Err(ApiErr::webhook_active());
        }
        match offset {
            Some(off) if off < 0 => {
                let keep = usize::try_from(-off).unwrap_or(usize::MAX);
                while self.updates.len() > keep {
                    self.updates.pop_front();
                }
            }
            Some(off) => {
                while self.updates.front().is_some_and(|u| update_id(u) < off) {
                    self.updates.pop_front();
                }
            }
            None => {}
        }
        Ok(self.updates.iter().take(limit).cloned().collect())
    }

    /// The next update for the webhook, if one is set.
    pub(crate) fn next_webhook_update(&self) -> Option<(WebhookInfo, Value)> {
        let hook = self.webhook.clone()?;
        let update = self.updates.front()?.clone();
        Some((hook, update))
    }

    /// The webhook answered 2xx for `id`: it is confirmed.
    pub(crate) fn confirm_webhook_update(&mut self, id: i64) {
        if self.updates.front().is_some_and(|u| update_id(u) == id) {
            self.updates.pop_front();
        }
    }

    fn remember(&mut self, user: &FakeUser) {
        self.users.insert(user.id, user.clone());
    }

    fn chat_json(&self, chat_id: i64) -> Value {
        match self.users.get(&chat_id) {
            Some(user) => {
                let mut chat =
                    json!({ "id": chat_id, "type": "private", "first_name": user.first_name });
                if let Some(username) = &user.username {
                    chat["username"] = Value::from(username.as_str());
                }
                chat
            }
            None if chat_id > 0 => {
                json!({ "id": chat_id, "type": "private", "first_name": format!("User {chat_id}") })
            }
            None => json!({ "id": chat_id, "type": "group", "title": format!("Group {chat_id}") }),
        }
    }

    fn next_message_id(&mut self, chat: i64) -> i32 {
        let state = self.chats.entry(chat).or_default();
        let id = state.next_message_id;
        state.next_message_id += 1;
        id
    }

    fn user_message(&mut self, user: &FakeUser) -> (i32, Map<String, Value>) {
        self.remember(user);
        let id = self.next_message_id(user.id);
        let msg = json!({
            "message_id": id,
            "from": user.json(),
            "chat": self.chat_json(user.id),
            "date": now(),
        });
        (id, into_map(msg))
    }

    fn store_user_message(&mut self, chat: i64, id: i32, msg: &Value) {
        self.chats.entry(chat).or_default().messages.insert(
            id,
            StoredMessage {
                json: msg.clone(),
                from_bot: false,
                media: None,
                edited: false,
                deleted: false,
            },
        );
    }

    pub(crate) fn user_text(&mut self, user: &FakeUser, text: &str) -> i64 {
        let (id, mut msg) = self.user_message(user);
        msg.insert("text".into(), Value::from(text));
        if let Some(command) = text.strip_prefix('/') {
            let len = 1 + command.split_whitespace().next().map_or(0, utf16_len);
            msg.insert(
                "entities".into(),
                json!([{ "type": "bot_command", "offset": 0, "length": len }]),
            );
        }
        let msg = Value::Object(msg);
        self.store_user_message(user.id, id, &msg);
        self.push_update(json!({ "message": msg }))
    }

    /// Takes `id` as a callback query Telegram sent and awaits an answer to.
    pub(crate) fn open_callback(&mut self, id: &str) {
        self.open_callbacks.insert(id.to_owned());
    }

    pub(crate) fn user_callback(&mut self, user: &FakeUser, message_id: i32, data: &str) -> i64 {
        self.remember(user);
        let message = self
            .chats
            .get(&user.id)
            .and_then(|c| c.messages.get(&message_id))
            .filter(|m| !m.deleted)
            .map(|m| m.json.clone())
            .unwrap_or_else(
                || json!({ "chat": self.chat_json(user.id), "message_id": message_id, "date": 0 }),
            );
        let id = self.alloc_update_id();
        self.open_callbacks.insert(id.to_string());
        let update = json!({
            "callback_query": {
                "id": id.to_string(),
                "from": user.json(),
                "message": message,
                "chat_instance": format!("ci{}", user.id),
                "data": data,
            }
        });
        self.queue(id, update)
    }

    pub(crate) fn user_media(
        &mut self,
        user: &FakeUser,
        kind: MediaKind,
        content: FileContent,
        file_name: Option<&str>,
        mime_type: Option<&str>,
    ) -> i64 {
        let file_id = self.new_file(kind, content, file_name, mime_type);
        let (id, mut msg) = self.user_message(user);
        msg.insert(kind.field().into(), self.media_json(&file_id));
        let msg = Value::Object(msg);
        self.store_user_message(user.id, id, &msg);
        self.push_update(json!({ "message": msg }))
    }

    pub(crate) fn user_pre_checkout(
        &mut self,
        user: &FakeUser,
        payload: &str,
        currency: &str,
        total_amount: u32,
    ) -> i64 {
        self.remember(user);
        let id = self.alloc_update_id();
        self.open_pre_checkouts.insert(id.to_string());
        let update = json!({
            "pre_checkout_query": {
                "id": id.to_string(),
                "from": user.json(),
                "currency": currency,
                "total_amount": total_amount,
                "invoice_payload": payload,
            }
        });
        self.queue(id, update)
    }

    /// A Stars charge Telegram made: kept for refunds and listed as an
    /// incoming transaction. A charge id seen before is listed once.
    pub(crate) fn record_charge(
        &mut self,
        user: &FakeUser,
        payload: &str,
        charge_id: &str,
        total_amount: u32,
    ) {
        if self.charges.contains_key(charge_id) {
            return;
        }
        self.charges.insert(
            charge_id.to_owned(),
            Charge {
                user_id: user.id,
                user: user.json(),
                payload: payload.to_owned(),
                amount: total_amount,
                refunded: false,
            },
        );
        self.star_transactions.push(json!({
            "id": charge_id,
            "amount": total_amount,
            "date": now(),
            "source": {
                "type": "user",
                "transaction_type": "invoice_payment",
                "user": user.json(),
                "invoice_payload": payload,
            },
        }));
    }

    fn get_star_transactions(&self, p: &Params) -> Value {
        let offset = usize::try_from(p.i64("offset").unwrap_or(0).max(0)).unwrap_or(0);
        let limit = usize::try_from(p.i64("limit").unwrap_or(100).clamp(1, 100)).unwrap_or(100);
        let page: Vec<Value> = self
            .star_transactions
            .iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        json!({ "transactions": page })
    }

    /// A refund made outside the bot (from Telegram's own tools): listed
    /// as an outgoing transaction. `false` if there is no such charge or it
    /// was refunded.
    pub(crate) fn refund_outside(&mut self, charge_id: &str) -> bool {
        match self.charges.get(charge_id) {
            Some(c) if !c.refunded => {
                let user_id = c.user_id;
                self.apply_refund(user_id, charge_id);
                true
            }
            _ => false,
        }
    }

    fn apply_refund(&mut self, user_id: i64, charge_id: &str) {
        let Some(charge) = self.charges.get_mut(charge_id) else {
            return;
        };
        charge.refunded = true;
        let tx = json!({
            "id": charge_id,
            "amount": charge.amount,
            "date": now(),
            "receiver": {
                "type": "user",
                "transaction_type": "invoice_payment",
                "user": charge.user.clone(),
                "invoice_payload": charge.payload.clone(),
            },
        });
        self.star_transactions.push(tx);
        self.refunds.push(StarRefund {
            user_id,
            telegram_payment_charge_id: charge_id.to_owned(),
        });
    }

    pub(crate) fn user_payment(
        &mut self,
        user: &FakeUser,
        payload: &str,
        charge_id: &str,
        total_amount: u32,
    ) -> i64 {
        self.record_charge(user, payload, charge_id, total_amount);
        let (id, mut msg) = self.user_message(user);
        msg.insert(
            "successful_payment".into(),
            json!({
                "currency": "XTR",
                "total_amount": total_amount,
                "invoice_payload": payload,
                "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": "",
            }),
        );
        let msg = Value::Object(msg);
        self.store_user_message(user.id, id, &msg);
        self.push_update(json!({ "message": msg }))
    }

    // ----- files ------------------------------------------------------------

    fn new_file(
        &mut self,
        kind: MediaKind,
        content: FileContent,
        file_name: Option<&str>,
        mime_type: Option<&str>,
    ) -> String {
        let n = self.next_file;
        self.next_file += 1;
        let (prefix, dir, ext) = match kind {
            MediaKind::Photo => ("AgAC", "photos", "jpg"),
            MediaKind::Video => ("BAAC", "videos", "mp4"),
            MediaKind::Audio => ("CQAC", "music", "mp3"),
            MediaKind::Document => ("BQAC", "documents", "bin"),
            MediaKind::Voice => ("AwAC", "voice", "oga"),
        };
        let ext = file_name
            .and_then(|name| name.rsplit_once('.').map(|(_, ext)| ext))
            .filter(|ext| !ext.is_empty() && ext.len() <= 5)
            .unwrap_or(ext);
        let file_id = format!("{prefix}fake{n:06}");
        let file_path = format!("{dir}/file_{n}.{ext}");
        let thumb_id = (kind == MediaKind::Photo).then(|| {
            let thumb = format!("{prefix}fake{n:06}t");
            self.files.insert(
                thumb.clone(),
                StoredFile {
                    kind,
                    unique_id: format!("AQADfake{n:06}t"),
                    content: FileContent::Zeros(content.len().min(4096)),
                    file_path: format!("{dir}/file_{n}_s.{ext}"),
                    file_name: None,
                    mime_type: None,
                    thumb_id: None,
                },
            );
            self.paths
                .insert(format!("{dir}/file_{n}_s.{ext}"), thumb.clone());
            thumb
        });
        self.paths.insert(file_path.clone(), file_id.clone());
        self.files.insert(
            file_id.clone(),
            StoredFile {
                kind,
                unique_id: format!("AQADfake{n:06}"),
                content,
                file_path,
                file_name: file_name.map(str::to_owned),
                mime_type: mime_type.map(str::to_owned),
                thumb_id,
            },
        );
        file_id
    }

    /// The message field for a stored file (`photo` is an array of sizes).
    fn media_json(&self, file_id: &str) -> Value {
        let Some(file) = self.files.get(file_id) else {
            return Value::Null;
        };
        let meta = |id: &str, f: &StoredFile| json!({ "file_id": id, "file_unique_id": f.unique_id, "file_size": f.content.len() });
        let mut value = meta(file_id, file);
        let obj = value.as_object_mut().expect("json! object");
        match file.kind {
            MediaKind::Photo => {
                obj.insert("width".into(), json!(1280));
                obj.insert("height".into(), json!(960));
                let mut sizes = Vec::new();
                if let Some(thumb) = file
                    .thumb_id
                    .as_deref()
                    .and_then(|t| self.files.get(t).map(|f| (t, f)))
                {
                    let mut small = meta(thumb.0, thumb.1);
                    small["width"] = json!(320);
                    small["height"] = json!(240);
                    sizes.push(small);
                }
                sizes.push(value);
                return Value::Array(sizes);
            }
            MediaKind::Video => {
                obj.insert("width".into(), json!(1280));
                obj.insert("height".into(), json!(720));
                obj.insert("duration".into(), json!(5));
            }
            MediaKind::Audio => {
                obj.insert("duration".into(), json!(30));
            }
            MediaKind::Voice => {
                obj.insert("duration".into(), json!(3));
            }
            MediaKind::Document => {}
        }
        if let Some(name) = &file.file_name {
            obj.insert("file_name".into(), Value::from(name.as_str()));
        }
        // Telegram always reports a MIME type for these (teloxide requires it
        // for audio and video).
        let mime = file.mime_type.as_deref().or(match file.kind {
            MediaKind::Video => Some("video/mp4"),
            MediaKind::Audio => Some("audio/mpeg"),
            MediaKind::Voice => Some("audio/ogg"),
            MediaKind::Document | MediaKind::Photo => None,
        });
        if let Some(mime) = mime {
            obj.insert("mime_type".into(), Value::from(mime));
        }
        value
    }

    fn get_file(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let id = p.str("file_id").unwrap_or_default();
        let file = self
            .files
            .get(&id)
            .ok_or_else(|| ApiErr::bad_request("invalid file_id"))?;
        if file.content.len() > GET_FILE_LIMIT_BYTES {
            return Err(ApiErr::bad_request("file is too big"));
        }
        Ok(json!({
            "file_id": id,
            "file_unique_id": file.unique_id,
            "file_size": file.content.len(),
            "file_path": file.file_path,
        }))
    }

    /// Content served at `/file/bot<token>/<path>`.
    pub(crate) fn file_content(&self, path: &str) -> Option<FileContent> {
        let id = self.paths.get(path)?;
        let file = self.files.get(id)?;
        (file.content.len() <= GET_FILE_LIMIT_BYTES).then(|| file.content.clone())
    }

    // ----- sending ----------------------------------------------------------

    fn chat_id(p: &Params) -> Result<i64, ApiErr> {
        match p.fields.get("chat_id") {
            None | Some(Value::Null) => Err(ApiErr::bad_request("chat_id is empty")),
            Some(_) => p
                .i64("chat_id")
                .ok_or_else(|| ApiErr::bad_request("chat not found")),
        }
    }

    /// `reply_markup` as sent, and the part Telegram echoes in the message
    /// (only inline keyboards are part of a message).
    fn reply_markup(p: &Params) -> Result<(Option<Value>, Option<Value>), ApiErr> {
        let Some(markup) = p.json("reply_markup") else {
            if p.fields.contains_key("reply_markup") {
                return Err(ApiErr::bad_request(
                    "can't parse reply keyboard markup JSON object",
                ));
            }
            return Ok((None, None));
        };
        let Some(rows) = markup.get("inline_keyboard") else {
            return Ok((Some(markup), None));
        };
        let rows = rows.as_array().ok_or_else(|| {
            ApiErr::bad_request(
                "can't parse inline keyboard button: field \"inline_keyboard\" must be an Array",
            )
        })?;
        for button in rows.iter().filter_map(Value::as_array).flatten() {
            if let Some(data) = button.get("callback_data").and_then(Value::as_str)
                && (data.is_empty() || data.len() > 64)
            {
                return Err(ApiErr::bad_request("BUTTON_DATA_INVALID"));
            }
        }
        Ok((Some(markup.clone()), Some(markup)))
    }

    fn bot_message(&mut self, chat: i64) -> (i32, Map<String, Value>) {
        let id = self.next_message_id(chat);
        let msg = json!({
            "message_id": id,
            "from": self.bot_user,
            "chat": self.chat_json(chat),
            "date": now(),
        });
        (id, into_map(msg))
    }

    fn store_bot_message(&mut self, chat: i64, id: i32, msg: &Value, media: Option<SentMedia>) {
        self.chats.entry(chat).or_default().messages.insert(
            id,
            StoredMessage {
                json: msg.clone(),
                from_bot: true,
                media,
                edited: false,
                deleted: false,
            },
        );
    }

    fn check_text(text: &str, caption: bool) -> Result<(), ApiErr> {
        if caption {
            if utf16_len(text) > MAX_CAPTION_UTF16 {
                return Err(ApiErr::bad_request("message caption is too long"));
            }
        } else if text.trim().is_empty() {
            return Err(ApiErr::bad_request("message text is empty"));
        } else if utf16_len(text) > MAX_TEXT_UTF16 {
            return Err(ApiErr::bad_request("message is too long"));
        }
        Ok(())
    }

    fn send_message(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let chat = Self::chat_id(p)?;
        let text = p.str("text").unwrap_or_default();
        Self::check_text(&text, false)?;
        let (markup, echoed) = Self::reply_markup(p)?;
        let (id, mut msg) = self.bot_message(chat);
        msg.insert("text".into(), Value::from(text.as_str()));
        if let Some(kb) = echoed {
            msg.insert("reply_markup".into(), kb);
        }
        let msg = Value::Object(msg);
        self.store_bot_message(chat, id, &msg, None);
        self.sent.push(SentCall {
            method: "sendMessage".into(),
            chat_id: Some(chat),
            message_id: Some(id),
            message_ids: vec![id],
            text: Some(text),
            reply_markup: markup,
            media: Vec::new(),
            params: p.to_json(),
        });
        Ok(msg)
    }

    fn media_ref(p: &Params, field: &str, value: Option<&str>) -> Result<MediaRef, ApiErr> {
        if let Some(upload) = p.upload(field, value) {
            return Ok(MediaRef::Upload(upload));
        }
        match value {
            None | Some("") => Err(ApiErr::bad_request(&format!(
                "there is no {field} in the request"
            ))),
            Some(v) if v.starts_with("attach://") => Err(ApiErr::bad_request(
                "wrong file identifier/HTTP URL specified",
            )),
            Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
                Ok(MediaRef::Url(v.to_owned()))
            }
            Some(v) => Ok(MediaRef::FileId(v.to_owned())),
        }
    }

    /// Checks every media item before anything is stored, so a refused call
    /// leaves no trace: uploads against the size limit, file ids against
    /// known files, then URLs against scripted fetch failures.
    fn check_media(&mut self, items: &[(MediaKind, &MediaRef)], album: bool) -> Result<(), ApiErr> {
        for (kind, item) in items {
            match item {
                MediaRef::Upload(up) if up.data.len() > self.upload_limit => {
                    return Err(ApiErr::too_large());
                }
                MediaRef::Upload(up) if up.data.is_empty() => {
                    return Err(ApiErr::bad_request("file must be non-empty"));
                }
                MediaRef::FileId(id) => match self.files.get(id) {
                    None => {
                        return Err(ApiErr::bad_request(
                            "wrong file identifier/HTTP URL specified",
                        ));
                    }
                    Some(f) if f.kind != *kind => {
                        return Err(ApiErr::bad_request(&format!(
                            "can't use file of type {} as {}",
                            f.kind.title(),
                            kind.title()
                        )));
                    }
                    Some(_) => {}
                },
                _ => {}
            }
        }
        let first_url = items
            .iter()
            .position(|(_, m)| matches!(m, MediaRef::Url(_)));
        if let Some(index) = first_url
            && self.url_rejections > 0
        {
            self.url_rejections -= 1;
            return Err(if album {
                ApiErr::bad_request(&format!(
                    "failed to send message #{} with the error message \"WEBPAGE_CURL_FAILED\"",
                    index + 1
                ))
            } else {
                ApiErr::bad_request("failed to get HTTP URL content")
            });
        }
        Ok(())
    }

    fn store_media(
        &mut self,
        kind: MediaKind,
        item: MediaRef,
        caption: Option<String>,
    ) -> (Value, SentMedia) {
        let (file_id, source) = match item {
            MediaRef::Url(url) => {
                let name = url
                    .split(['?', '#'])
                    .next()
                    .and_then(|u| u.rsplit('/').next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned);
                // Telegram fetched it; the fake only pretends a small file.
                let id = self.new_file(kind, FileContent::Zeros(1024), name.as_deref(), None);
                (id, MediaSource::Url(url))
            }
            MediaRef::Upload(up) => {
                let size = up.data.len();
                let name = (!up.file_name.is_empty()).then_some(up.file_name.as_str());
                let id = self.new_file(kind, up.data.clone(), name, None);
                (
                    id,
                    MediaSource::Upload {
                        file_name: up.file_name,
                        size,
                    },
                )
            }
            MediaRef::FileId(id) => (id.clone(), MediaSource::FileId(id)),
        };
        let json = self.media_json(&file_id);
        (
            json,
            SentMedia {
                kind,
                source,
                file_id,
                caption,
            },
        )
    }

    fn send_single(&mut self, p: &Params, method: &str, kind: MediaKind) -> Result<Value, ApiErr> {
        let chat = Self::chat_id(p)?;
        let field = kind.field();
        let caption = p.str("caption").filter(|c| !c.is_empty());
        if let Some(c) = &caption {
            Self::check_text(c, true)?;
        }
        let (markup, echoed) = Self::reply_markup(p)?;
        let value = p.str(field);
        let item = Self::media_ref(p, field, value.as_deref())?;
        self.check_media(&[(kind, &item)], false)?;
        let (media_json, media) = self.store_media(kind, item, caption.clone());
        let (id, mut msg) = self.bot_message(chat);
        msg.insert(field.into(), media_json);
        if let Some(c) = &caption {
            msg.insert("caption".into(), Value::from(c.as_str()));
        }
        if let Some(kb) = echoed {
            msg.insert("reply_markup".into(), kb);
        }
        let msg = Value::Object(msg);
        self.store_bot_message(chat, id, &msg, Some(media.clone()));
        self.sent.push(SentCall {
            method: method.into(),
            chat_id: Some(chat),
            message_id: Some(id),
            message_ids: vec![id],
            text: caption,
            reply_markup: markup,
            media: vec![media],
            params: p.to_json(),
        });
        Ok(msg)
    }

    fn send_media_group(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let chat = Self::chat_id(p)?;
        let media = p
            .json("media")
            .and_then(|m| m.as_array().cloned())
            .ok_or_else(|| ApiErr::bad_request("can't parse media JSON object"))?;
        if media.len() > 10 {
            return Err(ApiErr::bad_request("Too much messages to send as an album"));
        }
        if media.len() < 2 {
            return Err(ApiErr::bad_request("media group must contain 2-10 items"));
        }
        let mut items = Vec::with_capacity(media.len());
        for entry in &media {
            let kind = match entry.get("type").and_then(Value::as_str) {
                Some("photo") => MediaKind::Photo,
                Some("video") => MediaKind::Video,
                Some("audio") => MediaKind::Audio,
                Some("document") => MediaKind::Document,
                _ => {
                    return Err(ApiErr::bad_request(
                        "unsupported media type in the media group",
                    ));
                }
            };
            let caption = entry
                .get("caption")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty());
            if let Some(c) = caption {
                Self::check_text(c, true)?;
            }
            let value = entry.get("media").and_then(Value::as_str);
            let item = Self::media_ref(p, "media", value)?;
            items.push((kind, item, caption.map(str::to_owned)));
        }
        let kinds: HashSet<MediaKind> = items.iter().map(|(k, _, _)| *k).collect();
        let mixes_audio = kinds.contains(&MediaKind::Audio) && kinds.len() > 1;
        let mixes_docs = kinds.contains(&MediaKind::Document) && kinds.len() > 1;
        if mixes_audio || mixes_docs {
            return Err(ApiErr::bad_request(
                "documents and audio files can't be mixed with other media types",
            ));
        }
        let refs: Vec<(MediaKind, &MediaRef)> = items.iter().map(|(k, m, _)| (*k, m)).collect();
        self.check_media(&refs, true)?;

        let group_id = format!("{}", 13_000_000_000_000_000u64 + self.next_group);
        self.next_group += 1;
        let mut messages = Vec::with_capacity(items.len());
        let mut sent_media = Vec::with_capacity(items.len());
        let mut ids = Vec::with_capacity(items.len());
        for (kind, item, caption) in items {
            let (media_json, m) = self.store_media(kind, item, caption.clone());
            let (id, mut msg) = self.bot_message(chat);
            msg.insert("media_group_id".into(), Value::from(group_id.as_str()));
            msg.insert(kind.field().into(), media_json);
            if let Some(c) = &caption {
                msg.insert("caption".into(), Value::from(c.as_str()));
            }
            let msg = Value::Object(msg);
            self.store_bot_message(chat, id, &msg, Some(m.clone()));
            messages.push(msg);
            sent_media.push(m);
            ids.push(id);
        }
        self.sent.push(SentCall {
            method: "sendMediaGroup".into(),
            chat_id: Some(chat),
            message_id: ids.first().copied(),
            message_ids: ids,
            text: sent_media.iter().find_map(|m| m.caption.clone()),
            reply_markup: None,
            media: sent_media,
            params: p.to_json(),
        });
        Ok(Value::Array(messages))
    }

    fn edit_message(&mut self, p: &Params, edit: Edit) -> Result<Value, ApiErr> {
        if p.fields.contains_key("inline_message_id") {
            return Err(ApiErr::bad_request(
                "inline messages are not supported by the fake",
            ));
        }
        let chat = Self::chat_id(p)?;
        let message_id = p
            .i64("message_id")
            .and_then(|m| i32::try_from(m).ok())
            .ok_or_else(|| ApiErr::bad_request("message identifier is not specified"))?;
        let (markup, echoed) = Self::reply_markup(p)?;
        let new_text = match edit {
            Edit::Text => {
                let text = p.str("text").unwrap_or_default();
                Self::check_text(&text, false)?;
                Some(text)
            }
            Edit::Caption => {
                let caption = p.str("caption").unwrap_or_default();
                Self::check_text(&caption, true)?;
                Some(caption)
            }
            Edit::Markup => None,
        };
        let stored = self
            .chats
            .get_mut(&chat)
            .and_then(|c| c.messages.get_mut(&message_id))
            .filter(|m| m.from_bot && !m.deleted)
            .ok_or_else(|| ApiErr::bad_request("message to edit not found"))?;
        let field = match edit {
            Edit::Text => {
                if stored.json.get("text").is_none() {
                    return Err(ApiErr::bad_request(
                        "there is no text in the message to edit",
                    ));
                }
                Some("text")
            }
            Edit::Caption => {
                if stored.media.is_none() {
                    return Err(ApiErr::bad_request(
                        "there is no caption in the message to edit",
                    ));
                }
                Some("caption")
            }
            Edit::Markup => None,
        };
        let same_text = match (field, &new_text) {
            (Some(f), Some(t)) => stored.json.get(f).and_then(Value::as_str).unwrap_or("") == t,
            _ => true,
        };
        let same_markup = stored.json.get("reply_markup") == echoed.as_ref();
        if same_text && same_markup {
            return Err(ApiErr::not_modified());
        }
        let obj = stored
            .json
            .as_object_mut()
            .expect("stored messages are objects");
        if let (Some(f), Some(t)) = (field, &new_text) {
            if t.is_empty() {
                obj.remove(f);
            } else {
                obj.insert(f.into(), Value::from(t.as_str()));
            }
            if let (Some(media), "caption") = (stored.media.as_mut(), f) {
                media.caption = (!t.is_empty()).then(|| t.clone());
            }
        }
        match &echoed {
            Some(kb) => obj.insert("reply_markup".into(), kb.clone()),
            None => obj.remove("reply_markup"),
        };
        obj.insert("edit_date".into(), Value::from(now()));
        stored.edited = true;
        let msg = stored.json.clone();
        let method = match edit {
            Edit::Text => "editMessageText",
            Edit::Caption => "editMessageCaption",
            Edit::Markup => "editMessageReplyMarkup",
        };
        self.sent.push(SentCall {
            method: method.into(),
            chat_id: Some(chat),
            message_id: Some(message_id),
            message_ids: Vec::new(),
            text: new_text,
            reply_markup: markup,
            media: Vec::new(),
            params: p.to_json(),
        });
        Ok(msg)
    }

    fn delete_message(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let chat = Self::chat_id(p)?;
        let message_id = p
            .i64("message_id")
            .and_then(|m| i32::try_from(m).ok())
            .ok_or_else(|| ApiErr::bad_request("message identifier is not specified"))?;
        let stored = self
            .chats
            .get_mut(&chat)
            .and_then(|c| c.messages.get_mut(&message_id))
            .filter(|m| !m.deleted)
            .ok_or_else(|| ApiErr::bad_request("message to delete not found"))?;
        stored.deleted = true;
        self.sent.push(SentCall {
            method: "deleteMessage".into(),
            chat_id: Some(chat),
            message_id: Some(message_id),
            message_ids: Vec::new(),
            text: None,
            reply_markup: None,
            media: Vec::new(),
            params: p.to_json(),
        });
        Ok(Value::Bool(true))
    }

    fn send_chat_action(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let chat = Self::chat_id(p)?;
        let action = p.str("action").unwrap_or_default();
        if action.is_empty() {
            return Err(ApiErr::bad_request("wrong parameter action in request"));
        }
        self.sent.push(SentCall {
            method: "sendChatAction".into(),
            chat_id: Some(chat),
            message_id: None,
            message_ids: Vec::new(),
            text: Some(action),
            reply_markup: None,
            media: Vec::new(),
            params: p.to_json(),
        });
        Ok(Value::Bool(true))
    }

    fn answer_callback(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let id = p.str("callback_query_id").unwrap_or_default();
        if !self.open_callbacks.remove(&id) {
            return Err(ApiErr::bad_request(
                "query is too old and response timeout expired or query id is invalid",
            ));
        }
        self.callback_answers.push(CallbackAnswer {
            callback_query_id: id,
            text: p.str("text"),
            show_alert: p.bool("show_alert"),
            url: p.str("url"),
        });
        Ok(Value::Bool(true))
    }

    fn send_invoice(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let chat = Self::chat_id(p)?;
        let required = |key: &str| {
            p.str(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ApiErr::bad_request(&format!("parameter \"{key}\" is required")))
        };
        let title = required("title")?;
        let description = required("description")?;
        required("payload")?;
        let currency = required("currency")?;
        let prices = p
            .json("prices")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let total: i64 = prices
            .iter()
            .filter_map(|price| price.get("amount")?.as_i64())
            .sum();
        if prices.is_empty() || total <= 0 {
            return Err(ApiErr::bad_request("CURRENCY_TOTAL_AMOUNT_INVALID"));
        }
        if currency == "XTR" && prices.len() != 1 {
            return Err(ApiErr::bad_request("STARS_INVOICE_INVALID"));
        }
        let (markup, echoed) = Self::reply_markup(p)?;
        let (id, mut msg) = self.bot_message(chat);
        msg.insert(
            "invoice".into(),
            json!({
                "title": title,
                "description": description,
                "start_parameter": p.str("start_parameter").unwrap_or_default(),
                "currency": currency,
                "total_amount": total,
            }),
        );
        if let Some(kb) = echoed {
            msg.insert("reply_markup".into(), kb);
        }
        let msg = Value::Object(msg);
        self.store_bot_message(chat, id, &msg, None);
        self.sent.push(SentCall {
            method: "sendInvoice".into(),
            chat_id: Some(chat),
            message_id: Some(id),
            message_ids: vec![id],
            text: Some(title),
            reply_markup: markup,
            media: Vec::new(),
            params: p.to_json(),
        });
        Ok(msg)
    }

    fn answer_pre_checkout(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let id = p.str("pre_checkout_query_id").unwrap_or_default();
        let ok = p.bool("ok");
        let error_message = p.str("error_message").filter(|m| !m.is_empty());
        if !ok && error_message.is_none() {
            return Err(ApiErr::bad_request(
                "error_message is required when ok is false",
            ));
        }
        if !self.open_pre_checkouts.remove(&id) {
            return Err(ApiErr::bad_request("QUERY_ID_INVALID"));
        }
        self.pre_checkout_answers.push(PreCheckoutAnswer {
            pre_checkout_query_id: id,
            ok,
            error_message,
        });
        Ok(Value::Bool(true))
    }

    fn refund(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let user_id = p
            .i64("user_id")
            .ok_or_else(|| ApiErr::bad_request("USER_ID_INVALID"))?;
        let charge_id = p.str("telegram_payment_charge_id").unwrap_or_default();
        let charge = self
            .charges
            .get_mut(&charge_id)
            .filter(|c| c.user_id == user_id)
            .ok_or_else(|| ApiErr::bad_request("CHARGE_NOT_FOUND"))?;
        if charge.refunded {
            return Err(ApiErr::bad_request("CHARGE_ALREADY_REFUNDED"));
        }
        self.apply_refund(user_id, &charge_id);
        Ok(Value::Bool(true))
    }

    fn get_me(&self) -> Value {
        let mut me = self.bot_user.clone();
        me["can_join_groups"] = Value::Bool(true);
        me["can_read_all_group_messages"] = Value::Bool(false);
        me["supports_inline_queries"] = Value::Bool(false);
        me["can_connect_to_business"] = Value::Bool(false);
        me["has_main_web_app"] = Value::Bool(false);
        me
    }

    fn set_webhook(&mut self, p: &Params) -> Result<Value, ApiErr> {
        let url = p.str("url").unwrap_or_default();
        if p.bool("drop_pending_updates") {
            self.updates.clear();
        }
        if url.is_empty() {
            self.webhook = None;
            return Ok(Value::Bool(true));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ApiErr::bad_request(
                "bad webhook: HTTPS url must be provided for webhook",
            ));
        }
        let secret_token = p.str("secret_token").filter(|s| !s.is_empty());
        if let Some(secret) = &secret_token {
            let valid = secret.len() <= 256
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(ApiErr::bad_request(
                    "secret token contains unallowed characters",
                ));
            }
        }
        self.webhook = Some(WebhookInfo { url, secret_token });
        Ok(Value::Bool(true))
    }

    fn webhook_info(&self) -> Value {
        json!({
            "url": self.webhook.as_ref().map(|w| w.url.as_str()).unwrap_or(""),
            "has_custom_certificate": false,
            "pending_update_count": self.updates.len(),
        })
    }

    // ----- reading ----------------------------------------------------------

    /// The newest bot message in `chat` with an inline keyboard: its id
    /// and the keyboard, without copying the chat's history.
    pub(crate) fn last_keyboard(&self, chat: i64) -> Option<(i32, Value)> {
        let state = self.chats.get(&chat)?;
        state
            .messages
            .iter()
            .rev()
            .filter(|(_, m)| m.from_bot && !m.deleted)
            .find_map(|(id, m)| Some((*id, m.json.get("reply_markup")?.clone())))
    }

    pub(crate) fn bot_messages(&self, chat: i64) -> Vec<BotMessage> {
        let Some(state) = self.chats.get(&chat) else {
            return Vec::new();
        };
        state
            .messages
            .iter()
            .filter(|(_, m)| m.from_bot && !m.deleted)
            .map(|(id, m)| BotMessage {
                message_id: *id,
                text: m
                    .json
                    .get("text")
                    .or_else(|| m.json.get("caption"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                reply_markup: m.json.get("reply_markup").cloned(),
                media: m.media.clone(),
                media_group_id: m
                    .json
                    .get("media_group_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                edited: m.edited,
                json: m.json.clone(),
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Edit {
    Text,
    Caption,
    Markup,
}

fn update_id(update: &Value) -> i64 {
    update.get("update_id").and_then(Value::as_i64).unwrap_or(0)
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
