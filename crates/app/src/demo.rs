//! `kiebot demo`: the embedded process against the in-process fake Telegram
//! and fake KIE, with one scripted user walking through a whole purchase.
//!
//! The demo starts [`FakeTelegram`] and [`FakeKie`], points embedded-mode
//! settings (a SQLite file in a temporary directory) at them, runs the real
//! process assembly ([`crate::run_until`]) and then plays a user: `/start`,
//! English, a Stars top-up (invoice, pre-checkout, payment), a text-to-image
//! generation and an image-to-video generation with an uploaded picture,
//! each until its result is delivered. The conversation is printed as it
//! happens. It succeeds only when both results were delivered, every
//! generation is terminal and the ledger is consistent.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use kiebot_config::Settings;
use kiebot_domain::{Money, UserId};
use kiebot_store::Store;
use kiebot_testkit::kie::{FakeKie, Outcome, TINY_PNG};
use kiebot_testkit::telegram::{BotMessage, FakeTelegram, FakeUser, MediaSource, SentCall};
use kiebot_worker::PipelineConfig;
use serde_json::Value;

use crate::assemble::Options;
use crate::{Parts, run_until};

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The scripted user's id (also their chat id).
const USER_ID: i64 = 4242;

/// Models the demo uses: a text-to-image one and an image-to-video one.
const IMAGE_MODEL: &str = "Google Nano Banana";
const VIDEO_MODEL: &str = "Kling V2.1 Standard";

/// The Stars preset bought.
const STARS: u32 = 500;

/// What a demo run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Results delivered to the user.
    pub delivered: usize,
    /// Available balance right after the top-up.
    pub balance_before: Money,
    /// Available balance at the end.
    pub balance_after: Money,
    /// Money captured for the generations.
    pub charged: Money,
}

/// Runs the demo, printing the conversation to `out`.
///
/// # Errors
/// When a step does not happen within a minute, a result is not delivered
/// or the ledger does not add up; the message names the step.
pub async fn run(out: &mut (dyn Write + Send)) -> anyhow::Result<DemoReport> {
    run_on(out, Deployment::Embedded).await
}

/// Where the demo's app runs.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// One process: SQLite in a temporary directory, bot and workers together.
    Embedded,
    /// The fleet's shape: a front (bot only) and a separate worker runtime,
    /// sharing a PostgreSQL database and a Redis queue namespace.
    Fleet {
        /// A PostgreSQL database (migrated by the demo).
        database_url: String,
        /// The Redis server.
        redis_url: String,
        /// A queue namespace of the demo's own.
        namespace: String,
    },
}

/// Runs the demo on the given deployment.
///
/// # Errors
/// As [`run`].
pub async fn run_on(
    out: &mut (dyn Write + Send),
    deployment: Deployment,
) -> anyhow::Result<DemoReport> {
    let dir = tempfile::Builder::new()
        .prefix("kiebot-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let db_path = dir.path().join("kiebot.db");
    let (database_url, fleet) = match &deployment {
        Deployment::Embedded => (format!("sqlite://{}?mode=rwc", db_path.display()), None),
        Deployment::Fleet {
            database_url,
            redis_url,
            namespace,
        } => (
            database_url.clone(),
            Some((redis_url.clone(), namespace.clone())),
        ),
    };

    let tg = FakeTelegram::start().await;
    let kie = FakeKie::start().await;
    kie.set_default_outcome(Outcome::succeed_after(Duration::from_millis(700), 1));

    let settings = demo_settings(&tg, &kie, &database_url, fleet.as_ref())?;
    writeln!(
        out,
        "kiebot demo: fake Telegram at {}, fake KIE at {}, database {}",
        tg.api_url(),
        kie.base_url(),
        if fleet.is_some() {
            "PostgreSQL (fleet: front and workers apart)".to_owned()
        } else {
            db_path.display().to_string()
        }
    )?;
    writeln!(out)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let parts = if fleet.is_some() {
        Parts {
            bot: true,
            workers: false,
        }
    } else {
        Parts {
            bot: true,
            workers: true,
        }
    };
    let app = tokio::spawn(run_until(
        settings.clone(),
        parts,
        demo_options(),
        stopped(stop_rx.clone()),
    ));
    // In the fleet the workers are an app instance of their own.
    let workers = fleet.as_ref().map(|_| {
        tokio::spawn(run_until(
            settings.clone(),
            Parts {
                bot: false,
                workers: true,
            },
            demo_options(),
            stopped(stop_rx.clone()),
        ))
    });

    let mut script = Script {
        tg: tg.clone(),
        out,
        user: FakeUser::new(USER_ID).with_language("en"),
        printed: 0,
        store: None,
        database_url,
    };
    let result = script.play().await;

    // Shut down whatever happened, then report the first failure.
    let _ = stop_tx.send(true);
    if let Some(w) = workers {
        let _ = tokio::time::timeout(STEP_TIMEOUT, w).await;
    }
    let stopped = tokio::time::timeout(STEP_TIMEOUT, app).await;
    if let Some(store) = script.store.take() {
        store.close().await;
    }
    let report = result?;
    match stopped {
        Err(_) => bail!(
            "shutdown: the app did not stop within {} s",
            STEP_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => bail!("shutdown: the app task failed: {e}"),
        Ok(Ok(Err(e))) => return Err(e.context("shutdown: the app stopped with an error")),
        Ok(Ok(Ok(()))) => {}
    }
    dir.close().context("removing the temporary directory")?;
    writeln!(script.out, "\ndemo finished: app stopped cleanly")?;
    Ok(report)
}

/// The pipeline as production runs it, except that the fake KIE finishes
/// every task in under a second, which no model's catalog estimate says: the
/// demo polls from the start instead of waiting for a video's usual minute.
fn demo_options() -> Options {
    Options {
        pipeline: Some(PipelineConfig {
            poll_first: Duration::from_millis(200),
            poll_hot_gap: Duration::from_millis(300),
            estimate_runs: false,
            ..PipelineConfig::default()
        }),
        ..Options::default()
    }
}

/// Embedded-mode settings pointing at the fakes.
fn demo_settings(
    tg: &FakeTelegram,
    kie: &FakeKie,
    database_url: &str,
    fleet: Option<&(String, String)>,
) -> anyhow::Result<Settings> {
    let mut vars: BTreeMap<String, String> = [
        ("DATABASE_URL", database_url.to_owned()),
        ("TELEGRAM_BOT_TOKEN", tg.token().to_owned()),
        ("TELEGRAM_API_URL", tg.api_url()),
        ("KIE_API_KEY", kie.api_key().to_owned()),
        ("KIE_API_URL", kie.base_url()),
        ("KIE_UPLOAD_URL", kie.upload_base()),
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        // The same address: one listener on a free port for everything.
        ("OPS_ADDR", "127.0.0.1:0".to_owned()),
        ("POLL_INITIAL_MS", "200".to_owned()),
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
    if let Some((redis_url, namespace)) = fleet {
        vars.insert("REDIS_URL".to_owned(), redis_url.clone());
        vars.insert("QUEUE_NAMESPACE".to_owned(), namespace.clone());
    }
    Settings::from_map(&vars).map_err(|e| anyhow!("demo settings: {e}"))
}

/// The scripted user and the transcript printer.
struct Script<'a> {
    tg: FakeTelegram,
    out: &'a mut (dyn Write + Send),
    user: FakeUser,
    /// How many of `tg.sent()` were printed.
    printed: usize,
    store: Option<Store>,
    database_url: String,
}

impl Script<'_> {
    async fn play(&mut self) -> anyhow::Result<DemoReport> {
        let uid = self.user.id;

        // First contact: the language picker.
        self.say("/start");
        self.wait("/start: the language picker", |tg| {
            !buttons_of_last(tg, uid).is_empty()
        })
        .await?;
        self.flush()?;
        self.store = Some(
            Store::connect(&self.database_url)
                .await
                .context("connecting to the demo database")?,
        );
        self.press_and_wait("choosing English", "English", |m| {
            text(m).contains("Main menu")
        })
        .await?;

        // Top-up: preset -> invoice -> pre-checkout -> payment.
        self.press_and_wait("opening the top-up", "Top up", |m| {
            labels(m).iter().any(|l| l.contains('⭐'))
        })
        .await?;
        let invoices = self.tg.sent_of("sendInvoice").len();
        let preset = format!("{STARS} ⭐");
        let label = self.find_label(&preset, "choosing a Stars preset")?;
        self.press(&label, "choosing a Stars preset")?;
        let invoice = self
            .wait_call(
                "the invoice",
                |c| c.method == "sendInvoice" && c.chat_id == Some(uid),
                invoices,
            )
            .await?;
        self.flush()?;
        let payload = invoice.params["payload"]
            .as_str()
            .context("the invoice has no payload")?
            .to_owned();
        let amount = invoice.params["prices"][0]["amount"]
            .as_u64()
            .and_then(|a| u32::try_from(a).ok())
            .context("the invoice has no amount")?;
        self.line(format!("you pay the invoice: {amount} ⭐"));
        let q = self
            .tg
            .pre_checkout(&self.user, &payload, "XTR", amount)
            .to_string();
        self.wait("pre-checkout: the bot's answer", |tg| {
            tg.pre_checkout_answers()
                .iter()
                .any(|a| a.pre_checkout_query_id == q)
        })
        .await?;
        let answer = self
            .tg
            .pre_checkout_answers()
            .into_iter()
            .find(|a| a.pre_checkout_query_id == q)
            .context("pre-checkout: no answer")?;
        if !answer.ok {
            bail!(
                "pre-checkout: the bot refused the payment: {:?}",
                answer.error_message
            );
        }
        self.line("telegram: pre-checkout approved by the bot".to_owned());
        let before = self.tg.sent().len();
        self.tg
            .successful_payment(&self.user, &payload, "demo-charge-1", amount);
        self.line(format!(
            "telegram: payment of {amount} ⭐ went through (charge demo-charge-1)"
        ));
        self.wait("payment: the credit message", move |tg| {
            tg.sent().len() > before
                && last_message(tg, uid).is_some_and(|m| text(&m).contains("credited"))
        })
        .await?;
        self.flush()?;
        let balance_before = self.available().await?;
        if !balance_before.is_positive() {
            bail!("payment: the balance is still {balance_before} after the payment");
        }
        self.line(format!("(balance now: {balance_before})"));

        // A picture from a description.
        self.generate(
            "image",
            "🖼 Text to image",
            IMAGE_MODEL,
            "a lighthouse at dusk, watercolor",
        )
        .await?;
        // A video from the picture the user sends.
        self.generate(
            "video",
            "📽 Image to video",
            VIDEO_MODEL,
            "the waves roll in slowly",
        )
        .await?;

        self.say("/balance");
        self.wait("/balance", move |tg| {
            last_message(tg, uid).is_some_and(|m| text(&m).starts_with("Balance:"))
        })
        .await?;
        self.flush()?;

        self.verify(balance_before).await
    }

    /// One generation from the main menu to its delivered result.
    async fn generate(
        &mut self,
        what: &str,
        type_label: &str,
        model: &str,
        prompt: &str,
    ) -> anyhow::Result<()> {
        let uid = self.user.id;
        self.say("/menu");
        self.wait(&format!("{what}: the main menu"), move |tg| {
            last_message(tg, uid).is_some_and(|m| text(&m).contains("Main menu"))
        })
        .await?;
        self.flush()?;
        self.press_and_wait(&format!("{what}: the model list"), type_label, |m| {
            text(m).contains("model") || labels(m).len() > 1
        })
        .await?;
        let model_label = format!("{model} ·");
        self.press_and_wait(&format!("{what}: the model card"), &model_label, |m| {
            labels(m).iter().any(|l| l.contains("Start"))
        })
        .await?;
        self.press_and_wait(&format!("{what}: the first wizard step"), "Start", |m| {
            text(m).contains("Step ") || text(m).contains("Check the parameters")
        })
        .await?;

        // The wizard: answer what it asks, accept every default.
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > 30 {
                bail!("{what}: the wizard did not reach the confirm screen");
            }
            let m = last_message(&self.tg, uid).context("the bot said nothing")?;
            let t = text(&m).to_owned();
            let step = format!("{what}: wizard step {steps}");
            if t.contains("Check the parameters") {
                break;
            }
            if t.contains("Send the text") {
                self.say(prompt);
                self.wait_next_step(&step, m.message_id, &t).await?;
            } else if t.contains("Send an image") {
                self.line("you send a photo (a tiny 1×1 PNG)".to_owned());
                self.tg.send_photo(&self.user, TINY_PNG);
                self.wait_next_step(&step, m.message_id, &t).await?;
            } else if labels(&m).iter().any(|l| l.contains("Keep the default")) {
                self.press("Keep the default", &step)?;
                self.wait_next_step(&step, m.message_id, &t).await?;
            } else if labels(&m).iter().any(|l| l.contains("Done")) {
                self.press("Done", &step)?;
                self.wait_next_step(&step, m.message_id, &t).await?;
            } else {
                bail!("{step}: the demo does not know how to answer {t:?}");
            }
        }

        let media_before = self.media_calls();
        self.press_and_wait(&format!("{what}: confirming"), "Confirm", |m| {
            text(m).contains("has started")
        })
        .await?;
        self.wait(&format!("{what}: delivery of the result"), move |tg| {
            tg.sent()
                .iter()
                .filter(|c| c.chat_id == Some(uid) && !c.media.is_empty())
                .count()
                > media_before
        })
        .await?;
        self.flush()?;
        Ok(())
    }

    /// Checks the books and builds the report.
    async fn verify(&mut self, balance_before: Money) -> anyhow::Result<DemoReport> {
        let store = self.store.as_ref().context("no database connection")?;
        // Delivery is recorded right after the media is sent.
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let unfinished = store.generations().count_unfinished().await?;
            if unfinished == 0 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "final check: {unfinished} generation(s) are not terminal after {} s",
                    STEP_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let drifts = store.ledger().check().await?;
        if !drifts.is_empty() {
            bail!("final check: the ledger does not add up: {drifts:?}");
        }
        let totals = store.money_totals().await?;
        let succeeded = store.generations().succeeded_total().await?;
        if totals.captured != succeeded {
            bail!(
                "final check: captured {} but the succeeded generations cost {succeeded}",
                totals.captured
            );
        }
        if totals.held.is_positive() {
            bail!("final check: {} is still held", totals.held);
        }
        let delivered = self.media_calls();
        if delivered < 2 {
            bail!("final check: {delivered} result(s) delivered, expected 2");
        }
        let balance_after = self.available().await?;
        let report = DemoReport {
            delivered,
            balance_before,
            balance_after,
            charged: totals.captured,
        };
        self.line(String::new());
        self.line(format!(
            "summary: {delivered} results delivered; balance {balance_before} -> {balance_after}; charged {}; ledger consistent",
            report.charged
        ));
        Ok(report)
    }

    async fn available(&self) -> anyhow::Result<Money> {
        let store = self.store.as_ref().context("no database connection")?;
        Ok(store
            .ledger()
            .wallet(UserId(self.user.id))
            .await?
            .available())
    }

    fn media_calls(&self) -> usize {
        self.tg
            .sent()
            .iter()
            .filter(|c| c.chat_id == Some(self.user.id) && !c.media.is_empty())
            .count()
    }

    // ----- acting ------------------------------------------------------------

    fn say(&mut self, text: &str) {
        let _ = self.flush();
        self.line(format!("you: {text}"));
        self.tg.send_text(&self.user, text);
    }

    fn find_label(&self, label: &str, step: &str) -> anyhow::Result<String> {
        let m = last_message(&self.tg, self.user.id)
            .with_context(|| format!("{step}: the bot said nothing"))?;
        labels(&m)
            .into_iter()
            .find(|l| l.contains(label))
            .ok_or_else(|| {
                anyhow!(
                    "{step}: no button {label:?} under {:?}; buttons: {:?}",
                    text(&m),
                    labels(&m)
                )
            })
    }

    /// Presses the first button of the last message whose label contains
    /// `label`.
    fn press(&mut self, label: &str, step: &str) -> anyhow::Result<()> {
        let _ = self.flush();
        let m = last_message(&self.tg, self.user.id)
            .with_context(|| format!("{step}: the bot said nothing"))?;
        let (shown, data) = buttons(&m)
            .into_iter()
            .find(|(l, _)| l.contains(label))
            .ok_or_else(|| {
                anyhow!(
                    "{step}: no button {label:?} under {:?}; buttons: {:?}",
                    text(&m),
                    labels(&m)
                )
            })?;
        self.line(format!("you press: {shown}"));
        self.tg.press_button(&self.user, m.message_id, &data);
        Ok(())
    }

    /// Presses a button and waits until the bot's latest message satisfies
    /// `until`.
    async fn press_and_wait(
        &mut self,
        step: &str,
        label: &str,
        until: impl Fn(&BotMessage) -> bool + Send,
    ) -> anyhow::Result<()> {
        let before = self.tg.sent().len();
        self.press(label, step)?;
        let uid = self.user.id;
        self.wait(step, move |tg| {
            tg.sent().len() > before && last_message(tg, uid).is_some_and(|m| until(&m))
        })
        .await?;
        self.flush()
    }

    /// Waits until the wizard moved past the step shown in `message_id` with
    /// `text`.
    async fn wait_next_step(
        &mut self,
        step: &str,
        message_id: i32,
        old: &str,
    ) -> anyhow::Result<()> {
        let uid = self.user.id;
        let old = old.to_owned();
        self.wait(step, move |tg| {
            last_message(tg, uid).is_some_and(|m| {
                let t = text(&m);
                (m.message_id != message_id || t != old)
                    && (t.contains("Step ") || t.contains("Check the parameters"))
            })
        })
        .await?;
        self.flush()
    }

    async fn wait(
        &self,
        step: &str,
        predicate: impl FnMut(&FakeTelegram) -> bool + Send,
    ) -> anyhow::Result<()> {
        self.tg
            .wait_for(predicate, STEP_TIMEOUT)
            .await
            .map_err(|_| {
                anyhow!(
                    "step {step:?} failed: nothing happened within {} s",
                    STEP_TIMEOUT.as_secs()
                )
            })
    }

    async fn wait_call(
        &self,
        step: &str,
        predicate: impl Fn(&SentCall) -> bool + Send + Sync,
        skip: usize,
    ) -> anyhow::Result<SentCall> {
        let mut found = None;
        self.wait(step, |tg| {
            found = tg.sent().into_iter().filter(|c| predicate(c)).nth(skip);
            found.is_some()
        })
        .await?;
        found.ok_or_else(|| anyhow!("step {step:?} failed"))
    }

    // ----- printing ----------------------------------------------------------

    fn line(&mut self, s: String) {
        let _ = writeln!(self.out, "{s}");
    }

    /// Prints what the bot did in the user's chat since the last flush.
    fn flush(&mut self) -> anyhow::Result<()> {
        let sent = self.tg.sent();
        let uid = self.user.id;
        for c in sent.iter().skip(self.printed) {
            if c.chat_id != Some(uid) {
                continue;
            }
            for l in render(c) {
                writeln!(self.out, "{l}")?;
            }
        }
        self.printed = sent.len();
        Ok(())
    }
}

/// A bot call as transcript lines.
fn render(c: &SentCall) -> Vec<String> {
    let mut lines = vec![];
    let body = c.text.as_deref().unwrap_or("").trim_end();
    match c.method.as_str() {
        "sendMessage" => lines.push(format!("bot: {}", indent(body))),
        "editMessageText" | "editMessageCaption" => {
            lines.push(format!("bot (updates its message): {}", indent(body)))
        }
        "editMessageReplyMarkup" => lines.push("bot (updates the buttons):".to_owned()),
        "sendInvoice" => {
            let title = c.params["title"].as_str().unwrap_or("");
            let amount = &c.params["prices"][0]["amount"];
            let currency = c.params["currency"].as_str().unwrap_or("");
            lines.push(format!("bot sends invoice: {title} — {amount} {currency}"));
        }
        "sendChatAction" | "deleteMessage" => {}
        _ if !c.media.is_empty() => {
            for m in &c.media {
                let what = format!("{:?}", m.kind).to_lowercase();
                let from = match &m.source {
                    MediaSource::Url(u) => u.clone(),
                    MediaSource::Upload { file_name, size } => {
                        format!("upload {file_name} ({size} bytes)")
                    }
                    MediaSource::FileId(id) => format!("file id {id}"),
                };
                lines.push(format!("bot sends {what}: {from}"));
                if let Some(cap) = m.caption.as_deref().filter(|s| !s.is_empty()) {
                    lines.push(format!("     caption: {}", indent(cap)));
                }
            }
        }
        other => lines.push(format!("bot ({other}): {}", indent(body))),
    }
    if let Some(kb) = &c.reply_markup {
        for row in keyboard_rows(kb) {
            lines.push(format!("     {row}"));
        }
    }
    lines
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n     ")
}

fn keyboard_rows(kb: &Value) -> Vec<String> {
    kb["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"].as_str())
                .map(|t| format!("[ {t} ]"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// The bot's most recently sent or edited message in `chat`.
fn last_message(tg: &FakeTelegram, chat: i64) -> Option<BotMessage> {
    let id = tg
        .sent()
        .into_iter()
        .rev()
        .find(|c| c.chat_id == Some(chat) && c.message_id.is_some() && c.method != "deleteMessage")?
        .message_id?;
    tg.messages_to(chat)
        .into_iter()
        .find(|m| m.message_id == id)
}

fn text(m: &BotMessage) -> &str {
    m.text.as_deref().unwrap_or("")
}

fn buttons(m: &BotMessage) -> Vec<(String, String)> {
    let Some(kb) = &m.reply_markup else {
        return vec![];
    };
    kb["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .filter_map(|b| {
            Some((
                b["text"].as_str()?.to_owned(),
                b["callback_data"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn labels(m: &BotMessage) -> Vec<String> {
    buttons(m).into_iter().map(|(l, _)| l).collect()
}

fn buttons_of_last(tg: &FakeTelegram, chat: i64) -> Vec<String> {
    last_message(tg, chat)
        .map(|m| labels(&m))
        .unwrap_or_default()
}
