//! The KIE families with APIs of their own, bought as a user buys them: the
//! wizard, the confirmation, the task at a fake KIE speaking Veo's or Suno's
//! own endpoints and status shapes, and the delivery (one video; two music
//! tracks with their titles and cover), charged once; a failed task releases
//! its hold.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use kiebot_app::assemble::Options;
use kiebot_app::{Parts, run_until};
use kiebot_config::Settings;
use kiebot_domain::{GenerationStatus, ModelId, Money, UserId};
use kiebot_store::Store;
use kiebot_testkit::kie::{FakeKie, Outcome, TINY_PNG};
use kiebot_testkit::telegram::{BotMessage, FakeTelegram, FakeUser};
use kiebot_tg::callback::Cb;
use kiebot_worker::PipelineConfig;
use serde_json::{Value, json};
use tokio::sync::watch;

const STEP: Duration = Duration::from_secs(30);

struct World {
    tg: FakeTelegram,
    kie: FakeKie,
    store: Store,
    stop: watch::Sender<bool>,
    app: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let tg = FakeTelegram::start().await;
        let kie = FakeKie::start().await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("kiebot.db").display()
        );
        let vars: BTreeMap<String, String> = [
            ("DATABASE_URL", url.clone()),
            ("TELEGRAM_BOT_TOKEN", tg.token().to_owned()),
            ("TELEGRAM_API_URL", tg.api_url()),
            ("KIE_API_KEY", kie.api_key().to_owned()),
            ("KIE_API_URL", kie.base_url()),
            ("KIE_UPLOAD_URL", kie.upload_base()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("OPS_ADDR", "127.0.0.1:0".to_owned()),
            ("DELIVERY_RATE_PER_SECOND", "1000".to_owned()),
        ]
        .into_iter()
        .chain(
            kiebot_testkit::LOOPBACK_RESULT_SETTINGS
                .into_iter()
                .map(|(k, v)| (k, v.to_owned())),
        )
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let settings = Settings::from_map(&vars).unwrap();
        let options = Options {
            pipeline: Some(PipelineConfig {
                poll_first: Duration::from_millis(100),
                poll_hot_gap: Duration::from_millis(200),
                estimate_runs: false,
                ..PipelineConfig::default()
            }),
            ..Options::default()
        };
        let (stop, rx) = watch::channel(false);
        let app = tokio::spawn(run_until(
            settings,
            Parts {
                bot: true,
                workers: true,
            },
            options,
            async move {
                let mut rx = rx;
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
        // The app migrates the database; connect once it has.
        let deadline = tokio::time::Instant::now() + STEP;
        let store = loop {
            if let Ok(s) = Store::connect(&url).await
                && s.users().get(UserId(1)).await.is_ok()
            {
                break s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the app did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        World {
            tg,
            kie,
            store,
            stop,
            app,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(STEP, self.app).await;
    }

    fn last(&self, uid: i64) -> Option<BotMessage> {
        self.tg.messages_to(uid).into_iter().last()
    }

    async fn wait(&self, what: &str, mut until: impl FnMut(&FakeTelegram) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !until(&self.tg) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn buttons(m: &BotMessage) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(rows) = m
            .reply_markup
            .as_ref()
            .and_then(|k| k["inline_keyboard"].as_array())
        {
            for b in rows
                .iter()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
            {
                if let (Some(t), Some(d)) = (b["text"].as_str(), b["callback_data"].as_str()) {
                    out.push((t.to_owned(), d.to_owned()));
                }
            }
        }
        out
    }

    /// Presses the button of the last message whose label contains `label`,
    /// and waits for the bot to answer with something new.
    async fn press(&self, user: &FakeUser, label: &str) {
        let m = self.last(user.id).unwrap();
        let (_, data) = Self::buttons(&m)
            .into_iter()
            .find(|(t, _)| t.contains(label))
            .unwrap_or_else(|| panic!("no {label:?} under {:?}", m.text));
        self.press_data(user, m.message_id, &data).await;
    }

    async fn press_data(&self, user: &FakeUser, message_id: i32, data: &str) {
        let before = self.tg.sent().len();
        self.tg.press_button(user, message_id, data);
        self.wait(&format!("an answer to {data}"), |tg| {
            tg.sent()
                .iter()
                .skip(before)
                .any(|c| c.method != "answerCallbackQuery")
        })
        .await;
    }

    /// A new user with English chosen and `balance` on their wallet.
    async fn user(&self, id: i64, balance: i64) -> FakeUser {
        let user = FakeUser::new(id).with_language("en");
        self.tg.send_text(&user, "/start");
        self.wait("the first answer", |_| self.last(id).is_some())
            .await;
        if Self::buttons(&self.last(id).unwrap())
            .iter()
            .any(|(t, _)| t.contains("English"))
        {
            self.press(&user, "English").await;
        }
        self.store
            .ledger()
            .topup(
                UserId(id),
                Money::from_minor(balance),
                &format!("seed:{id}"),
                None,
            )
            .await
            .unwrap();
        user
    }

    /// Opens `model`'s wizard, answers every step (a prompt, a photo, the
    /// defaults) and confirms; returns the generation.
    async fn buy(&self, user: &FakeUser, model: &str, prompt: &str) -> kiebot_domain::GenerationId {
        let anchor = self.last(user.id).unwrap().message_id;
        let start = Cb::Start(ModelId::parse(model).unwrap()).encode();
        self.press_data(user, anchor, &start).await;
        for step in 0.. {
            assert!(
                step < 30,
                "{model}: the wizard did not reach the confirm screen"
            );
            let m = self.last(user.id).unwrap();
            let text = m.text.clone().unwrap_or_default();
            if text.contains("Check the parameters") {
                break;
            }
            let before = self.tg.sent().len();
            let done = Self::buttons(&m).iter().any(|(t, _)| t.contains("Done"));
            if text.contains("Send an image") && done {
                // One file is enough where more are allowed.
                self.press(user, "Done").await;
                continue;
            }
            if text.contains("Send the text") {
                self.tg.send_text(user, prompt);
            } else if text.contains("Send an image") {
                self.tg.send_photo(user, TINY_PNG);
            } else if Self::buttons(&m)
                .iter()
                .any(|(t, _)| t.contains("Keep the default"))
            {
                self.press(user, "Keep the default").await;
                continue;
            } else if Self::buttons(&m).iter().any(|(t, _)| t.contains("Done")) {
                self.press(user, "Done").await;
                continue;
            } else {
                panic!("{model}: no answer known for {text:?}");
            }
            self.wait("the next step", |tg| {
                tg.sent()
                    .iter()
                    .skip(before)
                    .any(|c| c.method != "answerCallbackQuery")
            })
            .await;
        }
        self.press(user, "Confirm").await;
        let gens = self.store.generations();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let list = gens.list_for_user(UserId(user.id), 0, 10).await.unwrap();
            if let Some(g) = list.into_iter().find(|g| g.model.as_str() == model) {
                return g.id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{model}: not confirmed"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn settled(&self, id: kiebot_domain::GenerationId) -> kiebot_store::Generation {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let g = self.store.generations().get(id).await.unwrap().unwrap();
            let terminal = g.status == GenerationStatus::Delivered
                || (g.status.releases_hold() && g.delivered_at.is_some());
            if terminal {
                return g;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not settled: {:?}",
                g.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ledger_clean(&self) {
        assert!(self.store.ledger().check().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veo_text_to_video_and_frames_to_video_are_delivered_as_one_video_each_charged_once() {
    let w = World::start().await;
    let user = w.user(501, 1_000_000).await;
    let id = w
        .buy(
            &user,
            "veo3.1/fast-text-to-video",
            "a dog surfing at sunset",
        )
        .await;
    let g = w.settled(id).await;
    assert_eq!(g.status, GenerationStatus::Delivered);
    // Veo's own endpoint and body: the fields at the top level, the mode
    // fixed by the entry, the length an integer.
    let task = w.kie.task(g.kie_task_id.as_deref().unwrap()).unwrap();
    assert_eq!(task.family, "veo");
    assert_eq!(task.input["model"], json!("veo3_fast"));
    assert_eq!(task.input["generationType"], json!("TEXT_2_VIDEO"));
    assert_eq!(task.input["duration"], json!(8));
    assert!(task.input.get("input").is_none());
    let videos =
        w.tg.sent_of("sendVideo")
            .into_iter()
            .filter(|c| c.chat_id == Some(user.id))
            .count();
    assert_eq!(videos, 1);
    let wallet = w.store.ledger().wallet(UserId(user.id)).await.unwrap();
    assert_eq!(
        wallet.balance,
        Money::from_minor(1_000_000 - g.price.minor())
    );
    assert_eq!(wallet.held, Money::ZERO);

    // From a first frame: the image goes to KIE's upload host, its URL in
    // `imageUrls`.
    let id = w
        .buy(&user, "veo3.1/fast-image-to-video", "the waves roll in")
        .await;
    let g2 = w.settled(id).await;
    assert_eq!(g2.status, GenerationStatus::Delivered);
    let task = w.kie.task(g2.kie_task_id.as_deref().unwrap()).unwrap();
    assert_eq!(
        task.input["generationType"],
        json!("FIRST_AND_LAST_FRAMES_2_VIDEO")
    );
    assert_eq!(task.input["imageUrls"].as_array().unwrap().len(), 1);
    let wallet = w.store.ledger().wallet(UserId(user.id)).await.unwrap();
    assert_eq!(
        wallet.balance,
        Money::from_minor(1_000_000 - g.price.minor() - g2.price.minor())
    );
    w.ledger_clean().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suno_gives_two_tracks_with_titles_and_a_cover_charged_once() {
    let w = World::start().await;
    let user = w.user(502, 1_000_000).await;
    let id = w
        .buy(&user, "suno/v5", "a calm piano piece for a rainy evening")
        .await;
    let g = w.settled(id).await;
    assert_eq!(g.status, GenerationStatus::Delivered);
    let task = w.kie.task(g.kie_task_id.as_deref().unwrap()).unwrap();
    assert_eq!(task.family, "suno");
    assert_eq!(task.input["model"], json!("V5"));
    assert_eq!(task.input["customMode"], json!(false));
    // Suno refuses a task without a callback URL; none is configured here.
    assert!(task.callback_url.is_some());
    let audio: Vec<Value> =
        w.tg.sent_of("sendAudio")
            .into_iter()
            .filter(|c| c.chat_id == Some(user.id))
            .map(|c| c.params)
            .collect();
    assert_eq!(audio.len(), 2, "two tracks");
    for a in &audio {
        assert!(a["title"].as_str().is_some_and(|t| !t.is_empty()), "{a}");
    }
    let covers =
        w.tg.sent_of("sendPhoto")
            .into_iter()
            .filter(|c| c.chat_id == Some(user.id))
            .count();
    assert_eq!(covers, 1, "the cover");
    let wallet = w.store.ledger().wallet(UserId(user.id)).await.unwrap();
    assert_eq!(
        wallet.balance,
        Money::from_minor(1_000_000 - g.price.minor())
    );
    w.ledger_clean().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_veo_and_suno_tasks_release_the_hold_and_say_so() {
    let w = World::start().await;
    w.kie
        .set_model_outcome("veo3_lite", Outcome::fail("400", "prompt flagged"));
    w.kie
        .set_model_outcome("V4_5", Outcome::fail("SENSITIVE_WORD_ERROR", "words"));
    let user = w.user(503, 1_000_000).await;
    for model in ["veo3.1/lite-text-to-video", "suno/v4.5"] {
        let id = w.buy(&user, model, "something KIE will refuse").await;
        let g = w.settled(id).await;
        assert_eq!(g.status, GenerationStatus::Failed, "{model}");
        let told = w.last(user.id).unwrap().text.unwrap_or_default();
        assert!(told.contains("You were not charged"), "{told}");
    }
    let wallet = w.store.ledger().wallet(UserId(user.id)).await.unwrap();
    assert_eq!(wallet.balance, Money::from_minor(1_000_000));
    assert_eq!(wallet.held, Money::ZERO);
    w.ledger_clean().await;
    w.stop().await;
}
