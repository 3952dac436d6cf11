//! A test app: the real handlers against the fake Bot API, the fake KIE, a
//! fresh database and the embedded SQLite queue, plus a helper that plays a
//! user (send text, press the button whose label matches, read back the last
//! message and its keyboard).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use kiebot_bot::{BotDeps, handle_update};
use kiebot_domain::{Catalog, GenerationStatus, Money, Pricing, UserId};
use kiebot_jobs::Queues;
use kiebot_jobs::names::QueueNames;
use kiebot_kie::{ApiKey, DryRunKie, Kie, KieClient, KieConfig};
use kiebot_store::{Generation, Store};
use kiebot_testkit::TestDb;
use kiebot_testkit::kie::FakeKie;
use kiebot_testkit::telegram::{BotMessage, FakeTelegram, FakeUser};
use serde_json::Value;
use teloxide::prelude::*;

/// A tiny valid PNG (1x1).
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];
/// The start of an MP4 (`ftyp` box).
pub const MP4: &[u8] = &[
    0x00, 0x00, 0x00, 0x18, b'f', b't', b'y', b'p', b'm', b'p', b'4', b'2', 0, 0, 0, 0, b'm', b'p',
    b'4', b'2', b'i', b's', b'o', b'm',
];
/// An MP3 frame header.
pub const MP3: &[u8] = &[
    b'I', b'D', b'3', 3, 0, 0, 0, 0, 0, 0, 0xFF, 0xFB, 0x90, 0x64, 0, 0,
];

pub struct App {
    pub tg: FakeTelegram,
    pub kie: FakeKie,
    pub db: TestDb,
    /// The queue's database (the app database on SQLite).
    queue_db: Option<TestDb>,
    pub deps: BotDeps,
    pub catalog: Arc<Catalog>,
    offset: i32,
    ns: String,
    pub dry_run: bool,
    pub admin_ids: Vec<UserId>,
}

pub struct Options {
    pub postgres: bool,
    pub dry_run: bool,
    pub admin_ids: Vec<UserId>,
    pub max_active: u32,
    pub referral: kiebot_bot::ReferralPolicy,
    pub admin_limits: kiebot_bot::AdminPolicy,
    /// Off unless a test is about flood control: the scripted users here
    /// press faster than any person.
    pub flood: kiebot_bot::FloodConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            postgres: false,
            dry_run: false,
            admin_ids: vec![UserId(1)],
            max_active: 5,
            referral: kiebot_bot::ReferralPolicy::default(),
            admin_limits: kiebot_bot::AdminPolicy::default(),
            flood: kiebot_bot::FloodConfig::off(),
        }
    }
}

impl App {
    pub async fn start() -> App {
        Self::with(Options::default()).await
    }

    pub async fn with(o: Options) -> App {
        let tg = FakeTelegram::start().await;
        let kie = FakeKie::start().await;
        let (db, queue_db) = if o.postgres {
            (TestDb::postgres().await, Some(TestDb::sqlite()))
        } else {
            (TestDb::sqlite(), None)
        };
        let catalog = Arc::new(kiebot_catalog::load_default().expect("the shipped catalog loads"));
        let ns = format!("t{:x}", rand::random::<u32>());
        let deps = build_deps(&tg, &kie, &db, queue_db.as_ref(), &catalog, &ns, &o).await;
        App {
            tg,
            kie,
            db,
            queue_db,
            deps,
            catalog,
            offset: 0,
            ns,
            dry_run: o.dry_run,
            admin_ids: o.admin_ids,
        }
    }

    /// A restart: new store, queue and bot handles on the same database.
    pub async fn restart(&mut self) {
        self.deps = self.another_process().await;
    }

    /// Another front process on the same database, queue and Bot API: its
    /// own store pool and handles, as a second `kiebot-bot` would have.
    pub async fn another_process(&self) -> BotDeps {
        let o = Options {
            postgres: self.queue_db.is_some(),
            dry_run: self.dry_run,
            admin_ids: self.admin_ids.clone(),
            max_active: self.deps.max_active,
            referral: self.deps.referral,
            admin_limits: self.deps.admin_limits,
            flood: *self.deps.flood.config(),
        };
        build_deps(
            &self.tg,
            &self.kie,
            &self.db,
            self.queue_db.as_ref(),
            &self.catalog,
            &self.ns,
            &o,
        )
        .await
    }

    pub fn store(&self) -> &Store {
        &self.deps.store
    }

    /// Fetches every pending update and handles it, as polling would.
    pub async fn pump(&mut self) {
        loop {
            let updates = self
                .deps
                .bot
                .get_updates()
                .offset(self.offset)
                .timeout(0)
                .await
                .expect("getUpdates");
            if updates.is_empty() {
                return;
            }
            for u in updates {
                self.offset = i32::try_from(u.id.0).unwrap() + 1;
                handle_update(&self.deps, u).await;
            }
        }
    }

    pub async fn send(&mut self, user: impl Into<FakeUser>, text: &str) {
        self.tg.send_text(user, text);
        self.pump().await;
    }

    /// The bot's most recently sent or edited message in the user's chat.
    pub fn last(&self, user: i64) -> BotMessage {
        let call = self
            .tg
            .sent()
            .into_iter()
            .rev()
            .find(|c| {
                c.chat_id == Some(user) && c.message_id.is_some() && c.method != "deleteMessage"
            })
            .expect("the bot said something");
        let id = call.message_id.unwrap();
        self.tg
            .messages_to(user)
            .into_iter()
            .find(|m| m.message_id == id)
            .expect("the message exists")
    }

    pub fn last_text(&self, user: i64) -> String {
        self.last(user).text.unwrap_or_default()
    }

    /// The last message's buttons as (label, callback data).
    pub fn buttons(&self, user: i64) -> Vec<(String, String)> {
        buttons_of(&self.last(user))
    }

    /// Presses the first button of the last message whose label contains
    /// `label`; returns the callback answer's text (if any).
    pub async fn press(&mut self, user: impl Into<FakeUser>, label: &str) -> Option<String> {
        let user = user.into();
        let msg = self.last(user.id);
        let (_, data) = buttons_of(&msg)
            .into_iter()
            .find(|(l, _)| l.contains(label))
            .unwrap_or_else(|| {
                panic!(
                    "no button {label:?} under {:?}; buttons: {:?}",
                    msg.text,
                    buttons_of(&msg)
                )
            });
        self.press_data(user, msg.message_id, &data).await
    }

    /// Presses a button with this data under `message_id`.
    pub async fn press_data(
        &mut self,
        user: impl Into<FakeUser>,
        message_id: i32,
        data: &str,
    ) -> Option<String> {
        let id = self.tg.press_button(user, message_id, data);
        self.pump().await;
        let answers = self.tg.answered_callbacks();
        let a = answers
            .iter()
            .find(|a| a.callback_query_id == id.to_string())
            .unwrap_or_else(|| panic!("callback {data:?} was not answered"));
        // Telegram refuses a second answer to a press, as the fake does.
        let twice: Vec<_> = self
            .tg
            .rejected()
            .into_iter()
            .filter(|r| {
                r.method == "answerCallbackQuery" && r.description.contains("query id is invalid")
            })
            .collect();
        assert!(twice.is_empty(), "a press was answered twice: {twice:?}");
        a.text.clone()
    }

    pub async fn top_up(&self, user: i64, minor: i64) {
        self.store().users().ensure(UserId(user)).await.unwrap();
        self.store()
            .ledger()
            .topup(
                UserId(user),
                Money::from_minor(minor),
                &format!("test-topup:{user}:{}", rand::random::<u64>()),
                None,
            )
            .await
            .unwrap();
    }

    /// Opens `model`'s wizard from the main menu.
    pub async fn open_wizard(&mut self, user: i64, model: &str) {
        self.send(user, "/menu").await;
        let msg = self.last(user);
        let data =
            kiebot_tg::callback::Cb::Start(kiebot_domain::ModelId::parse(model).unwrap()).encode();
        self.press_data(user, msg.message_id, &data).await;
    }

    /// z-image (five free uses a day) up to its confirm screen.
    pub async fn z_image_confirm(&mut self, user: i64) -> BotMessage {
        self.open_wizard(user, "z-image").await;
        self.send(user, "a cat").await;
        self.press(user, "Keep the default").await;
        let msg = self.last(user);
        let text = msg.text.clone().unwrap_or_default();
        assert!(text.contains("Check the parameters"), "{text}");
        msg
    }

    /// flux-2 pro text-to-image (no free uses) up to its confirm screen.
    pub async fn flux_confirm(&mut self, user: i64) -> BotMessage {
        self.open_wizard(user, "flux-2/pro-text-to-image").await;
        self.send(user, "a lighthouse at dusk").await;
        for _ in 0..5 {
            let msg = self.last(user);
            if msg
                .text
                .as_deref()
                .is_some_and(|t| t.contains("Check the parameters"))
            {
                return msg;
            }
            self.press(user, "Keep the default").await;
        }
        panic!("no confirm screen: {}", self.last_text(user));
    }

    /// A user who picked English and sits at the main menu.
    pub async fn onboard(&mut self, user: i64) {
        self.send(user, "/start").await;
        self.press(user, "English").await;
        assert!(
            self.last_text(user).contains("Main menu"),
            "{}",
            self.last_text(user)
        );
    }

    pub async fn generations(&self, user: i64) -> Vec<Generation> {
        self.store()
            .generations()
            .list_for_user(UserId(user), 0, 1000)
            .await
            .unwrap()
    }

    pub async fn submit_depth(&self) -> u64 {
        let name = self.deps.queues.names().submit.clone();
        self.deps
            .queues
            .depths()
            .await
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, d)| d)
    }

    pub async fn held(&self, user: i64) -> Money {
        self.store()
            .ledger()
            .wallet(UserId(user))
            .await
            .unwrap()
            .held
    }

    pub async fn available(&self, user: i64) -> Money {
        self.store()
            .ledger()
            .wallet(UserId(user))
            .await
            .unwrap()
            .available()
    }

    pub async fn active(&self, user: i64) -> usize {
        self.generations(user)
            .await
            .iter()
            .filter(|g| g.status == GenerationStatus::Pending)
            .count()
    }
}

pub fn buttons_of(msg: &BotMessage) -> Vec<(String, String)> {
    let Some(kb) = &msg.reply_markup else {
        return vec![];
    };
    kb["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .filter_map(|b: Value| {
            Some((
                b["text"].as_str()?.to_owned(),
                b["callback_data"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

async fn build_deps(
    tg: &FakeTelegram,
    kie: &FakeKie,
    db: &TestDb,
    queue_db: Option<&TestDb>,
    catalog: &Arc<Catalog>,
    ns: &str,
    o: &Options,
) -> BotDeps {
    let store = Store::connect(db.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let queue_url = queue_db.map_or(db.url(), |q| q.url());
    let queues = Queues::sqlite(queue_url, QueueNames::new(ns))
        .await
        .expect("queue");
    let bot = Bot::new(tg.token()).set_api_url(tg.api_url().parse().unwrap());
    let kie_client: Arc<dyn Kie> = if o.dry_run {
        Arc::new(DryRunKie::new())
    } else {
        Arc::new(
            KieClient::new(KieConfig::with_base(
                kie.base_url().parse().unwrap(),
                ApiKey::new(kie.api_key()),
            ))
            .unwrap(),
        )
    };
    BotDeps {
        store,
        queues,
        catalog: Arc::clone(catalog),
        pricing: Pricing::default(),
        admin_ids: o.admin_ids.clone(),
        max_active: o.max_active,
        dry_run: o.dry_run,
        kie: kie_client,
        bot,
        stars_rate: Money::from_minor(150),
        limiter: Arc::new(kiebot_tg::InProcessLimiter::new(kiebot_tg::LimiterConfig {
            global_per_second: 1000,
            per_chat_interval: std::time::Duration::from_millis(1),
            per_chat_burst: 100,
        })),
        broadcasts: kiebot_bot::BroadcastRunners::default(),
        referral: o.referral,
        admin_limits: o.admin_limits,
        flood: Arc::new(kiebot_bot::FloodGate::new(o.flood)),
    }
}
