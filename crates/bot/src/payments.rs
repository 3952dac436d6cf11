//! Money in: Telegram Stars top-ups, promo codes and the referral bonus.
//!
//! An invoice's payload is `v1:<user id>:<stars>:<nonce>`. Pre-checkout is
//! approved only when the payload parses, names the paying user and the
//! amount matches (Telegram requires an answer within 10 s; we answer from
//! the handler after a parse, no I/O). The credit itself does not depend on
//! the payload: whatever Telegram says was paid is credited, once per
//! `telegram_payment_charge_id`, because money received must never be lost.

use std::sync::Arc;

use kiebot_domain::{Money, UserId};
use kiebot_store::StoreError;
use kiebot_tg::keyboards;
use kiebot_tg::texts::{self, Lang};
use teloxide::prelude::*;
use teloxide::types::{LabeledPrice, PreCheckoutQuery, SuccessfulPayment};

use crate::state::Dialogue;
use crate::{BotDeps, Ctx, MAINTENANCE_KEY};

/// The preset top-ups, in Stars.
pub const STAR_PRESETS: [u32; 5] = [50, 100, 250, 500, 1000];

/// Smallest and largest custom top-up, in Stars.
pub const CUSTOM_STARS: (u32, u32) = (1, 10_000);

/// What the inviter gets after the invitee's first top-up, unless the
/// `referral_bonus_minor` setting says otherwise.
pub const DEFAULT_REFERRAL_BONUS: Money = Money::from_minor(5_000);

/// Telegram Stars' currency code.
const XTR: &str = "XTR";

/// A verified invoice payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload {
    pub user: UserId,
    pub stars: u32,
}

impl Payload {
    fn encode(self) -> String {
        let nonce: u64 = rand::random();
        format!("v1:{}:{}:{nonce:016x}", self.user.0, self.stars)
    }

    pub(crate) fn parse(s: &str) -> Option<Payload> {
        let mut it = s.split(':');
        let (v, u, n, nonce) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if v != "v1"
            || it.next().is_some()
            || nonce.len() != 16
            || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        Some(Payload {
            user: UserId(u.parse().ok()?),
            stars: n.parse().ok().filter(|n| *n > 0)?,
        })
    }
}

fn credit_for(deps: &BotDeps, stars: u32) -> Option<Money> {
    deps.stars_rate.checked_mul(i64::from(stars)).ok()
}

/// The top-up screen.
pub(crate) async fn topup(ctx: &Ctx) -> anyhow::Result<()> {
    let presets: Vec<(u32, Money)> = STAR_PRESETS
        .iter()
        .filter_map(|&s| credit_for(&ctx.deps, s).map(|m| (s, m)))
        .collect();
    ctx.show(
        texts::topup(ctx.lang, ctx.deps.stars_rate),
        Some(keyboards::topup(ctx.lang, &presets)),
    )
    .await
}

/// Asks for a custom number of Stars.
pub(crate) async fn ask_custom(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.set_dialogue(&Dialogue::StarsAmount).await?;
    let (min, max) = CUSTOM_STARS;
    ctx.show(
        texts::ask_stars(ctx.lang, min, max),
        Some(keyboards::home(ctx.lang)),
    )
    .await
}

/// The typed custom amount.
pub(crate) async fn custom_amount(ctx: &Ctx, text: &str) -> anyhow::Result<()> {
    let (min, max) = CUSTOM_STARS;
    match text.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => {
            ctx.set_dialogue(&Dialogue::Idle).await?;
            invoice(ctx, n).await
        }
        _ => {
            ctx.send(
                texts::bad_stars(ctx.lang, min, max),
                Some(keyboards::home(ctx.lang)),
            )
            .await
        }
    }
}

/// Sends a Stars invoice (no provider token).
pub(crate) async fn invoice(ctx: &Ctx, stars: u32) -> anyhow::Result<()> {
    let Some(amount) = credit_for(&ctx.deps, stars) else {
        return ctx.send(texts::internal_error(ctx.lang), None).await;
    };
    let payload = Payload {
        user: ctx.uid,
        stars,
    }
    .encode();
    ctx.deps
        .bot
        .send_invoice(
            ctx.chat,
            texts::invoice_title(ctx.lang),
            texts::invoice_description(ctx.lang, amount),
            payload,
            XTR,
            vec![LabeledPrice::new(texts::invoice_title(ctx.lang), stars)],
        )
        .await?;
    Ok(())
}

async fn lang_of(deps: &BotDeps, user: UserId) -> Lang {
    match deps.store.users().get(user).await {
        Ok(Some(u)) => u.language.as_deref().map_or(Lang::En, Lang::parse),
        _ => Lang::En,
    }
}

/// `pre_checkout_query`: approve only our own, matching invoices.
pub(crate) async fn pre_checkout(deps: Arc<BotDeps>, q: PreCheckoutQuery) -> anyhow::Result<()> {
    let payer = UserId(i64::try_from(q.from.id.0).unwrap_or(-1));
    let valid = q.currency == XTR
        && Payload::parse(&q.invoice_payload)
            .is_some_and(|p| p.user == payer && p.stars == q.total_amount);
    let maintenance = deps.store.settings().get(MAINTENANCE_KEY).await?.as_deref() == Some("1")
        && !deps.admin_ids.contains(&payer);
    let lang = q
        .from
        .language_code
        .as_deref()
        .map_or(Lang::En, Lang::parse);
    let req = deps
        .bot
        .answer_pre_checkout_query(q.id.clone(), valid && !maintenance);
    if !valid {
        tracing::warn!(user = %payer, "pre-checkout refused: payload does not match");
        req.error_message(texts::payment_refused(lang)).await?;
    } else if maintenance {
        req.error_message(texts::maintenance(lang)).await?;
    } else {
        req.await?;
    }
    Ok(())
}

/// `successful_payment`: credit once per charge id, then the referral bonus.
pub(crate) async fn successful_payment(
    deps: Arc<BotDeps>,
    msg: Message,
    p: SuccessfulPayment,
) -> anyhow::Result<()> {
    let payer = msg
        .from
        .as_ref()
        .map_or(msg.chat.id.0, |u| i64::try_from(u.id.0).unwrap_or(-1));
    let user = UserId(payer);
    let charge = p.telegram_payment_charge_id.0.clone();
    if p.currency != XTR {
        tracing::error!(user = %user, currency = %p.currency, "payment in an unexpected currency; not credited");
        return Ok(());
    }
    let Some(amount) = credit_for(&deps, p.total_amount).filter(|m| m.is_positive()) else {
        tracing::error!(user = %user, stars = p.total_amount, "payment amount cannot be credited");
        return Ok(());
    };
    if Payload::parse(&p.invoice_payload)
        .is_none_or(|pl| pl.user != user || pl.stars != p.total_amount)
    {
        tracing::warn!(user = %user, "payment payload does not match; crediting what was paid");
    }
    let applied = deps
        .store
        .payments()
        .record_stars_payment(
            user,
            &charge,
            i64::from(p.total_amount),
            amount,
            &p.invoice_payload,
        )
        .await?;
    if !applied.fresh {
        tracing::info!(user = %user, "duplicate successful_payment ignored");
        return Ok(());
    }
    tracing::info!(user = %user, stars = p.total_amount, amount_minor = amount.minor(), "stars payment credited");
    let lang = lang_of(&deps, user).await;
    let wallet = deps.store.ledger().wallet(user).await?;
    deps.bot
        .send_message(
            msg.chat.id,
            texts::payment_received(lang, amount, wallet.available()),
        )
        .reply_markup(keyboards::home(lang))
        .await?;
    // The inviter's bonus, once per invitee, after their first top-up.
    let bonus = match deps.store.settings().get("referral_bonus_minor").await? {
        Some(v) => v
            .parse()
            .map(Money::from_minor)
            .unwrap_or(DEFAULT_REFERRAL_BONUS),
        None => DEFAULT_REFERRAL_BONUS,
    };
    if bonus.is_positive()
        && let Some(b) = deps.store.referrals().pay_bonus(user, bonus).await?
        && b.fresh
    {
        let inviter = b.entry.user;
        let lang = lang_of(&deps, inviter).await;
        if let Err(e) = deps
            .bot
            .send_message(ChatId(inviter.0), texts::referral_bonus(lang, bonus))
            .await
        {
            tracing::info!(inviter = %inviter, error = %e, "referral notice not delivered");
        }
    }
    Ok(())
}

/// The window of the refused-promo limit (`PROMO_FAILURES_PER_HOUR`).
const PROMO_WINDOW_MS: i64 = 60 * 60 * 1000;

/// /promo CODE.
pub(crate) async fn promo(ctx: &Ctx, code: Option<&str>) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let Some(code) = code
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.len() <= 64)
    else {
        return ctx.send(texts::promo_usage(lang), None).await;
    };
    // Guessing codes: after a few refused ones, no more tries for an hour.
    // Counted in the database, so every front process keeps the same count.
    let promos = ctx.deps.store.promos();
    let now = kiebot_store::now_ms();
    let limit = u64::from(ctx.deps.flood.config().promo_failures_per_hour);
    if promos
        .failures_since(ctx.uid, now - PROMO_WINDOW_MS)
        .await?
        >= limit
    {
        return ctx
            .send(texts::promo_too_many(lang), Some(keyboards::home(lang)))
            .await;
    }
    match promos.redeem(code, ctx.uid).await {
        Ok(a) if a.fresh => {
            ctx.send(
                texts::promo_ok(lang, a.entry.amount),
                Some(keyboards::home(lang)),
            )
            .await
        }
        Ok(_) => {
            ctx.send(texts::promo_repeat(lang), Some(keyboards::home(lang)))
                .await
        }
        Err(StoreError::PromoRefused { .. }) => {
            promos.record_failure(ctx.uid, now).await?;
            ctx.send(texts::promo_refused(lang), Some(keyboards::home(lang)))
                .await
        }
        Err(e) => Err(e.into()),
    }
}
