//! Menus: /start, the main menu, model lists and cards, balance, history,
//! help and language.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kiebot_domain::catalog::default_price;
use kiebot_domain::{
    GenerationId, GenerationStatus, GenerationType, Model, OutputKind, ParamValue, UserId,
};
use kiebot_tg::delivery::{self, DeliveryOptions};
use kiebot_tg::keyboards;
use kiebot_tg::texts::{self, Lang};
use teloxide::prelude::*;

use crate::Ctx;
use crate::state::Dialogue;
use crate::wizard;

/// History entries per page.
pub const HISTORY_PAGE: u32 = 5;

/// /start: the language picker on first contact (a `ref_<id>` deep link
/// records the inviter), the main menu otherwise. Clears any dialogue.
pub(crate) async fn start(
    ctx: &Ctx,
    payload: Option<&str>,
    first_contact: bool,
) -> anyhow::Result<()> {
    ctx.set_dialogue(&Dialogue::Idle).await?;
    if first_contact
        && let Some(inviter) = payload
            .and_then(|p| p.strip_prefix("ref_"))
            .and_then(|id| id.parse::<i64>().ok())
    {
        let recorded = ctx
            .deps
            .store
            .referrals()
            .record(ctx.uid, UserId(inviter))
            .await?;
        tracing::info!(user = %ctx.uid, inviter, recorded, "referral link");
    }
    if ctx.user.language.is_none() {
        return ctx
            .send(texts::choose_language(), Some(keyboards::languages()))
            .await;
    }
    main_menu(ctx).await
}

/// The main menu.
pub(crate) async fn main_menu(ctx: &Ctx) -> anyhow::Result<()> {
    let wallet = ctx.deps.store.ledger().wallet(ctx.uid).await?;
    let held = ctx.held_models().await;
    let types: Vec<(GenerationType, usize)> = GenerationType::ALL
        .into_iter()
        .map(|t| {
            let n = ctx
                .deps
                .catalog
                .sold_of_type(t)
                .filter(|m| !held.contains_key(m.id.as_str()))
                .count();
            (t, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    ctx.show(
        texts::main_menu(ctx.lang, wallet.available()),
        Some(keyboards::main_menu(ctx.lang, &types)),
    )
    .await
}

/// The models of a type with the price of their defaults.
pub(crate) async fn models_of(ctx: &Ctx, t: GenerationType) -> anyhow::Result<()> {
    let code = ctx.lang.code();
    let held = ctx.held_models().await;
    let models: Vec<_> = ctx
        .deps
        .catalog
        .sold_of_type(t)
        .filter(|m| !held.contains_key(m.id.as_str()))
        .filter_map(|m| {
            default_price(m, &ctx.deps.pricing)
                .map(|p| (m.id.clone(), m.name.get(code).to_owned(), p))
        })
        .collect();
    ctx.show(
        texts::choose_model(ctx.lang, t),
        Some(keyboards::model_list(ctx.lang, &models)),
    )
    .await
}

/// A model's card.
pub(crate) async fn card(ctx: &Ctx, model: &Model) -> anyhow::Result<()> {
    let code = ctx.lang.code();
    if ctx.off_sale(&model.id).await {
        return ctx.show_off_sale().await;
    }
    let Some(price) = default_price(model, &ctx.deps.pricing).filter(|_| model.is_sold()) else {
        return ctx
            .show(
                texts::model_unavailable(ctx.lang),
                Some(keyboards::home(ctx.lang)),
            )
            .await;
    };
    let free_left = if model.free_daily > 0 {
        let used = ctx
            .deps
            .store
            .free_usage()
            .used_today(ctx.uid, &model.id, &wizard::today())
            .await?;
        Some(model.free_daily.saturating_sub(used))
    } else {
        None
    };
    ctx.show(
        texts::model_card(
            ctx.lang,
            model.name.get(code),
            model.description.get(code),
            price,
            free_left,
        ),
        Some(keyboards::model_card(
            ctx.lang,
            &model.id,
            model.types.first().copied(),
        )),
    )
    .await
}

/// The balance.
pub(crate) async fn balance(ctx: &Ctx) -> anyhow::Result<()> {
    let w = ctx.deps.store.ledger().wallet(ctx.uid).await?;
    ctx.show(
        texts::balance(ctx.lang, w.balance, w.held),
        Some(keyboards::balance(ctx.lang)),
    )
    .await
}

/// Help.
pub(crate) async fn help(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.show(texts::help(ctx.lang), Some(keyboards::home(ctx.lang)))
        .await
}

/// The language picker.
pub(crate) async fn languages(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.show(texts::choose_language(), Some(keyboards::languages()))
        .await
}

/// A language was chosen: saved, then the main menu in it.
pub(crate) async fn set_language(ctx: &Ctx, lang: Lang) -> anyhow::Result<()> {
    ctx.deps
        .store
        .users()
        .set_language(ctx.uid, lang.code())
        .await?;
    let mut ctx = ctx.clone();
    ctx.lang = lang;
    ctx.user.language = Some(lang.code().to_owned());
    main_menu(&ctx).await
}

/// A page of the history.
pub(crate) async fn history(ctx: &Ctx, page: u32) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let offset = page.saturating_mul(HISTORY_PAGE);
    let mut rows = ctx
        .deps
        .store
        .generations()
        .list_for_user(ctx.uid, offset, HISTORY_PAGE + 1)
        .await?;
    let has_more = rows.len() > HISTORY_PAGE as usize;
    rows.truncate(HISTORY_PAGE as usize);
    let lines: Vec<String> = rows
        .iter()
        .map(|g| {
            let name = ctx.deps.catalog.get(g.model.as_str()).map_or_else(
                || g.model.to_string(),
                |m| m.name.get(lang.code()).to_owned(),
            );
            texts::history_line(lang, g.id, &name, g.status, g.price)
        })
        .collect();
    let items: Vec<(GenerationId, bool)> = rows
        .iter()
        .map(|g| {
            (
                g.id,
                g.status == GenerationStatus::Delivered && has_file_ids(g.file_ids.as_deref()),
            )
        })
        .collect();
    ctx.show(
        texts::history(lang, page, &lines),
        Some(keyboards::history(lang, &items, page, has_more)),
    )
    .await
}

fn has_file_ids(json: Option<&str>) -> bool {
    file_ids(json).is_some_and(|v| !v.is_empty())
}

fn file_ids(json: Option<&str>) -> Option<Vec<String>> {
    json.and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
}

/// Sends a delivered result again by its Telegram file ids.
pub(crate) async fn resend(ctx: &Ctx, id: GenerationId) -> anyhow::Result<bool> {
    let Some(g) = ctx.deps.store.generations().get(id).await? else {
        return Ok(false);
    };
    if g.user != ctx.uid {
        return Ok(false);
    }
    if !send_result(ctx, &g, ctx.chat, ctx.lang).await? {
        ctx.send(
            texts::nothing_to_resend(ctx.lang),
            Some(keyboards::home(ctx.lang)),
        )
        .await?;
    }
    Ok(true)
}

/// Sends the generation's delivered files again to `chat` (its owner's, or
/// the admin's own for support's `/resend`) by their Telegram file ids,
/// through the delivery path: every message waits on the limiter shared
/// with the workers, and a 429 is waited out there. `false`: it has none.
pub(crate) async fn send_result(
    ctx: &Ctx,
    g: &kiebot_store::Generation,
    chat: ChatId,
    lang: Lang,
) -> anyhow::Result<bool> {
    let ids = file_ids(g.file_ids.as_deref()).unwrap_or_default();
    if ids.is_empty() {
        return Ok(false);
    }
    let output = ctx
        .deps
        .catalog
        .get(g.model.as_str())
        .map_or(OutputKind::Image, |m| m.output);
    let keyboard = texts::result_keyboard(lang, g.id);
    delivery::resend_files(
        &ctx.deps.bot,
        ctx.deps.limiter.as_ref(),
        chat,
        output.into(),
        &ids,
        Some(&keyboard),
        &DeliveryOptions::default(),
    )
    .await
    .with_context(|| format!("resending generation {}", g.id))?;
    Ok(true)
}

/// Repeat: the wizard of the same model, pre-filled with the same
/// parameters, opened at its confirm screen.
pub(crate) async fn repeat(ctx: &Ctx, id: GenerationId) -> anyhow::Result<bool> {
    let Some(g) = ctx.deps.store.generations().get(id).await? else {
        return Ok(false);
    };
    if g.user != ctx.uid {
        return Ok(false);
    }
    let Some(model) = ctx.deps.catalog.get(g.model.as_str()).cloned() else {
        ctx.show(
            texts::model_unavailable(ctx.lang),
            Some(keyboards::home(ctx.lang)),
        )
        .await?;
        return Ok(true);
    };
    let values: BTreeMap<String, ParamValue> =
        serde_json::from_str(&g.params_json).unwrap_or_default();
    // Only fields the model still has; files only while KIE still keeps
    // them (the wizard asks for them again otherwise).
    let uploads_kept = kiebot_store::now_ms() - g.created_at < wizard::REUPLOAD_AFTER_MS;
    let values = values
        .into_iter()
        .filter(|(k, v)| {
            model.field(k).is_some() && (uploads_kept || !matches!(v, ParamValue::Files(_)))
        })
        .collect();
    wizard::start(ctx, &model, Some(values)).await?;
    Ok(true)
}
