//! The kiebot front bot: what happens between a Telegram update and a
//! generation row with its money held.
//!
//! # Map
//!
//! - [`BotDeps`]: everything a handler needs (store, queues, catalog, pricing,
//!   admins, KIE client for uploads, the `teloxide::Bot`), built once by the
//!   binary and injected into the handler tree.
//! - `schema` (private): **the one function that builds the dptree handler
//!   tree**: payments first (they must never be refused), then a gate that
//!   loads the user and stops blocked users and (for non-admins) maintenance
//!   mode, then callback queries and messages.
//! - `state`: the dialogue, an enum stored as JSON in `store.dialogues()`
//!   (expires after 24 h), so a wizard survives restarts and moves between bot
//!   processes.
//! - `wizard`: the generation wizard, built only from the catalog schema
//!   (enum -> buttons, boolean -> yes/no, text and numbers typed with limits,
//!   uploads with add-more/done), its confirm screen and the confirm
//!   transaction.
//! - `menu`: /start, the main menu, model lists and cards, balance, history
//!   (re-send and repeat), help, language.
//! - `payments`: Telegram Stars invoices, `pre_checkout_query`,
//!   `successful_payment`, promo codes, the referral bonus.
//! - `admin`: statistics, user lookup, balance adjustments, block, refunds,
//!   failed generations, maintenance mode, limited admins' budgets, and who
//!   may do which (the owner, and admins with granted permissions);
//!   `broadcast`: a rate-limited message to every user with a report, sent
//!   by one front process at a time under a lease in the database, and taken
//!   over from where it stopped when that process dies.
//! - `commands`: the one table of commands (users' and admins'), parsed into
//!   an enum the handlers match on, with who may use each.
//! - `callbacks` and `messages`: route a parsed button ([`kiebot_tg::callback::Cb`])
//!   or a message (command, text, file) to the above.
//!
//! # The life of an update
//!
//! 1. [`run_polling`] (getUpdates) or [`webhook_router`] (POST from Telegram)
//!    receives the update. Polling hands each chat's updates to that chat's
//!    lane (in order per chat, concurrently across chats, never waiting for
//!    a whole batch).
//!    Before anything else, the sender's flood bucket ([`flood`]) is asked:
//!    a user sending faster than `FLOOD_RATE_PER_MIN` has the excess dropped
//!    (payments and admins never), so a flood costs neither database work
//!    nor a place in any lane.
//! 2. The update id is recorded (`store.updates()`, one write per polled
//!    batch, or per webhook call in [`handle_update`]): a redelivered update
//!    (after a crash, a webhook retry) stops here, except a payment
//!    ([`is_payment`]), handled at least once and credited once by its
//!    charge id: polling does not acknowledge a batch to Telegram before its
//!    payments are credited, the webhook answers 5xx until they are.
//! 3. The handler tree routes it. A callback query is always answered, with a
//!    friendly text when its button is stale, unknown or forged.
//! 4. A handler reads the dialogue, acts (database first, in one transaction
//!    where money is involved), writes the dialogue back, and answers the user
//!    through texts and keyboards from `kiebot-tg`, never hard-coded strings.
//! 5. Work outside the database happens after commit: a confirmed generation
//!    is pushed as `Job::Submit` to the queue; if the push fails, the
//!    reconciler finds the `pending` row and enqueues it again.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kiebot_domain::{Catalog, Money, Pricing, UserId};
use kiebot_jobs::Queues;
use kiebot_kie::Kie;
use kiebot_store::Store;
use kiebot_tg::DeliveryLimiter;
use kiebot_tg::texts::{self, Lang};
use teloxide::dispatching::UpdateFilterExt;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::types::{
    BotCommand, BotCommandScope, ChatId, InlineKeyboardMarkup, MessageId, Update, UpdateKind,
};

mod admin;
mod broadcast;
mod callbacks;
mod commands;
pub mod flood;
mod menu;
mod messages;
mod payments;
mod polling;
mod stars;
mod state;
mod wizard;

pub use broadcast::{
    BROADCAST_LEASE, BroadcastRunners, resume_broadcast, resume_broadcast_with_lease,
    watch_broadcasts,
};
pub use flood::{FloodConfig, FloodGate};
pub use payments::{
    DEFAULT_REFERRAL_BONUS, INVOICE_TTL, PAYMENTS_CREDITED, PAYMENTS_FLAGGED, STAR_PRESETS,
    settle_referral_spend,
};
pub use polling::run_polling;
pub use stars::{
    Reconciled, RefundOutcome, STARS_RECONCILE_TURN, reconcile_stars, refund_at_telegram,
    run_stars_reconciler,
};

/// Database connections a process running the front bot keeps open while
/// idle: about as many as it uses at once under load (two group-commit
/// batches, direct confirmations, the update record, the senders' read and
/// the handlers' own reads), so a burst of presses after a quiet spell never
/// waits for a new connection.
pub const WARM_CONNECTIONS: u32 = 10;

/// How long a dialogue (a half-filled wizard) is kept.
pub const DIALOGUE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings key of maintenance mode (`"1"` = on).
pub const MAINTENANCE_KEY: &str = kiebot_store::settings::MAINTENANCE;

/// Everything the handlers need, injected into the handler tree.
#[derive(Clone)]
pub struct BotDeps {
    /// The database.
    pub store: Store,
    /// The job queues (confirmed generations are pushed as `Submit`).
    pub queues: Queues,
    /// The validated model catalog.
    pub catalog: Arc<Catalog>,
    /// The operator's price formula.
    pub pricing: Pricing,
    /// `ADMIN_IDS`; the first is the owner, who is never charged.
    pub admin_ids: Vec<UserId>,
    /// Concurrent generations per user (`MAX_ACTIVE_GENERATIONS`).
    pub max_active: u32,
    /// `DRY_RUN`: generations are created at price 0 and KIE is not called.
    pub dry_run: bool,
    /// KIE for user uploads and the account's credits; a dry run
    /// ([`kiebot_kie::DryRunKie`]) gives uploads a placeholder URL.
    pub kie: Arc<dyn Kie>,
    /// The Bot API client.
    pub bot: Bot,
    /// Minor units credited per Telegram Star (`STARS_RATE`).
    pub stars_rate: Money,
    /// The outgoing-message budget shared with the workers (broadcasts ask
    /// it before every message).
    pub limiter: Arc<dyn DeliveryLimiter>,
    /// This process's broadcast runners, stopped with it.
    pub broadcasts: BroadcastRunners,
    /// When an invitee's activity pays their inviter (`REFERRAL_*`).
    pub referral: ReferralPolicy,
    /// What admins other than the owner may move (`ADMIN_*`).
    pub admin_limits: AdminPolicy,
    /// Per-user flood control of incoming updates (and the promo attempt
    /// limit), checked before an update costs a database round trip.
    pub flood: Arc<FloodGate>,
}

/// When an invitee's activity pays their inviter; the bonus itself is the
/// `referral_bonus_minor` setting (default [`DEFAULT_REFERRAL_BONUS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferralPolicy {
    /// The smallest top-up, in Stars, that qualifies.
    pub min_stars: u32,
    /// Captured spending that qualifies too (`None`: off).
    pub min_spend: Option<Money>,
    /// Paid referrals per inviter per calendar month (UTC).
    pub monthly_cap: u32,
}

impl Default for ReferralPolicy {
    fn default() -> Self {
        ReferralPolicy {
            min_stars: 100,
            min_spend: None,
            monthly_cap: 10,
        }
    }
}

/// What admins other than the owner may move; the owner is not limited
/// (every action of theirs is audited all the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminPolicy {
    /// The largest single adjustment (either sign) or refund.
    pub max_single: Money,
    /// What one admin's adjustments and refunds may add up to over 24 h.
    pub daily_budget: Money,
    /// Adjustments larger than this by anyone but the owner are reported
    /// to the owner.
    pub notify_above: Money,
}

impl Default for AdminPolicy {
    fn default() -> Self {
        AdminPolicy {
            max_single: Money::from_minor(100_000),
            daily_budget: Money::from_minor(500_000),
            notify_above: Money::from_minor(50_000),
        }
    }
}

impl BotDeps {
    /// The owner: the first admin id.
    pub fn owner(&self) -> Option<UserId> {
        self.admin_ids.first().copied()
    }
}

/// How stale the list of models off sale may be when a menu is drawn.
const HOLDS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors inside handlers: logged with their cause; the user sees a generic
/// message.
type HandlerError = anyhow::Error;

/// One user's view of an update, built by the gate.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub deps: Arc<BotDeps>,
    pub user: kiebot_store::User,
    pub uid: UserId,
    pub lang: Lang,
    pub chat: ChatId,
    pub update_id: i64,
    /// The message a pressed button sits under (edited in place).
    pub origin: Option<MessageId>,
    /// Whether this update created the user (first contact).
    pub first_contact: bool,
    /// The dialogue: read by the gate with the user, then kept in step with
    /// every write while the update is handled (updates of one chat are
    /// handled one at a time, so nobody else changes it meanwhile).
    pub dialogue: Arc<std::sync::Mutex<state::Dialogue>>,
    /// The button press being handled (`None` for a message).
    pub press: Option<Arc<Press>>,
}

/// A button press, answered once: by its handler as soon as its reply is
/// out when slower work follows (see [`Ctx::answer_press`]), otherwise by
/// [`callbacks::handle`] when the handler returns.
pub(crate) struct Press {
    id: teloxide::types::CallbackQueryId,
    answered: std::sync::atomic::AtomicBool,
}

impl Press {
    pub fn new(id: teloxide::types::CallbackQueryId) -> Press {
        Press {
            id,
            answered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Claims the answer; `false` if it was already sent.
    fn claim(&self) -> bool {
        !self
            .answered
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }
}

impl Ctx {
    /// Answers the press being handled, with no note, unless it has been
    /// answered. A handler calls it once its reply is shown and before work
    /// the user need not wait for (a queue push that, on SQLite's single
    /// writer under load, can take seconds), so the button's spinner stops
    /// with the reply.
    pub async fn answer_press(&self) {
        let Some(press) = self.press.as_ref().filter(|p| p.claim()) else {
            return;
        };
        if let Err(e) = self.deps.bot.answer_callback_query(press.id.clone()).await {
            tracing::warn!(user = %self.uid, error = %e, "answerCallbackQuery failed");
        }
    }

    /// Whether `model` is off sale (taken off by the catalog check or an
    /// operator). Read at most every few seconds per process; a failure to
    /// read counts as on sale (a broken model then fails at KIE, its hold
    /// released).
    pub async fn off_sale(&self, model: &kiebot_domain::ModelId) -> bool {
        self.held_models().await.contains_key(model.as_str())
    }

    /// Tells the user the model is off sale for now, with the way home.
    pub async fn show_off_sale(&self) -> anyhow::Result<()> {
        self.show(
            kiebot_tg::texts::model_off_sale(self.lang),
            Some(kiebot_tg::keyboards::home(self.lang)),
        )
        .await
    }

    /// Every model off sale now.
    pub async fn held_models(
        &self,
    ) -> Arc<std::collections::BTreeMap<String, kiebot_store::model_holds::ModelHold>> {
        match self.deps.store.model_holds().recent(HOLDS_MAX_AGE).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "model holds unreadable; taken as none");
                Arc::default()
            }
        }
    }

    pub fn is_admin(&self) -> bool {
        self.deps.admin_ids.contains(&self.uid)
            || matches!(
                self.user.role,
                kiebot_store::Role::Admin | kiebot_store::Role::Owner
            )
    }

    pub fn is_owner(&self) -> bool {
        self.deps.owner() == Some(self.uid) || self.user.role == kiebot_store::Role::Owner
    }

    /// What this user may do as an admin: everything for the owner; what
    /// the owner granted otherwise, plus `support` for the other
    /// `ADMIN_IDS` (they could look users up before permissions existed).
    pub async fn permissions(
        &self,
    ) -> anyhow::Result<std::collections::BTreeSet<kiebot_store::Permission>> {
        if self.is_owner() {
            return Ok(kiebot_store::Permission::ALL.into_iter().collect());
        }
        let mut granted = self.deps.store.admins().permissions(self.uid).await?;
        if self.deps.admin_ids.contains(&self.uid) {
            granted.insert(kiebot_store::Permission::Support);
        }
        Ok(granted)
    }

    /// Shows a screen: edits the message the button was under, or sends a
    /// new message when there is none or it cannot be edited (media).
    pub async fn show(&self, text: String, kb: Option<InlineKeyboardMarkup>) -> anyhow::Result<()> {
        if let Some(mid) = self.origin {
            let mut req = self
                .deps
                .bot
                .edit_message_text(self.chat, mid, text.clone());
            if let Some(kb) = kb.clone() {
                req = req.reply_markup(kb);
            }
            match req.await {
                Ok(_) => return Ok(()),
                Err(teloxide::RequestError::Api(teloxide::ApiError::MessageNotModified)) => {
                    return Ok(());
                }
                Err(_) => {}
            }
        }
        self.send(text, kb).await
    }

    /// Sends a new message.
    pub async fn send(&self, text: String, kb: Option<InlineKeyboardMarkup>) -> anyhow::Result<()> {
        let mut req = self.deps.bot.send_message(self.chat, text);
        if let Some(kb) = kb {
            req = req.reply_markup(kb);
        }
        req.await?;
        Ok(())
    }
}

/// The handler tree: the one place that decides which handler sees an update.
fn schema() -> UpdateHandler<HandlerError> {
    dptree::entry()
        // Money first: answered and credited even for blocked users and in
        // maintenance (pre-checkout refuses then, with a message).
        .branch(Update::filter_pre_checkout_query().endpoint(payments::pre_checkout))
        .branch(
            Update::filter_message()
                .filter_map(|m: Message| m.successful_payment().cloned())
                .endpoint(payments::successful_payment),
        )
        .branch(
            Update::filter_callback_query()
                .filter_map_async(callbacks::gate)
                .endpoint(callbacks::handle),
        )
        .branch(
            Update::filter_message()
                .filter_map_async(messages::gate)
                .endpoint(messages::handle),
        )
}

static TREE: LazyLock<UpdateHandler<HandlerError>> = LazyLock::new(schema);

/// What became of an update given to [`handle_update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Handled, or rightly skipped (a redelivery): Telegram may forget it.
    Done,
    /// Not recorded, or a payment not credited: Telegram must deliver it
    /// again (the webhook answers 5xx).
    Retry,
}

/// Whether an update moves money: a `pre_checkout_query` or a
/// `successful_payment`. These are handled at least once (never skipped by
/// the de-duplication record) because handling them is idempotent: the
/// credit is keyed by the charge id, and a pre-checkout answered twice is
/// refused by Telegram the second time.
pub fn is_payment(u: &Update) -> bool {
    match &u.kind {
        UpdateKind::PreCheckoutQuery(_) => true,
        UpdateKind::Message(m) => m.successful_payment().is_some(),
        _ => false,
    }
}

/// Handles one update: de-duplicates it by `update_id`, then routes it
/// through the handler tree. Handler errors are logged; the outcome says
/// whether Telegram must deliver the update again.
///
/// The update id is recorded before the handler runs, so delivery of a
/// click or a message is at most once: a crash mid-handler loses it (the
/// user repeats it), never applies it twice. A payment is at least once: it
/// is handled even when the record fails or says it was seen (its credit is
/// keyed by the charge id), and [`Handled::Retry`] until it is credited.
pub async fn handle_update(deps: &BotDeps, update: Update) -> Handled {
    // Before anything touches the database: a flood costs nothing but the
    // bucket check (webhook mode; polling checks its batches itself).
    // Payments are never dropped (see `flood`).
    if !deps.flood.admit(deps, &update) {
        return Handled::Done;
    }
    let update_id = i64::from(update.id.0);
    let payment = is_payment(&update);
    match deps.store.updates().first_time(update_id).await {
        Ok(true) => {}
        Ok(false) if payment => {
            tracing::debug!(update_id, "payment update seen before; handled again");
        }
        Ok(false) => {
            tracing::debug!(update_id, "duplicate update ignored");
            return Handled::Done;
        }
        Err(e) if payment => {
            tracing::error!(update_id, error = %e, "cannot record a payment update; handling it all the same");
        }
        Err(e) => {
            // Without the de-duplication record we cannot tell a redelivery
            // from a new update, so Telegram is asked to deliver it again.
            tracing::error!(update_id, error = %e, "cannot record update; asking for it again");
            return Handled::Retry;
        }
    }
    let ok = dispatch(Arc::new(deps.clone()), update, Prefetched::default()).await;
    if payment && !ok {
        Handled::Retry
    } else {
        Handled::Done
    }
}

/// The sender's user row and dialogue, read before the update reached its
/// handler (for a whole getUpdates batch in one query), or nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prefetched(Option<Arc<(UserId, Option<UserRead>)>>);

/// A user with their dialogue JSON (`None`: no dialogue or expired).
type UserRead = (kiebot_store::User, Option<String>);

impl Prefetched {
    /// What was read for `user`: `None` when `user` was not read,
    /// `Some(None)` when they do not exist.
    pub(crate) fn new(user: UserId, read: Option<UserRead>) -> Self {
        Prefetched(Some(Arc::new((user, read))))
    }

    /// The user and their dialogue JSON: the prefetched read when it is
    /// `user`'s, a fresh read otherwise. `None`: no such user.
    pub(crate) async fn user_with_dialogue(
        &self,
        deps: &BotDeps,
        user: UserId,
    ) -> Result<Option<UserRead>, kiebot_store::StoreError> {
        match self.0.as_deref() {
            Some((read_for, read)) if *read_for == user => Ok(read.clone()),
            _ => {
                deps.store
                    .users()
                    .get_with_dialogue(user, kiebot_store::now_ms())
                    .await
            }
        }
    }
}

/// Routes an update already recorded as seen through the handler tree;
/// `false` if its handler failed.
pub(crate) async fn dispatch(deps: Arc<BotDeps>, update: Update, pre: Prefetched) -> bool {
    let update_id = i64::from(update.id.0);
    let kind = update_kind(&update);
    let span = tracing::info_span!("bot.update", update_id, kind);
    let routed =
        tracing::Instrument::instrument(TREE.dispatch(dptree::deps![deps, update, pre]), span)
            .await;
    match routed {
        std::ops::ControlFlow::Break(Ok(())) => true,
        std::ops::ControlFlow::Break(Err(e)) => {
            tracing::error!(
                update_id,
                kind,
                error = format!("{e:#}"),
                "update handler failed"
            );
            false
        }
        std::ops::ControlFlow::Continue(_) => {
            tracing::debug!(update_id, kind, "update not handled");
            true
        }
    }
}

fn update_kind(u: &Update) -> &'static str {
    match &u.kind {
        UpdateKind::Message(_) => "message",
        UpdateKind::CallbackQuery(_) => "callback_query",
        UpdateKind::PreCheckoutQuery(_) => "pre_checkout_query",
        _ => "other",
    }
}

/// The webhook endpoint: `POST /telegram/webhook`, accepted only with the
/// `X-Telegram-Bot-Api-Secret-Token` header equal to `secret_token` (401
/// otherwise). The update is handled before the answer; a retry by Telegram
/// (after a timeout) is recognised by its update id and skipped, except a
/// payment, handled again until credited. An update that could not be
/// recorded, or a payment not credited, is answered 503, so Telegram
/// delivers it again.
pub fn webhook_router(deps: BotDeps, secret_token: String) -> axum::Router {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    #[derive(Clone)]
    struct Hook {
        deps: Arc<BotDeps>,
        secret: Arc<str>,
    }

    async fn receive(
        State(h): State<Hook>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let given = headers
            .get("x-telegram-bot-api-secret-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if h.secret.is_empty() || !constant_time_eq(given, h.secret.as_bytes()) {
            return StatusCode::UNAUTHORIZED;
        }
        match serde_json::from_slice::<Update>(&body) {
            Ok(update) => match handle_update(&h.deps, update).await {
                Handled::Done => StatusCode::OK,
                Handled::Retry => StatusCode::SERVICE_UNAVAILABLE,
            },
            Err(e) => {
                // Not retryable: Telegram would send the same bytes again.
                tracing::warn!(error = %e, "webhook body is not an update");
                StatusCode::OK
            }
        }
    }

    axum::Router::new()
        .route("/telegram/webhook", post(receive))
        .with_state(Hook {
            deps: Arc::new(deps),
            secret: Arc::from(secret_token),
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Registers the command list in Russian and English (`setMyCommands`, the
/// English list as the default for every other language).
pub async fn set_commands(bot: &Bot) -> anyhow::Result<()> {
    for lang in Lang::ALL {
        let cmds: Vec<BotCommand> = commands::Command::registered()
            .filter_map(|c| {
                texts::command_description(lang, c.name()).map(|d| BotCommand::new(c.name(), d))
            })
            .collect();
        let req = bot.set_my_commands(cmds).scope(BotCommandScope::Default);
        match lang {
            Lang::Ru => req.language_code("ru").await?,
            Lang::En => req.await?,
        };
    }
    Ok(())
}
