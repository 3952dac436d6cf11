//! Admin broadcasts: one text to every user who is not blocked, paced by the
//! shared delivery limiter, sent by exactly one front process at a time,
//! resumable after a restart, with a report.
//!
//! The broadcast is a row in the database (`store.broadcasts()`), not state
//! of the process that started it. A runner takes its lease, renews it with
//! every recipient, and moves the cursor to a recipient before sending to it,
//! conditional on still holding the lease. Every front process watches for a
//! running broadcast whose lease has lapsed ([`watch_broadcasts`]) and takes
//! it over from the cursor, so a broadcast survives the death of the process
//! that ran it, and two processes never send to the same recipient. A
//! process that dies between taking a recipient and sending costs that one
//! recipient the message (rather than sending it twice).
//!
//! A process that stops gracefully stops its runners before their next
//! recipient and gives the lease back ([`BroadcastRunners::stop`]), so the
//! next process (a restart, another front) continues at once rather than
//! after the lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kiebot_store::{Broadcast, BroadcastId, Claim, NewBroadcast, now_ms};
use kiebot_tg::texts::{self, Lang};
use teloxide::prelude::*;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{BotDeps, Ctx};

/// How long a runner's lease lasts unless renewed. Every recipient renews
/// it, so it only has to outlast one message (and a Telegram `retry_after`
/// pause, which renews it as it waits); a takeover after a crash waits at
/// most this long.
pub const BROADCAST_LEASE: Duration = Duration::from_secs(30);

/// How often an idle front process looks for a broadcast to take over.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Recipients fetched per query.
const BATCH: u32 = 100;

/// How long a stopping process waits for its runners to give their leases
/// back: one message, or a Telegram `retry_after` pause that is waited out
/// rather than cut short (its recipient would otherwise be skipped). Past
/// it, the lease lapses as after a crash.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// The broadcast runners of one front process, stopped together when it
/// shuts down. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct BroadcastRunners {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl BroadcastRunners {
    /// Runs `task` as one of this process's runners.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Tells every runner to stop before its next recipient and give its
    /// lease back, and waits for them (at most [`STOP_WAIT`]).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(STOP_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("a broadcast runner did not stop in time; its lease lapses instead");
        }
    }
}

/// `/broadcast TEXT`: records the broadcast and starts sending in the
/// background.
pub(crate) async fn start(ctx: &Ctx, text: &str) -> anyhow::Result<()> {
    let lang = ctx.lang;
    if text.trim().is_empty() {
        return ctx.send(texts::broadcast_usage(lang), None).await;
    }
    let new = NewBroadcast {
        text: text.trim().to_owned(),
        admin_chat: ctx.chat.0,
        lang: lang.code().to_owned(),
        created_by: ctx.uid,
    };
    if ctx.deps.store.broadcasts().create(&new).await?.is_none() {
        return ctx.send(texts::broadcast_running(lang), None).await;
    }
    ctx.send(texts::broadcast_started(lang), None).await?;
    let deps = Arc::clone(&ctx.deps);
    ctx.deps
        .broadcasts
        .spawn(async move { resume_broadcast(&deps).await });
    Ok(())
}

/// Sends the rest of the running broadcast, if there is one and no other
/// process holds it, and reports to the admin who started it. Returns when
/// it is done, when another process holds it, or when the lease was lost.
pub async fn resume_broadcast(deps: &BotDeps) {
    resume_broadcast_with_lease(deps, BROADCAST_LEASE).await;
}

/// [`resume_broadcast`] with another lease (tests take over quickly).
pub async fn resume_broadcast_with_lease(deps: &BotDeps, lease: Duration) {
    if let Err(e) = run(deps, lease).await {
        tracing::error!(
            error = format!("{e:#}"),
            "broadcast stopped; another process (or the next start) takes it over when its lease lapses"
        );
    }
}

/// Watches for a running broadcast this process may send (a new one, or one
/// whose runner died) until `shutdown` resolves, then stops this process's
/// runners ([`BroadcastRunners::stop`]). Every front process runs one; the
/// lease lets exactly one of them send. On the same beat it pays referral
/// bonuses that spending qualified ([`crate::settle_referral_spend`]).
pub async fn watch_broadcasts(deps: BotDeps, shutdown: impl Future<Output = ()>) {
    let runners = deps.broadcasts.clone();
    let stop = runners.stop.clone();
    runners.spawn(async move {
        while !stop.is_cancelled() {
            resume_broadcast(&deps).await;
            // The same beat pays referral bonuses that spending qualified.
            if let Err(e) = crate::payments::settle_referral_spend(&deps).await {
                tracing::warn!(error = format!("{e:#}"), "referral spend check failed");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    });
    shutdown.await;
    runners.stop().await;
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// This runner's name in the lease: unique per run, so that a process that
/// lost its lease and tries again is a different runner.
fn runner_name() -> String {
    format!("{}:{:016x}", std::process::id(), rand::random::<u64>())
}

async fn run(deps: &BotDeps, lease: Duration) -> anyhow::Result<()> {
    let store = deps.store.broadcasts();
    let runner = runner_name();
    let lease_ms = millis(lease);
    let b = match store.claim(&runner, now_ms(), lease_ms).await? {
        Claim::Claimed(b) => b,
        Claim::Idle => return Ok(()),
        Claim::Held { until } => {
            tracing::debug!(until, "the broadcast runs in another process");
            return Ok(());
        }
    };
    tracing::info!(broadcast = %b.id, cursor = b.cursor, %runner, "broadcast running");
    let mut cursor = b.cursor;
    loop {
        let batch = store.recipients_after(cursor, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        for user in batch {
            if deps.broadcasts.stopping() {
                store.release(b.id, &runner).await?;
                tracing::info!(broadcast = %b.id, cursor, "process stopping; broadcast lease given back");
                return Ok(());
            }
            let chat = ChatId(user.0);
            // The limiter first: its wait must not eat into the lease taken
            // with the recipient.
            deps.limiter.acquire(chat).await;
            if !store
                .advance(b.id, &runner, cursor, user, now_ms(), lease_ms)
                .await?
            {
                tracing::info!(broadcast = %b.id, "broadcast lease lost; another process continues");
                return Ok(());
            }
            cursor = user.0;
            let (delivered, holding) = send(deps, &b, chat, &runner, lease).await?;
            store.record(b.id, delivered).await?;
            if !holding {
                tracing::info!(broadcast = %b.id, "broadcast lease lost; another process continues");
                return Ok(());
            }
        }
    }
    // Only the runner that finishes it reports, so the admin hears once.
    let Some(done) = store.finish(b.id, &runner).await? else {
        return Ok(());
    };
    report(deps, &done).await;
    Ok(())
}

/// Sends the text to one recipient, waiting out one `retry_after` (renewing
/// the lease meanwhile). `(delivered, still holding the lease)`.
async fn send(
    deps: &BotDeps,
    b: &Broadcast,
    chat: ChatId,
    runner: &str,
    lease: Duration,
) -> anyhow::Result<(bool, bool)> {
    match deps.bot.send_message(chat, b.text.clone()).await {
        Ok(_) => Ok((true, true)),
        Err(teloxide::RequestError::RetryAfter(after)) => {
            let wait = after.duration().max(Duration::from_millis(100));
            metrics::counter!(kiebot_tg::rate_limit::TELEGRAM_429).increment(1);
            deps.limiter.note_retry_after(None, wait).await;
            if !pause(deps, b.id, runner, wait, lease).await? {
                return Ok((false, false));
            }
            let delivered = deps.bot.send_message(chat, b.text.clone()).await.is_ok();
            Ok((delivered, true))
        }
        Err(_) => Ok((false, true)),
    }
}

/// Sleeps `wait`, renewing the lease often enough that it does not lapse.
/// `false`: it was lost meanwhile.
async fn pause(
    deps: &BotDeps,
    id: BroadcastId,
    runner: &str,
    wait: Duration,
    lease: Duration,
) -> anyhow::Result<bool> {
    let mut left = wait;
    while !left.is_zero() {
        let step = left.min((lease / 3).max(Duration::from_millis(10)));
        tokio::time::sleep(step).await;
        left = left.saturating_sub(step);
        if !deps
            .store
            .broadcasts()
            .renew(id, runner, now_ms(), millis(lease))
            .await?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn report(deps: &BotDeps, b: &Broadcast) {
    let lang = Lang::parse(&b.lang);
    let (sent, failed) = (b.sent, b.failed);
    let report = texts::broadcast_finished(lang, sent, failed);
    if let Err(e) = deps.bot.send_message(ChatId(b.admin_chat), report).await {
        tracing::warn!(error = %e, "broadcast report not delivered");
    }
    tracing::info!(broadcast = %b.id, sent, failed, "broadcast finished");
}
