//! Admin tools inside the bot (`ADMIN_IDS` and users with an admin role):
//! statistics, user lookup, audited balance adjustments, limited admins'
//! budgets (the owner only), block/unblock, failed generations, Stars refunds
//! and maintenance mode. Callers check [`Ctx::is_admin`] first.
//!
//! # Who may do what
//!
//! The owner (the first of `ADMIN_IDS`, or a user with the `owner` role) may
//! do everything, without limits. Other admins may do what the owner granted
//! them (`/grant ID PERMISSION`): `support` (statistics, failures, user
//! look-up, resend, block/unblock; the other `ADMIN_IDS` have it by
//! configuration), `finance` (adjust and refund, within `ADMIN_MAX_ADJUST`
//! per action and `ADMIN_DAILY_BUDGET` per 24 hours), `broadcast`,
//! `maintenance`. Budgets, grants and the admin list are the owner's alone.
//! The command table ([`crate::commands`]) and [`need_of_button`] say what
//! each command and button needs; every one is checked before it runs and
//! refused with a message otherwise. No admin acts on their own account:
//! adjusting, refunding or blocking oneself is refused. Each action's audit
//! row is written in the transaction that makes it (ahead of the change),
//! and an adjustment above `ADMIN_NOTIFY_ABOVE` by anyone but the owner is
//! reported to the owner.

use std::str::FromStr;

use kiebot_domain::{GenerationId, Money, UserId};
use kiebot_store::{
    AdminRefusal, FinanceLimits, PaymentStatus, Permission, Role, StoreError, now_ms,
};
use kiebot_tg::callback::AdminCb;
use kiebot_tg::keyboards;
use kiebot_tg::texts::{self, Lang};
use teloxide::prelude::*;

use crate::commands::Command;
use crate::{Ctx, MAINTENANCE_KEY};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What an admin command or button needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any admin (the admin screen and its help).
    Admin,
    /// An admin with this permission (the owner has all).
    Permission(Permission),
    /// The owner.
    Owner,
}

/// What an admin button needs.
pub(crate) fn need_of_button(a: &AdminCb) -> Need {
    match a {
        AdminCb::Stats
        | AdminCb::Failed
        | AdminCb::User(_)
        | AdminCb::Block(_)
        | AdminCb::Unblock(_) => Need::Permission(Permission::Support),
        AdminCb::Maintenance => Need::Permission(Permission::Maintenance),
        AdminCb::Broadcast => Need::Permission(Permission::Broadcast),
    }
}

/// Whether the admin may do what `need` says; tells them why not.
async fn permitted(ctx: &Ctx, need: Need) -> anyhow::Result<bool> {
    let refusal = match need {
        Need::Admin => None,
        Need::Owner => (!ctx.is_owner()).then(|| texts::owner_only(ctx.lang)),
        Need::Permission(p) => (!ctx.permissions().await?.contains(&p))
            .then(|| texts::admin_lacks(ctx.lang, p.as_str())),
    };
    match refusal {
        None => Ok(true),
        Some(t) => {
            tracing::info!(admin = %ctx.uid, ?need, "admin action refused: no permission");
            ctx.send(t, None).await?;
            Ok(false)
        }
    }
}

/// The finance limits of this admin (`None`: the owner, unlimited).
fn limits(ctx: &Ctx) -> Option<FinanceLimits> {
    (!ctx.is_owner()).then_some(FinanceLimits {
        max_single: ctx.deps.admin_limits.max_single,
        daily_budget: ctx.deps.admin_limits.daily_budget,
    })
}

/// Tells the admin why the store refused their action; `Err` for any other
/// failure.
async fn refused(ctx: &Ctx, e: StoreError) -> anyhow::Result<()> {
    let t = match e {
        StoreError::AdminRefused(AdminRefusal::SelfTarget) => texts::admin_self_target(ctx.lang),
        StoreError::AdminRefused(AdminRefusal::OverSingleCap { max }) => {
            texts::admin_over_single(ctx.lang, max)
        }
        StoreError::AdminRefused(AdminRefusal::OverDailyBudget { left, budget }) => {
            texts::admin_over_budget(ctx.lang, left, budget)
        }
        StoreError::NotFound { what: "user", id } => match id.parse::<i64>() {
            Ok(id) => texts::admin_no_user(ctx.lang, UserId(id)),
            Err(_) => return Err(StoreError::NotFound { what: "user", id }.into()),
        },
        other => return Err(other.into()),
    };
    ctx.send(t, None).await
}

/// An admin command with its arguments.
pub(crate) async fn command(ctx: &Ctx, cmd: Command, args: &str) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let mut words = args.split_whitespace();
    let target = |w: Option<&str>| w.and_then(|s| s.parse::<i64>().ok()).map(UserId);
    if !permitted(ctx, cmd.need().unwrap_or(Need::Admin)).await? {
        return Ok(());
    }
    match cmd {
        Command::Admin => {
            ctx.send(texts::admin_menu(lang), Some(keyboards::admin(lang)))
                .await
        }
        Command::Stats => stats(ctx).await,
        Command::Failed => failed(ctx).await,
        Command::Maintenance => toggle_maintenance(ctx).await,
        Command::User => match target(words.next()) {
            Some(u) => user_card(ctx, u).await,
            None => ctx.send(texts::user_usage(lang), None).await,
        },
        Command::Block | Command::Unblock => {
            let block = cmd == Command::Block;
            match target(words.next()) {
                Some(u) => set_blocked(ctx, u, block).await,
                None => ctx.send(texts::block_usage(lang, block), None).await,
            }
        }
        Command::Adjust => {
            let user = target(words.next());
            let amount = words.next().and_then(|a| Money::from_str(a).ok());
            let reason = words.collect::<Vec<_>>().join(" ");
            match (user, amount) {
                (Some(u), Some(a)) if a != Money::ZERO && !reason.is_empty() => {
                    adjust(ctx, u, a, &reason).await
                }
                _ => ctx.send(texts::adjust_usage(lang), None).await,
            }
        }
        Command::Budget => {
            let user = target(words.next());
            let budget = match words.next() {
                Some("off") => Some(None),
                Some(a) => Money::from_str(a)
                    .ok()
                    .filter(|m| *m >= Money::ZERO)
                    .map(Some),
                None => None,
            };
            let reason = words.collect::<Vec<_>>().join(" ");
            match (user, budget) {
                (Some(u), Some(b)) if !reason.is_empty() => set_budget(ctx, u, b, &reason).await,
                _ => ctx.send(texts::budget_usage(lang), None).await,
            }
        }
        Command::Broadcast => crate::broadcast::start(ctx, args).await,
        Command::Grant | Command::Revoke => {
            let user = target(words.next());
            let perm = words.next().and_then(|p| p.parse::<Permission>().ok());
            let give = cmd == Command::Grant;
            match (user, perm, words.next()) {
                (Some(u), Some(p), None) => grant(ctx, u, p, give).await,
                _ => ctx.send(texts::grant_usage(lang, cmd.name()), None).await,
            }
        }
        Command::Admins => admins(ctx).await,
        Command::Resend => match words.next().and_then(|w| w.parse::<i64>().ok()) {
            Some(g) => resend(ctx, GenerationId(g)).await,
            None => ctx.send(texts::resend_usage(lang), None).await,
        },
        Command::Refund => match words.next() {
            Some(charge) => refund(ctx, charge).await,
            None => ctx.send(texts::refund_usage(lang), None).await,
        },
        // User commands never come here; the admin screen is a safe answer.
        Command::Start
        | Command::Balance
        | Command::History
        | Command::Promo
        | Command::Language
        | Command::Cancel
        | Command::Help
        | Command::Menu => {
            ctx.send(texts::admin_menu(lang), Some(keyboards::admin(lang)))
                .await
        }
    }
}

/// An admin button.
pub(crate) async fn on_button(ctx: &Ctx, a: AdminCb) -> anyhow::Result<bool> {
    if !permitted(ctx, need_of_button(&a)).await? {
        return Ok(true);
    }
    match a {
        AdminCb::Stats => stats(ctx).await?,
        AdminCb::Failed => failed(ctx).await?,
        AdminCb::Maintenance => toggle_maintenance(ctx).await?,
        AdminCb::Broadcast => crate::broadcast::start(ctx, "").await?,
        AdminCb::User(u) => user_card(ctx, u).await?,
        AdminCb::Block(u) => set_blocked(ctx, u, true).await?,
        AdminCb::Unblock(u) => set_blocked(ctx, u, false).await?,
    }
    Ok(true)
}

async fn sum_since(ctx: &Ctx, kind: &str, since: i64) -> anyhow::Result<Money> {
    let v: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries WHERE kind = $1 AND created_at >= $2",
    )
    .bind(kind)
    .bind(since)
    .fetch_one(ctx.deps.store.pool())
    .await?;
    Ok(Money::from_minor(v))
}

async fn stats(ctx: &Ctx) -> anyhow::Result<()> {
    let store = &ctx.deps.store;
    let now = now_ms();
    let users = store.users().counts(now - DAY_MS).await?;
    let by_status = store.generations().count_by_status().await?;
    let mut lines = vec![
        texts::stats_users(users.total, users.blocked, users.seen_since),
        texts::stats_generations(),
    ];
    for (s, n) in by_status {
        lines.push(texts::stats_status(s, n));
    }
    for (label, days) in [("24h", 1), ("7d", 7), ("30d", 30)] {
        let since = now - days * DAY_MS;
        let revenue = sum_since(ctx, "capture", since).await?;
        let topups = sum_since(ctx, "topup", since).await?;
        lines.push(texts::stats_period(label, revenue, topups));
    }
    let credits = if ctx.deps.kie.generates() {
        Some(
            ctx.deps
                .kie
                .credits()
                .await
                .map(|c| c.to_string())
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    lines.push(texts::stats_kie_credits(credits));
    let mut t = lines.join("\n");
    t.push('\n');
    ctx.show(t, Some(keyboards::admin(ctx.lang))).await
}

async fn failed(ctx: &Ctx) -> anyhow::Result<()> {
    let rows: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, user_id, model, fail_reason FROM generations WHERE status = 'failed' ORDER BY id DESC LIMIT 10",
    )
    .fetch_all(ctx.deps.store.pool())
    .await?;
    let mut t = texts::failed_heading(ctx.lang);
    if rows.is_empty() {
        t.push_str(" —");
    }
    for (id, user, model, reason) in rows {
        let reason: String = reason.unwrap_or_default().chars().take(120).collect();
        t.push('\n');
        t.push_str(&texts::failed_line(
            GenerationId(id),
            UserId(user),
            &model,
            &reason,
        ));
    }
    ctx.show(t, Some(keyboards::admin(ctx.lang))).await
}

async fn toggle_maintenance(ctx: &Ctx) -> anyhow::Result<()> {
    let on = ctx
        .deps
        .store
        .settings()
        .get(MAINTENANCE_KEY)
        .await?
        .as_deref()
        == Some("1");
    let action = if on {
        "maintenance_off"
    } else {
        "maintenance_on"
    };
    // Audited in the transaction that switches it.
    ctx.deps
        .store
        .admins()
        .switch(ctx.uid, MAINTENANCE_KEY, action, !on)
        .await?;
    ctx.show(
        texts::maintenance_switched(ctx.lang, !on),
        Some(keyboards::admin(ctx.lang)),
    )
    .await
}

async fn user_card(ctx: &Ctx, user: UserId) -> anyhow::Result<()> {
    let Some(u) = ctx.deps.store.users().get(user).await? else {
        return ctx.send(texts::admin_no_user(ctx.lang, user), None).await;
    };
    let w = ctx.deps.store.ledger().wallet(user).await?;
    let gens = ctx
        .deps
        .store
        .generations()
        .list_for_user(user, 0, 5)
        .await?;
    let t = texts::user_card(&texts::UserCard {
        id: u.id,
        role: u.role.as_str(),
        language: u.language.as_deref(),
        blocked: u.blocked,
        balance: w.balance,
        held: w.held,
        referrer: u.referrer,
        admin_budget: u.admin_budget,
        generations: gens
            .iter()
            .map(|g| (g.id, g.model.as_str(), g.status, g.price))
            .collect(),
    });
    ctx.send(t, Some(keyboards::admin_user(ctx.lang, user, u.blocked)))
        .await
}

async fn set_blocked(ctx: &Ctx, user: UserId, blocked: bool) -> anyhow::Result<()> {
    if ctx.deps.store.users().get(user).await?.is_none() {
        return ctx.send(texts::admin_no_user(ctx.lang, user), None).await;
    }
    if blocked && user != ctx.uid && ctx.deps.owner() == Some(user) {
        return ctx.send(texts::admin_owner_protected(ctx.lang), None).await;
    }
    // Audited in the same transaction; one's own account is refused.
    if let Err(e) = ctx
        .deps
        .store
        .admins()
        .set_blocked(ctx.uid, user, blocked)
        .await
    {
        return refused(ctx, e).await;
    }
    let t = texts::user_blocked(ctx.lang, user, blocked);
    ctx.send(t, Some(keyboards::admin_user(ctx.lang, user, blocked)))
        .await
}

async fn adjust(ctx: &Ctx, user: UserId, amount: Money, reason: &str) -> anyhow::Result<()> {
    if ctx.deps.store.users().get(user).await?.is_none() {
        return ctx.send(texts::admin_no_user(ctx.lang, user), None).await;
    }
    // Keyed by the update: a redelivered command cannot apply twice. The
    // audit row and the ledger entry are one transaction, within the limits.
    let key = format!("adjust:{}:{}", ctx.uid, ctx.update_id);
    match ctx
        .deps
        .store
        .admins()
        .adjust(ctx.uid, user, amount, &key, reason, limits(ctx))
        .await
    {
        Ok(applied) => {
            let w = ctx.deps.store.ledger().wallet(user).await?;
            ctx.send(texts::adjusted(ctx.lang, user, amount, w.balance), None)
                .await?;
            let size = Money::from_minor(amount.minor().saturating_abs());
            if applied.fresh && !ctx.is_owner() && size > ctx.deps.admin_limits.notify_above {
                tell_owner(ctx, user, amount, reason).await;
            }
            Ok(())
        }
        Err(StoreError::InsufficientFunds { available, .. }) => {
            ctx.send(texts::adjust_over_available(ctx.lang, available), None)
                .await
        }
        Err(e) => refused(ctx, e).await,
    }
}

/// Reports a large adjustment to the owner (best effort: the audit row is
/// the record).
async fn tell_owner(ctx: &Ctx, user: UserId, amount: Money, reason: &str) {
    let Some(owner) = ctx.deps.owner() else {
        tracing::warn!(admin = %ctx.uid, "large adjustment, but no owner to tell (ADMIN_IDS)");
        return;
    };
    let lang = match ctx.deps.store.users().get(owner).await {
        Ok(Some(u)) => u.language.as_deref().map_or(Lang::En, Lang::parse),
        _ => Lang::En,
    };
    let text = texts::admin_adjust_notice(lang, ctx.uid, user, amount, reason);
    if let Err(e) = ctx.deps.bot.send_message(ChatId(owner.0), text).await {
        tracing::warn!(owner = %owner, error = %e, "owner not told of a large adjustment");
    }
}

/// `/grant` (`give`) or `/revoke` a permission (the owner only).
async fn grant(ctx: &Ctx, user: UserId, p: Permission, give: bool) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let Some(u) = ctx.deps.store.users().get(user).await? else {
        return ctx.send(texts::admin_no_user(lang, user), None).await;
    };
    if ctx.deps.owner() == Some(user) || u.role == Role::Owner {
        return ctx.send(texts::owner_has_everything(lang), None).await;
    }
    let admins = ctx.deps.store.admins();
    let changed = if give {
        admins.grant(ctx.uid, user, p).await
    } else {
        let by_config = ctx.deps.admin_ids.contains(&user);
        admins.revoke(ctx.uid, user, p, by_config).await
    };
    match changed {
        Ok(fresh) if give => {
            ctx.send(texts::granted(lang, user, p.as_str(), fresh), None)
                .await
        }
        Ok(fresh) => {
            ctx.send(texts::revoked(lang, user, p.as_str(), fresh), None)
                .await
        }
        Err(e) => refused(ctx, e).await,
    }
}

/// `/admins`: the owner and every admin with their permissions.
async fn admins(ctx: &Ctx) -> anyhow::Result<()> {
    let granted = ctx.deps.store.admins().granted().await?;
    let mut lines = Vec::new();
    for id in ctx.deps.admin_ids.iter().skip(1) {
        if !granted.iter().any(|(u, _)| u == id) {
            lines.push(texts::admins_line_configured(*id));
        }
    }
    for (u, perms) in granted {
        let names: Vec<&str> = perms.iter().map(|p| p.as_str()).collect();
        lines.push(texts::admins_line(
            u,
            &names,
            ctx.deps.admin_ids.contains(&u),
        ));
    }
    ctx.send(texts::admins_list(ctx.lang, ctx.deps.owner(), &lines), None)
        .await
}

/// `/resend GEN_ID`: the generation's result to its owner once more.
async fn resend(ctx: &Ctx, id: GenerationId) -> anyhow::Result<()> {
    let Some(g) = ctx.deps.store.generations().get(id).await? else {
        return ctx
            .send(texts::admin_no_generation(ctx.lang, id), None)
            .await;
    };
    let lang = match ctx.deps.store.users().get(g.user).await? {
        Some(u) => u.language.as_deref().map_or(Lang::En, Lang::parse),
        None => Lang::En,
    };
    let sent = crate::menu::send_result(ctx, &g, ChatId(g.user.0), lang).await?;
    if sent {
        ctx.deps
            .store
            .audit()
            .record(ctx.uid, "resend", Some(g.user), None, &id.to_string())
            .await?;
    }
    ctx.send(texts::resent(ctx.lang, g.user, sent), None).await
}

/// Checks a refund against the admin's limits and records it as
/// requested (audited, spending the budget) before any money moves.
/// `false`: refused, and the admin was told why.
async fn authorize_refund(ctx: &Ctx, charge: &str) -> anyhow::Result<bool> {
    let Some(p) = ctx.deps.store.payments().get(charge).await? else {
        // The refund itself says so.
        return Ok(true);
    };
    if p.status == PaymentStatus::Refunded {
        return Ok(true);
    }
    match ctx
        .deps
        .store
        .admins()
        .authorize_refund(ctx.uid, p.user, p.amount, charge, limits(ctx))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) => refused(ctx, e).await.map(|()| false),
    }
}

/// Sets (or removes) a limited admin's budget: what their generations may
/// still cost the operator. Only the owner may, or admins could raise their
/// own. Setting an absolute value is idempotent, so a redelivered command
/// changes nothing more (the audit log shows both).
async fn set_budget(
    ctx: &Ctx,
    user: UserId,
    budget: Option<Money>,
    reason: &str,
) -> anyhow::Result<()> {
    let lang = ctx.lang;
    if !ctx.is_owner() {
        return ctx.send(texts::budget_owner_only(lang), None).await;
    }
    let Some(u) = ctx.deps.store.users().get(user).await? else {
        return ctx.send(texts::admin_no_user(lang, user), None).await;
    };
    let is_owner = ctx.deps.owner() == Some(user) || u.role == Role::Owner;
    let is_admin = ctx.deps.admin_ids.contains(&user) || u.role == Role::Admin;
    if is_owner || !is_admin {
        return ctx
            .send(texts::budget_not_applicable(lang, user), None)
            .await;
    }
    let before = ctx
        .deps
        .store
        .users()
        .set_admin_budget_audited(user, budget, ctx.uid, reason)
        .await?;
    ctx.send(texts::budget_set(lang, user, budget, before), None)
        .await
}

/// Refunds a Stars payment: the ledger first (so money the wallet still
/// shows is never paid out twice), then Telegram; if Telegram refuses, the
/// debit is reversed with an audited adjustment.
async fn refund(ctx: &Ctx, charge: &str) -> anyhow::Result<()> {
    if !authorize_refund(ctx, charge).await? {
        return Ok(());
    }
    let lang = ctx.lang;
    let store = &ctx.deps.store;
    let Some(p) = store.payments().get(charge).await? else {
        return ctx.send(texts::payment_not_found(lang), None).await;
    };
    let applied = match store.payments().mark_refunded(charge).await {
        Ok(a) => a,
        Err(StoreError::InsufficientFunds { available, .. }) => {
            return ctx.send(texts::refund_spent(lang, available), None).await;
        }
        Err(e) => return Err(e.into()),
    };
    if !applied.fresh {
        return ctx.send(texts::refund_repeat(lang), None).await;
    }
    // A lost or ambiguous answer is settled by Telegram's own transaction
    // list, never guessed: only a definite refusal undoes the debit.
    match crate::stars::refund_at_telegram(&ctx.deps, p.user, charge).await {
        crate::stars::RefundOutcome::Refunded => {
            store
                .audit()
                .record(ctx.uid, "refund", Some(p.user), Some(p.amount), charge)
                .await?;
            ctx.send(texts::refunded(lang, p.stars, p.amount, p.user), None)
                .await
        }
        crate::stars::RefundOutcome::Unknown(e) => {
            tracing::error!(charge, error = %e, "refund outcome unknown; the debit stands");
            ctx.send(texts::refund_unknown(lang, &e.to_string()), None)
                .await
        }
        crate::stars::RefundOutcome::Refused(e) => {
            tracing::error!(charge, error = %e, "refundStarPayment refused; reversing the debit");
            store
                .ledger()
                .adjust(
                    p.user,
                    p.amount,
                    &format!("refund-undo:{charge}"),
                    ctx.uid,
                    "Telegram refused the refund",
                )
                .await?;
            ctx.send(texts::refund_refused(lang, &e.to_string()), None)
                .await
        }
    }
}
