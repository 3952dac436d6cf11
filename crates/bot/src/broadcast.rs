//! Admin broadcasts: one text to every user who is not blocked, paced by the
//! shared delivery limiter, resumable after a restart, with a report.
//!
//! The job's state (text, the last user id done, counters) lives in the
//! settings row [`BROADCAST_KEY`] and is written after every message, so a
//! restart resumes after the last user reached ([`resume_broadcast`]); at
//! most the one message in flight at the crash can be sent twice. One
//! broadcast runs at a time per deployment: start it from one bot process.

use std::sync::Arc;
use std::time::Duration;

use kiebot_store::StoreError;
use kiebot_tg::texts::{self, Lang};
use serde::{Deserialize, Serialize};
use teloxide::prelude::*;

use crate::{BotDeps, Ctx};

/// Settings key of the running broadcast.
pub const BROADCAST_KEY: &str = "broadcast";

/// Users fetched per query.
const BATCH: i64 = 100;

/// A broadcast in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Broadcast {
    pub text: String,
    /// Users with a greater id are still to do.
    pub cursor: i64,
    pub sent: u64,
    pub failed: u64,
    /// Where the report goes.
    pub admin_chat: i64,
    pub lang: String,
}

async fn load(deps: &BotDeps) -> Result<Option<Broadcast>, StoreError> {
    Ok(deps
        .store
        .settings()
        .get(BROADCAST_KEY)
        .await?
        .and_then(|s| serde_json::from_str(&s).ok()))
}

async fn save(deps: &BotDeps, b: &Broadcast) -> anyhow::Result<()> {
    deps.store
        .settings()
        .set(BROADCAST_KEY, &serde_json::to_string(b)?)
        .await?;
    Ok(())
}

/// `/broadcast TEXT`: records the broadcast and starts sending in the
/// background.
pub(crate) async fn start(ctx: &Ctx, text: &str) -> anyhow::Result<()> {
    let lang = ctx.lang;
    if text.trim().is_empty() {
        return ctx
            .send(
                texts::admin_report(
                    lang,
                    "Использование: /broadcast ТЕКСТ",
                    "Usage: /broadcast TEXT",
                ),
                None,
            )
            .await;
    }
    if load(&ctx.deps).await?.is_some() {
        return ctx
            .send(
                texts::admin_report(
                    lang,
                    "Рассылка уже идёт.",
                    "A broadcast is already running.",
                ),
                None,
            )
            .await;
    }
    let b = Broadcast {
        text: text.trim().to_owned(),
        cursor: i64::MIN,
        sent: 0,
        failed: 0,
        admin_chat: ctx.chat.0,
        lang: lang.code().to_owned(),
    };
    save(&ctx.deps, &b).await?;
    ctx.send(
        texts::admin_report(lang, "Рассылка запущена.", "Broadcast started."),
        None,
    )
    .await?;
    let deps = Arc::clone(&ctx.deps);
    tokio::spawn(async move { resume_broadcast(&deps).await });
    Ok(())
}

/// Sends the rest of a recorded broadcast, if there is one, and reports to
/// the admin who started it. Call once at start-up (polling does).
pub async fn resume_broadcast(deps: &BotDeps) {
    if let Err(e) = run(deps).await {
        tracing::error!(
            error = format!("{e:#}"),
            "broadcast stopped; it resumes on the next start"
        );
    }
}

async fn run(deps: &BotDeps) -> anyhow::Result<()> {
    let Some(mut b) = load(deps).await? else {
        return Ok(());
    };
    tracing::info!(cursor = b.cursor, "broadcast running");
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM users WHERE id > $1 AND blocked = $2 ORDER BY id LIMIT $3",
        )
        .bind(b.cursor)
        .bind(false)
        .bind(BATCH)
        .fetch_all(deps.store.pool())
        .await?;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let chat = ChatId(id);
            deps.limiter.acquire(chat).await;
            match deps.bot.send_message(chat, b.text.clone()).await {
                Ok(_) => b.sent += 1,
                Err(teloxide::RequestError::RetryAfter(after)) => {
                    let wait = after.duration();
                    deps.limiter.note_retry_after(None, wait).await;
                    tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                    match deps.bot.send_message(chat, b.text.clone()).await {
                        Ok(_) => b.sent += 1,
                        Err(_) => b.failed += 1,
                    }
                }
                Err(_) => b.failed += 1,
            }
            b.cursor = id;
            save(deps, &b).await?;
        }
    }
    deps.store.settings().delete(BROADCAST_KEY).await?;
    let lang = Lang::parse(&b.lang);
    let (sent, failed) = (b.sent, b.failed);
    let report = texts::admin_report(
        lang,
        &format!("Рассылка завершена: доставлено {sent}, не доставлено {failed}."),
        &format!("Broadcast finished: {sent} delivered, {failed} failed."),
    );
    if let Err(e) = deps.bot.send_message(ChatId(b.admin_chat), report).await {
        tracing::warn!(error = %e, "broadcast report not delivered");
    }
    tracing::info!(sent, failed, "broadcast finished");
    Ok(())
}
