//! Money in: Telegram Stars top-ups, promo codes and the referral bonus.
//!
//! Every invoice is a row of `store.invoices()` (user, Stars, the amount it
//! credits, expiry); its payload `inv:<id>:<nonce>` names the row.
//! Pre-checkout approves only an invoice we issued to the paying user, for
//! the same Stars, not expired (Telegram wants the answer within 10 s: one
//! indexed read). A payment is credited by its invoice's recorded amount,
//! once per `telegram_payment_charge_id`; one whose payload matches no
//! invoice is credited all the same at the current rate (it is real money)
//! and flagged for the operator. Payloads of the older `v1:<user>:<stars>:<nonce>`
//! shape, issued before invoices were recorded, are checked as before and
//! credited at the current rate.
//!
//! Crediting ([`credit_stars`]) is shared by the `successful_payment`
//! handler and the Stars reconciler ([`crate::stars`]), which finds charges
//! whose update never arrived.

use std::sync::Arc;

use kiebot_domain::{Money, UserId};
use kiebot_store::{Applied, StarsCredit, StoreError, now_ms};
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

/// What the inviter gets when the invitee first qualifies (a top-up of
/// `REFERRAL_MIN_STARS`, or spending of `REFERRAL_MIN_SPEND`), unless the
/// `referral_bonus_minor` setting says otherwise.
pub const DEFAULT_REFERRAL_BONUS: Money = Money::from_minor(5_000);

/// Telegram Stars' currency code.
pub(crate) const XTR: &str = "XTR";

/// How long an invoice can be paid after it was sent.
pub const INVOICE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Payments credited, by where they were found (`update`, `reconciler`).
pub const PAYMENTS_CREDITED: &str = "kiebot_payments_credited_total";
/// Payments credited but flagged for the operator, by reason.
pub const PAYMENTS_FLAGGED: &str = "kiebot_payments_flagged_total";

/// An invoice payload of the older `v1` shape (before invoices were
/// recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload {
    pub user: UserId,
    pub stars: u32,
}

impl Payload {
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

/// Sends a Stars invoice (no provider token), recorded first so that
/// pre-checkout and the credit can check it.
pub(crate) async fn invoice(ctx: &Ctx, stars: u32) -> anyhow::Result<()> {
    let Some(amount) = credit_for(&ctx.deps, stars) else {
        return ctx.send(texts::internal_error(ctx.lang), None).await;
    };
    let ttl = i64::try_from(INVOICE_TTL.as_millis()).unwrap_or(i64::MAX);
    let issued = ctx
        .deps
        .store
        .invoices()
        .create(ctx.uid, i64::from(stars), amount, ttl, rand::random())
        .await?;
    ctx.deps
        .bot
        .send_invoice(
            ctx.chat,
            texts::invoice_title(ctx.lang),
            texts::invoice_description(ctx.lang, amount),
            issued.payload,
            XTR,
            vec![LabeledPrice::new(texts::invoice_title(ctx.lang), stars)],
        )
        .await?;
    Ok(())
}

pub(crate) async fn lang_of(deps: &BotDeps, user: UserId) -> Lang {
    match deps.store.users().get(user).await {
        Ok(Some(u)) => u.language.as_deref().map_or(Lang::En, Lang::parse),
        _ => Lang::En,
    }
}

/// What pre-checkout makes of an invoice payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Valid,
    /// Not ours, someone else's, another amount or currency.
    Invalid,
    Expired,
}

async fn check_invoice(
    deps: &BotDeps,
    payer: UserId,
    payload: &str,
    currency: &str,
    stars: u32,
) -> anyhow::Result<Check> {
    if currency != XTR {
        return Ok(Check::Invalid);
    }
    if kiebot_store::invoices::parse_payload(payload).is_some() {
        return Ok(match deps.store.invoices().by_payload(payload).await? {
            Some(i) if i.user != payer || i.stars != i64::from(stars) => Check::Invalid,
            Some(i) if i.expired(now_ms()) => Check::Expired,
            Some(_) => Check::Valid,
            None => Check::Invalid,
        });
    }
    Ok(
        if Payload::parse(payload).is_some_and(|p| p.user == payer && p.stars == stars) {
            Check::Valid
        } else {
            Check::Invalid
        },
    )
}

/// `pre_checkout_query`: approve only our own, matching, unexpired invoices.
/// A database error is returned (the update is then tried again); an answer
/// Telegram refuses (the query was answered already, or is too old) is not.
pub(crate) async fn pre_checkout(deps: Arc<BotDeps>, q: PreCheckoutQuery) -> anyhow::Result<()> {
    let payer = UserId(i64::try_from(q.from.id.0).unwrap_or(-1));
    let check = check_invoice(
        &deps,
        payer,
        &q.invoice_payload,
        &q.currency,
        q.total_amount,
    )
    .await?;
    let maintenance = deps.store.settings().get(MAINTENANCE_KEY).await?.as_deref() == Some("1")
        && !deps.admin_ids.contains(&payer);
    let lang = q
        .from
        .language_code
        .as_deref()
        .map_or(Lang::En, Lang::parse);
    let valid = check == Check::Valid;
    let req = deps
        .bot
        .answer_pre_checkout_query(q.id.clone(), valid && !maintenance);
    let answered = match check {
        Check::Invalid => {
            tracing::warn!(user = %payer, "pre-checkout refused: no such invoice for this user and amount");
            req.error_message(texts::payment_refused(lang)).await
        }
        Check::Expired => {
            tracing::info!(user = %payer, "pre-checkout refused: invoice expired");
            req.error_message(texts::invoice_expired(lang)).await
        }
        Check::Valid if maintenance => req.error_message(texts::maintenance(lang)).await,
        Check::Valid => req.await,
    };
    match answered {
        Ok(_) => Ok(()),
        Err(teloxide::RequestError::Api(e)) => {
            tracing::warn!(user = %payer, error = %e, "answerPreCheckoutQuery refused");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A credited Stars payment.
pub(crate) struct Credited {
    pub applied: Applied,
    pub amount: Money,
}

/// Records and credits a Stars payment once per charge id: by its invoice's
/// recorded amount, or (unknown or mismatching invoice) at the current rate,
/// flagged for the operator. `source` names who found it, for metrics.
pub(crate) async fn credit_stars(
    deps: &BotDeps,
    user: UserId,
    charge: &str,
    stars: u32,
    payload: &str,
    source: &'static str,
) -> anyhow::Result<Option<Credited>> {
    let Some(at_rate) = credit_for(deps, stars).filter(|m| m.is_positive()) else {
        tracing::error!(user = %user, stars, "payment amount cannot be credited");
        return Ok(None);
    };
    let (amount, flag) = match deps.store.invoices().by_payload(payload).await? {
        Some(i) if i.user != user => (at_rate, Some("invoice_of_another_user")),
        Some(i) if i.stars != i64::from(stars) => (at_rate, Some("stars_differ")),
        Some(i) => (i.amount, None),
        None if Payload::parse(payload).is_some_and(|p| p.user == user && p.stars == stars) => {
            (at_rate, None)
        }
        None => (at_rate, Some("unknown_invoice")),
    };
    let applied = deps
        .store
        .payments()
        .credit_stars(&StarsCredit {
            user,
            charge_id: charge,
            stars: i64::from(stars),
            amount,
            payload,
            flag,
        })
        .await?;
    if applied.fresh {
        metrics::counter!(PAYMENTS_CREDITED, "source" => source).increment(1);
        tracing::info!(user = %user, stars, amount_minor = amount.minor(), source, "stars payment credited");
        if let Some(reason) = flag {
            metrics::counter!(PAYMENTS_FLAGGED, "reason" => reason).increment(1);
            tracing::warn!(user = %user, stars, reason, "payment credited at the current rate and flagged for the operator");
        }
    }
    Ok(Some(Credited { applied, amount }))
}

/// `successful_payment`: credit once per charge id, then the referral bonus
/// if this top-up qualifies. An error (the database) is returned so the
/// update is tried again until the payment is credited; telling the user is
/// best effort.
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
    let Some(Credited { applied, amount }) = credit_stars(
        &deps,
        user,
        &charge,
        p.total_amount,
        &p.invoice_payload,
        "update",
    )
    .await?
    else {
        return Ok(());
    };
    if applied.fresh {
        let lang = lang_of(&deps, user).await;
        let wallet = deps.store.ledger().wallet(user).await?;
        if let Err(e) = deps
            .bot
            .send_message(
                msg.chat.id,
                texts::payment_received(lang, amount, wallet.available()),
            )
            .reply_markup(keyboards::home(lang))
            .await
        {
            tracing::info!(user = %user, error = %e, "payment notice not delivered");
        }
    } else {
        tracing::info!(user = %user, "duplicate successful_payment: credited before");
    }
    // The inviter's bonus, when this is the invitee's first qualifying
    // top-up (see `kiebot_store::referrals` for the rules); asked again on a
    // repeated update, in case the first try failed after the credit (a
    // settled referral is never settled twice).
    if let (Some(rules), Some(payment)) = (referral_rules(&deps).await?, applied.entry.payment)
        && let Some(settled) = deps
            .store
            .referrals()
            .on_payment(user, payment, i64::from(p.total_amount), &rules)
            .await?
    {
        tell_inviter(&deps, &settled).await;
    }
    Ok(())
}

/// The referral rules now: the policy with the bonus setting; `None` when
/// the bonus is set to 0 (referrals pay nothing).
async fn referral_rules(deps: &BotDeps) -> anyhow::Result<Option<kiebot_store::ReferralRules>> {
    let bonus = match deps.store.settings().get("referral_bonus_minor").await? {
        Some(v) => v
            .parse()
            .map(Money::from_minor)
            .unwrap_or(DEFAULT_REFERRAL_BONUS),
        None => DEFAULT_REFERRAL_BONUS,
    };
    let policy = deps.referral;
    Ok(bonus.is_positive().then_some(kiebot_store::ReferralRules {
        bonus,
        min_stars: i64::from(policy.min_stars),
        min_spend: policy.min_spend,
        monthly_cap: policy.monthly_cap,
    }))
}

/// Tells the inviter about a bonus paid to them (nothing for a referral
/// settled without one).
async fn tell_inviter(deps: &BotDeps, settled: &kiebot_store::Settled) {
    let Some(bonus) = &settled.bonus else {
        return;
    };
    let inviter = settled.inviter;
    let lang = lang_of(deps, inviter).await;
    if let Err(e) = deps
        .bot
        .send_message(
            ChatId(inviter.0),
            texts::referral_bonus(lang, bonus.entry.amount),
        )
        .await
    {
        tracing::info!(inviter = %inviter, error = %e, "referral notice not delivered");
    }
}

/// Pays the referral bonuses whose invitees' captured spending reached
/// `REFERRAL_MIN_SPEND` (off when unset): every front process runs it every
/// few seconds, so the bonus follows the capture that qualified, whichever
/// worker captured it. Returns how many referrals it settled.
pub async fn settle_referral_spend(deps: &BotDeps) -> anyhow::Result<usize> {
    if deps.referral.min_spend.is_none() {
        return Ok(0);
    }
    let Some(rules) = referral_rules(deps).await? else {
        return Ok(0);
    };
    let settled = deps.store.referrals().settle_spent(&rules, 100).await?;
    for (_, s) in &settled {
        tell_inviter(deps, s).await;
    }
    Ok(settled.len())
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
