//! Our payments compared with Telegram's own list (`getStarTransactions`).
//!
//! - [`reconcile_stars`] reads the bot's Star transactions and credits any
//!   incoming charge we have no payment for (its `successful_payment` update
//!   never reached us), once, through the same path as the update; a refund
//!   made outside the bot (an outgoing transaction to a user carrying the
//!   charge id) is recorded through `payments().mark_refunded`, like an
//!   admin's refund. [`run_stars_reconciler`] runs it at start and then
//!   every `STARS_RECONCILE_SECS`, one front at a time (a turn in the
//!   settings table).
//! - [`refund_at_telegram`] calls `refundStarPayment` and, when the answer
//!   is lost or ambiguous (a timeout, a dropped connection), asks the same
//!   list whether the refund happened: only a definite refusal is a refusal.
//!
//! Telegram lists transactions oldest first; `offset` skips that many. A
//! cursor (how many were read) is kept in the settings so a pass reads only
//! the tail, with an overlap in case the list shifts.

use std::future::Future;
use std::time::Duration;

use kiebot_domain::UserId;
use kiebot_store::{PaymentStatus, StoreError, now_ms};
use kiebot_tg::{keyboards, texts};
use teloxide::prelude::*;
use teloxide::types::{
    StarTransaction, TelegramTransactionId, TransactionPartner, TransactionPartnerUserKind,
};

use crate::BotDeps;
use crate::payments::{Credited, credit_stars, lang_of};

/// Settings key of the reconciler's turn (a unix-ms time).
pub const STARS_RECONCILE_TURN: &str = "stars_reconcile_turn";

/// Settings key of how many transactions a pass has read.
const CURSOR: &str = "stars_reconcile_cursor";

/// Transactions read again before the cursor, in case the list shifted.
const OVERLAP: u32 = 100;

/// Telegram's largest page.
const PAGE: u8 = 100;

/// Charges found by the reconciler, by kind (`credited`, `refund_recorded`,
/// `refund_unrecorded`).
pub const STARS_RECONCILED: &str = "kiebot_stars_reconciled_total";

/// What one pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Transactions read.
    pub seen: usize,
    /// Incoming charges we had no payment for, credited now.
    pub credited: usize,
    /// Refunds made outside the bot, recorded now.
    pub refunds_recorded: usize,
    /// Refunds that could not be recorded (the user spent the money): the
    /// payment is flagged for the operator.
    pub refunds_unrecorded: usize,
}

/// An incoming invoice payment: (payer, payload).
fn incoming(t: &StarTransaction) -> Option<(UserId, String)> {
    match t.source.as_ref()? {
        TransactionPartner::User(p) => match &p.kind {
            TransactionPartnerUserKind::InvoicePayment(ip) => Some((
                UserId(i64::try_from(p.user.id.0).ok()?),
                ip.invoice_payload.clone().unwrap_or_default(),
            )),
            _ => None,
        },
        _ => None,
    }
}

/// A refund of an invoice payment: the user paid back.
fn refund_to(t: &StarTransaction) -> Option<UserId> {
    match t.receiver.as_ref()? {
        TransactionPartner::User(p) => match &p.kind {
            TransactionPartnerUserKind::InvoicePayment(_) => {
                Some(UserId(i64::try_from(p.user.id.0).ok()?))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Every transaction from `from` on, page by page.
async fn transactions_from(deps: &BotDeps, from: u32) -> anyhow::Result<Vec<StarTransaction>> {
    let mut all = Vec::new();
    let mut offset = from;
    loop {
        let page = deps
            .bot
            .get_star_transactions()
            .offset(offset)
            .limit(PAGE)
            .await?
            .transactions;
        let n = page.len();
        all.extend(page);
        if n < usize::from(PAGE) {
            return Ok(all);
        }
        offset = offset.saturating_add(u32::from(PAGE));
    }
}

/// One pass: credits unknown incoming charges and records outside refunds.
pub async fn reconcile_stars(deps: &BotDeps) -> anyhow::Result<Reconciled> {
    let cursor: u32 = deps
        .store
        .settings()
        .get(CURSOR)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let from = cursor.saturating_sub(OVERLAP);
    let list = transactions_from(deps, from).await?;
    let mut found = Reconciled {
        seen: list.len(),
        ..Reconciled::default()
    };
    for t in &list {
        let charge = t.id.0.as_str();
        if let Some((user, payload)) = incoming(t) {
            if deps.store.payments().get(charge).await?.is_some() {
                continue;
            }
            let Some(Credited { applied, amount }) =
                credit_stars(deps, user, charge, t.amount, &payload, "reconciler").await?
            else {
                continue;
            };
            if applied.fresh {
                found.credited += 1;
                metrics::counter!(STARS_RECONCILED, "kind" => "credited").increment(1);
                tracing::warn!(user = %user, charge, stars = t.amount, "payment missing its update credited by the reconciler");
                let lang = lang_of(deps, user).await;
                if let Ok(w) = deps.store.ledger().wallet(user).await
                    && let Err(e) = deps
                        .bot
                        .send_message(
                            ChatId(user.0),
                            texts::payment_received(lang, amount, w.available()),
                        )
                        .reply_markup(keyboards::home(lang))
                        .await
                {
                    tracing::info!(user = %user, error = %e, "payment notice not delivered");
                }
            }
        } else if let Some(user) = refund_to(t) {
            let Some(p) = deps.store.payments().get(charge).await? else {
                tracing::warn!(user = %user, charge, "refund of a charge we have no payment for");
                continue;
            };
            if p.status == PaymentStatus::Refunded {
                continue;
            }
            match deps.store.payments().mark_refunded(charge).await {
                Ok(a) if a.fresh => {
                    found.refunds_recorded += 1;
                    metrics::counter!(STARS_RECONCILED, "kind" => "refund_recorded").increment(1);
                    tracing::warn!(user = %user, charge, "refund made outside the bot recorded");
                }
                Ok(_) => {}
                Err(StoreError::InsufficientFunds { .. }) => {
                    found.refunds_unrecorded += 1;
                    metrics::counter!(STARS_RECONCILED, "kind" => "refund_unrecorded").increment(1);
                    tracing::error!(user = %user, charge, "refunded outside the bot after the money was spent; payment flagged");
                    deps.store
                        .payments()
                        .set_flag(charge, "refunded_outside_spent")
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let read = from.saturating_add(u32::try_from(list.len()).unwrap_or(u32::MAX));
    if read > cursor {
        deps.store.settings().set(CURSOR, &read.to_string()).await?;
    }
    Ok(found)
}

/// Runs [`reconcile_stars`] at start and every `every` until `shutdown`, in
/// whichever front takes the turn.
pub async fn run_stars_reconciler(
    deps: BotDeps,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = now_ms();
        // A little early, so the front that took the last turn can take the
        // next one on its own schedule.
        let next = now.saturating_add(every_ms.saturating_sub(every_ms / 10));
        match deps
            .store
            .settings()
            .take_turn(STARS_RECONCILE_TURN, now, next)
            .await
        {
            Ok(true) => {
                let span = tracing::info_span!("stars.reconcile");
                match tracing::Instrument::instrument(reconcile_stars(&deps), span).await {
                    Ok(r) => tracing::info!(
                        seen = r.seen,
                        credited = r.credited,
                        refunds_recorded = r.refunds_recorded,
                        refunds_unrecorded = r.refunds_unrecorded,
                        "stars reconciled"
                    ),
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "stars reconciliation failed");
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "stars reconciler cannot take its turn"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How a `refundStarPayment` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Telegram refunded (said so, or lists the refund).
    Refunded,
    /// Telegram definitely refused, with its reason.
    Refused(String),
    /// Neither could be established; the last error.
    Unknown(String),
}

/// Whether Telegram lists a refund of `charge`.
async fn refund_listed(deps: &BotDeps, charge: &str) -> anyhow::Result<bool> {
    Ok(transactions_from(deps, 0)
        .await?
        .iter()
        .any(|t| t.id.0 == charge && refund_to(t).is_some()))
}

/// Refunds `charge` to `user` at Telegram. An answer lost on the way (a
/// timeout, a dropped connection, a server error) is never taken for a
/// refusal: Telegram's transaction list says whether the refund happened,
/// and if it did not, the call is made again (Telegram refuses a second
/// refund of one charge, which then also means refunded).
pub async fn refund_at_telegram(deps: &BotDeps, user: UserId, charge: &str) -> RefundOutcome {
    const ATTEMPTS: u32 = 4;
    let tg_user = teloxide::types::UserId(u64::try_from(user.0).unwrap_or_default());
    let mut last = String::new();
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let span = tracing::info_span!("tg.refund_star_payment", charge, attempt);
        let called = tracing::Instrument::instrument(
            deps.bot
                .refund_star_payment(tg_user, TelegramTransactionId(charge.to_owned()))
                .send(),
            span,
        )
        .await;
        match called {
            Ok(_) => return RefundOutcome::Refunded,
            Err(teloxide::RequestError::Api(e)) => {
                let said = e.to_string();
                if said.contains("CHARGE_ALREADY_REFUNDED") {
                    return RefundOutcome::Refunded;
                }
                return RefundOutcome::Refused(said);
            }
            Err(e) => {
                tracing::warn!(charge, attempt, error = %e, "refundStarPayment answer lost; asking Telegram's list");
                last = e.to_string();
            }
        }
        match refund_listed(deps, charge).await {
            Ok(true) => return RefundOutcome::Refunded,
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    RefundOutcome::Unknown(last)
}
