//! Admin tools inside the bot (`ADMIN_IDS` and users with an admin role):
//! statistics, user lookup, audited balance adjustments, limited admins'
//! budgets (the owner only), block/unblock, failed generations, Stars refunds
//! and maintenance mode. Callers check [`Ctx::is_admin`] first.

use std::fmt::Write as _;
use std::str::FromStr;

use kiebot_domain::{Money, UserId};
use kiebot_store::{Role, StoreError, now_ms};
use kiebot_tg::callback::AdminCb;
use kiebot_tg::keyboards;
use kiebot_tg::texts::{self, Lang};

use crate::{Ctx, MAINTENANCE_KEY};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn say(lang: Lang, ru: String, en: String) -> String {
    texts::admin_report(lang, &ru, &en)
}

/// An admin command (`name` without the slash).
pub(crate) async fn command(ctx: &Ctx, name: &str, args: &str) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let mut words = args.split_whitespace();
    let target = |w: Option<&str>| w.and_then(|s| s.parse::<i64>().ok()).map(UserId);
    match name {
        "admin" => {
            ctx.send(texts::admin_menu(lang), Some(keyboards::admin(lang)))
                .await
        }
        "stats" => stats(ctx).await,
        "failed" => failed(ctx).await,
        "maintenance" => toggle_maintenance(ctx).await,
        "user" => match target(words.next()) {
            Some(u) => user_card(ctx, u).await,
            None => {
                ctx.send(
                    say(
                        lang,
                        "Использование: /user ID".into(),
                        "Usage: /user ID".into(),
                    ),
                    None,
                )
                .await
            }
        },
        "block" | "unblock" => match target(words.next()) {
            Some(u) => set_blocked(ctx, u, name == "block").await,
            None => {
                ctx.send(
                    say(
                        lang,
                        format!("Использование: /{name} ID"),
                        format!("Usage: /{name} ID"),
                    ),
                    None,
                )
                .await
            }
        },
        "adjust" => {
            let user = target(words.next());
            let amount = words.next().and_then(|a| Money::from_str(a).ok());
            let reason = words.collect::<Vec<_>>().join(" ");
            match (user, amount) {
                (Some(u), Some(a)) if a != Money::ZERO && !reason.is_empty() => adjust(ctx, u, a, &reason).await,
                _ => ctx.send(say(lang, "Использование: /adjust ID СУММА ПРИЧИНА (сумма может быть отрицательной)".into(), "Usage: /adjust ID AMOUNT REASON (the amount may be negative)".into()), None).await,
            }
        }
        "budget" => {
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
                _ => ctx.send(say(lang, "Использование: /budget ID СУММА ПРИЧИНА или /budget ID off ПРИЧИНА (бюджет — сколько администратор ещё может потратить)".into(), "Usage: /budget ID AMOUNT REASON or /budget ID off REASON (the budget is what the admin may still spend)".into()), None).await,
            }
        }
        "broadcast" => crate::broadcast::start(ctx, args).await,
        "refund" => match words.next() {
            Some(charge) => refund(ctx, charge).await,
            None => {
                ctx.send(
                    say(
                        lang,
                        "Использование: /refund CHARGE_ID".into(),
                        "Usage: /refund CHARGE_ID".into(),
                    ),
                    None,
                )
                .await
            }
        },
        _ => {
            ctx.send(texts::admin_menu(lang), Some(keyboards::admin(lang)))
                .await
        }
    }
}

/// An admin button.
pub(crate) async fn on_button(ctx: &Ctx, a: AdminCb) -> anyhow::Result<bool> {
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
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Users: {} (blocked {}, active 24h {})",
        users.total, users.blocked, users.seen_since
    );
    let _ = writeln!(t, "Generations:");
    for (s, n) in by_status {
        let _ = writeln!(t, "  {s}: {n}");
    }
    for (label, days) in [("24h", 1), ("7d", 7), ("30d", 30)] {
        let since = now - days * DAY_MS;
        let revenue = sum_since(ctx, "capture", since).await?;
        let topups = sum_since(ctx, "topup", since).await?;
        let _ = writeln!(
            t,
            "{label}: revenue {} · top-ups {}",
            texts::money(revenue),
            texts::money(topups)
        );
    }
    match &ctx.deps.kie {
        Some(kie) => match kie.credits().await {
            Ok(c) => {
                let _ = writeln!(t, "KIE credits: {c}");
            }
            Err(e) => {
                let _ = writeln!(t, "KIE credits: unavailable ({e})");
            }
        },
        None => {
            let _ = writeln!(t, "KIE credits: dry run");
        }
    }
    ctx.show(t, Some(keyboards::admin(ctx.lang))).await
}

async fn failed(ctx: &Ctx) -> anyhow::Result<()> {
    let rows: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, user_id, model, fail_reason FROM generations WHERE status = 'failed' ORDER BY id DESC LIMIT 10",
    )
    .fetch_all(ctx.deps.store.pool())
    .await?;
    let mut t = say(
        ctx.lang,
        "Последние ошибки:".into(),
        "Latest failed generations:".into(),
    );
    if rows.is_empty() {
        t.push_str(" —");
    }
    for (id, user, model, reason) in rows {
        let reason: String = reason.unwrap_or_default().chars().take(120).collect();
        let _ = write!(t, "\n#{id} · user {user} · {model} · {reason}");
    }
    ctx.show(t, Some(keyboards::admin(ctx.lang))).await
}

async fn toggle_maintenance(ctx: &Ctx) -> anyhow::Result<()> {
    let settings = ctx.deps.store.settings();
    let on = settings.get(MAINTENANCE_KEY).await?.as_deref() == Some("1");
    if on {
        settings.delete(MAINTENANCE_KEY).await?;
    } else {
        settings.set(MAINTENANCE_KEY, "1").await?;
    }
    let action = if on {
        "maintenance_off"
    } else {
        "maintenance_on"
    };
    ctx.deps
        .store
        .audit()
        .record(ctx.uid, action, None, None, "")
        .await?;
    let t = if on {
        say(
            ctx.lang,
            "Техработы выключены.".into(),
            "Maintenance mode is off.".into(),
        )
    } else {
        say(
            ctx.lang,
            "Техработы включены: пользователи видят сообщение о работах.".into(),
            "Maintenance mode is on: users see the maintenance message.".into(),
        )
    };
    ctx.show(t, Some(keyboards::admin(ctx.lang))).await
}

async fn user_card(ctx: &Ctx, user: UserId) -> anyhow::Result<()> {
    let Some(u) = ctx.deps.store.users().get(user).await? else {
        return ctx
            .send(
                say(
                    ctx.lang,
                    format!("Пользователь {user} не найден."),
                    format!("User {user} not found."),
                ),
                None,
            )
            .await;
    };
    let w = ctx.deps.store.ledger().wallet(user).await?;
    let gens = ctx
        .deps
        .store
        .generations()
        .list_for_user(user, 0, 5)
        .await?;
    let mut t = format!(
        "User {}\nrole: {}\nlanguage: {}\nblocked: {}\nbalance: {} (held {})\nreferrer: {}",
        u.id,
        u.role.as_str(),
        u.language.as_deref().unwrap_or("-"),
        u.blocked,
        texts::money(w.balance),
        texts::money(w.held),
        u.referrer.map_or_else(|| "-".to_owned(), |r| r.to_string()),
    );
    if let Some(b) = u.admin_budget {
        let _ = write!(t, "\nadmin budget: {}", texts::money(b));
    }
    for g in gens {
        let _ = write!(
            t,
            "\n#{} {} {} {}",
            g.id,
            g.model,
            g.status,
            texts::money(g.price)
        );
    }
    ctx.send(t, Some(keyboards::admin_user(ctx.lang, user, u.blocked)))
        .await
}

async fn set_blocked(ctx: &Ctx, user: UserId, blocked: bool) -> anyhow::Result<()> {
    if ctx.deps.store.users().get(user).await?.is_none() {
        return ctx
            .send(
                say(
                    ctx.lang,
                    format!("Пользователь {user} не найден."),
                    format!("User {user} not found."),
                ),
                None,
            )
            .await;
    }
    ctx.deps.store.users().set_blocked(user, blocked).await?;
    let action = if blocked { "block" } else { "unblock" };
    ctx.deps
        .store
        .audit()
        .record(ctx.uid, action, Some(user), None, "")
        .await?;
    let t = if blocked {
        say(
            ctx.lang,
            format!("Пользователь {user} заблокирован."),
            format!("User {user} is blocked."),
        )
    } else {
        say(
            ctx.lang,
            format!("Пользователь {user} разблокирован."),
            format!("User {user} is unblocked."),
        )
    };
    ctx.send(t, Some(keyboards::admin_user(ctx.lang, user, blocked)))
        .await
}

async fn adjust(ctx: &Ctx, user: UserId, amount: Money, reason: &str) -> anyhow::Result<()> {
    if ctx.deps.store.users().get(user).await?.is_none() {
        return ctx
            .send(
                say(
                    ctx.lang,
                    format!("Пользователь {user} не найден."),
                    format!("User {user} not found."),
                ),
                None,
            )
            .await;
    }
    // Keyed by the update: a redelivered command cannot apply twice.
    let key = format!("adjust:{}:{}", ctx.uid, ctx.update_id);
    match ctx
        .deps
        .store
        .ledger()
        .adjust(user, amount, &key, ctx.uid, reason)
        .await
    {
        Ok(_) => {
            let w = ctx.deps.store.ledger().wallet(user).await?;
            let a = texts::money(amount);
            let b = texts::money(w.balance);
            ctx.send(
                say(
                    ctx.lang,
                    format!("Баланс {user} изменён на {a}. Теперь: {b}."),
                    format!("Balance of {user} adjusted by {a}. Now: {b}."),
                ),
                None,
            )
            .await
        }
        Err(StoreError::InsufficientFunds { available, .. }) => {
            let a = texts::money(available);
            ctx.send(
                say(
                    ctx.lang,
                    format!("Нельзя списать больше доступного ({a})."),
                    format!("Cannot take more than is available ({a})."),
                ),
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
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
        return ctx
            .send(
                say(
                    lang,
                    "Бюджеты администраторов задаёт только владелец.".into(),
                    "Only the owner sets admin budgets.".into(),
                ),
                None,
            )
            .await;
    }
    let Some(u) = ctx.deps.store.users().get(user).await? else {
        return ctx
            .send(
                say(
                    lang,
                    format!("Пользователь {user} не найден."),
                    format!("User {user} not found."),
                ),
                None,
            )
            .await;
    };
    let is_owner = ctx.deps.owner() == Some(user) || u.role == Role::Owner;
    let is_admin = ctx.deps.admin_ids.contains(&user) || u.role == Role::Admin;
    if is_owner || !is_admin {
        return ctx
            .send(
                say(
                    lang,
                    format!("{user} — не ограниченный администратор: бюджет ему не нужен."),
                    format!("{user} is not a limited admin: a budget would not apply."),
                ),
                None,
            )
            .await;
    }
    let before = ctx
        .deps
        .store
        .users()
        .set_admin_budget_audited(user, budget, ctx.uid, reason)
        .await?;
    let show = |b: Option<Money>| b.map_or_else(|| "—".to_owned(), texts::money);
    let (now, was) = (show(budget), show(before));
    ctx.send(
        say(
            lang,
            format!("Бюджет администратора {user}: {now} (было {was})."),
            format!("Admin budget of {user}: {now} (was {was})."),
        ),
        None,
    )
    .await
}

/// Refunds a Stars payment: the ledger first (so money the wallet still
/// shows is never paid out twice), then Telegram; if Telegram refuses, the
/// debit is reversed with an audited adjustment.
async fn refund(ctx: &Ctx, charge: &str) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let store = &ctx.deps.store;
    let Some(p) = store.payments().get(charge).await? else {
        return ctx
            .send(
                say(
                    lang,
                    "Платёж не найден.".into(),
                    "Payment not found.".into(),
                ),
                None,
            )
            .await;
    };
    let applied = match store.payments().mark_refunded(charge).await {
        Ok(a) => a,
        Err(StoreError::InsufficientFunds { available, .. }) => {
            let a = texts::money(available);
            return ctx
                .send(
                    say(
                        lang,
                        format!("Пользователь уже потратил деньги: доступно {a}."),
                        format!("The user has spent the money: {a} available."),
                    ),
                    None,
                )
                .await;
        }
        Err(e) => return Err(e.into()),
    };
    if !applied.fresh {
        return ctx
            .send(
                say(
                    lang,
                    "Этот платёж уже возвращён.".into(),
                    "This payment was already refunded.".into(),
                ),
                None,
            )
            .await;
    }
    // A lost or ambiguous answer is settled by Telegram's own transaction
    // list, never guessed: only a definite refusal undoes the debit.
    match crate::stars::refund_at_telegram(&ctx.deps, p.user, charge).await {
        crate::stars::RefundOutcome::Refunded => {
            store
                .audit()
                .record(ctx.uid, "refund", Some(p.user), Some(p.amount), charge)
                .await?;
            let a = texts::money(p.amount);
            ctx.send(
                say(
                    lang,
                    format!("Возвращено {} ⭐ ({a}) пользователю {}.", p.stars, p.user),
                    format!("Refunded {} ⭐ ({a}) to user {}.", p.stars, p.user),
                ),
                None,
            )
            .await
        }
        crate::stars::RefundOutcome::Unknown(e) => {
            tracing::error!(charge, error = %e, "refund outcome unknown; the debit stands");
            ctx.send(
                say(
                    lang,
                    format!("Telegram не подтвердил возврат ({e}). Списание остаётся; сверка платежей покажет итог. Если возврата не было, верните деньги через /adjust."),
                    format!("Telegram did not confirm the refund ({e}). The debit stands; the payment reconciler will show the outcome. If no refund was made, credit the user back with /adjust."),
                ),
                None,
            )
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
            ctx.send(
                say(
                    lang,
                    format!("Telegram отказал в возврате: {e}. Списание отменено."),
                    format!("Telegram refused the refund: {e}. The debit was reversed."),
                ),
                None,
            )
            .await
        }
    }
}
