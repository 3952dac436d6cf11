//! Button presses: parsed with the codec, routed, and always answered.

use std::sync::Arc;

use kiebot_domain::UserId;
use kiebot_tg::callback::Cb;
use kiebot_tg::texts::{self, Lang};
use teloxide::prelude::*;
use teloxide::types::{CallbackQuery, MaybeInaccessibleMessage, Update};

use crate::state::{Dialogue, parse_dialogue};
use crate::wizard::{self, ChoiceValue};
use crate::{BotDeps, Ctx, MAINTENANCE_KEY, Prefetched, Press, admin, menu, payments};

/// Loads the user behind a button press; a blocked user or (for non-admins)
/// maintenance mode gets the reason as the callback's answer and stops here.
pub(crate) async fn gate(
    deps: Arc<BotDeps>,
    q: CallbackQuery,
    update: Update,
    pre: Prefetched,
) -> Option<Ctx> {
    let uid = UserId(i64::try_from(q.from.id.0).ok()?);
    let client_lang = q
        .from
        .language_code
        .as_deref()
        .map_or(Lang::En, Lang::parse);
    let (origin, chat) = match &q.message {
        Some(MaybeInaccessibleMessage::Regular(m)) => (Some(m.id), m.chat.id),
        Some(MaybeInaccessibleMessage::Inaccessible(m)) => (None, m.chat.id),
        None => (None, ChatId(uid.0)),
    };
    let answer = |text: String| {
        let deps = Arc::clone(&deps);
        let id = q.id.clone();
        async move {
            if let Err(e) = deps
                .bot
                .answer_callback_query(id)
                .text(text)
                .show_alert(true)
                .await
            {
                tracing::warn!(error = %e, "answerCallbackQuery failed");
            }
        }
    };
    // A read first: every press comes from a user the bot has almost always
    // seen, and `ensure` is a write transaction (on SQLite, the one write
    // lock) that would serialise all presses.
    let loaded = match pre.user_with_dialogue(&deps, uid).await {
        Ok(Some((u, raw))) => Ok((u, parse_dialogue(uid, raw.as_deref()))),
        Ok(None) => deps
            .store
            .users()
            .ensure(uid)
            .await
            .map(|u| (u, Dialogue::Idle)),
        Err(e) => Err(e),
    };
    let (user, dialogue) = match loaded {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(user = %uid, error = %e, "cannot load user");
            answer(texts::internal_error(client_lang)).await;
            return None;
        }
    };
    let lang = user.language.as_deref().map_or(client_lang, Lang::parse);
    let ctx = Ctx {
        deps: Arc::clone(&deps),
        uid,
        lang,
        chat,
        update_id: i64::from(update.id.0),
        origin,
        first_contact: false,
        user,
        dialogue: Arc::new(std::sync::Mutex::new(dialogue)),
        press: Some(Arc::new(Press::new(q.id.clone()))),
    };
    if ctx.user.blocked && !ctx.is_admin() {
        answer(texts::blocked(lang)).await;
        return None;
    }
    if !ctx.is_admin() && maintenance(&deps).await {
        answer(texts::maintenance(lang)).await;
        return None;
    }
    Some(ctx)
}

/// Whether maintenance mode is on. Read on every update, so a value read
/// up to [`MAINTENANCE_RECHECK`] ago is good enough: this process sees its
/// own admin's switch at once, other front processes within that time.
pub(crate) async fn maintenance(deps: &BotDeps) -> bool {
    matches!(
        deps.store.settings().get_recent(MAINTENANCE_KEY, MAINTENANCE_RECHECK).await,
        Ok(Some(v)) if v == "1"
    )
}

/// How stale the maintenance flag may be when an update is gated.
const MAINTENANCE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Routes a press and answers it: silently when it did something, with a
/// friendly note when the button is stale, unknown or forged.
pub(crate) async fn handle(ctx: Ctx, q: CallbackQuery) -> anyhow::Result<()> {
    let data = q.data.as_deref().unwrap_or("");
    let outcome = match Cb::parse(data) {
        Some(cb) => route(&ctx, cb).await,
        None => {
            tracing::info!(user = %ctx.uid, len = data.len(), "unknown callback data");
            Ok(false)
        }
    };
    // The handler answered as soon as its reply was out.
    if ctx.press.as_ref().is_some_and(|p| !p.claim()) {
        return outcome.map(|_| ());
    }
    let req = ctx.deps.bot.answer_callback_query(q.id.clone());
    let result = match &outcome {
        Ok(true) => req.await,
        Ok(false) => req.text(texts::stale_button(ctx.lang)).await,
        Err(_) => req.text(texts::internal_error(ctx.lang)).await,
    };
    if let Err(e) = result {
        tracing::warn!(user = %ctx.uid, error = %e, "answerCallbackQuery failed");
    }
    outcome.map(|_| ())
}

/// `Ok(false)`: the button no longer applies (stale).
async fn route(ctx: &Ctx, cb: Cb) -> anyhow::Result<bool> {
    let catalog = &ctx.deps.catalog;
    match cb {
        Cb::Noop => {}
        Cb::Menu | Cb::Cancel => {
            ctx.set_dialogue(&Dialogue::Idle).await?;
            menu::main_menu(ctx).await?;
        }
        Cb::Help => menu::help(ctx).await?,
        Cb::Balance => menu::balance(ctx).await?,
        Cb::Languages => menu::languages(ctx).await?,
        Cb::Lang(l) => menu::set_language(ctx, l).await?,
        Cb::History(p) => menu::history(ctx, p).await?,
        Cb::Resend(g) => return menu::resend(ctx, g).await,
        Cb::Repeat(g) => return menu::repeat(ctx, g).await,
        Cb::Type(t) => {
            if catalog.sold_of_type(t).next().is_none() {
                return Ok(false);
            }
            menu::models_of(ctx, t).await?;
        }
        Cb::Model(id) => match catalog.get(id.as_str()).filter(|m| m.is_sold()) {
            Some(m) => menu::card(ctx, m).await?,
            None => return Ok(false),
        },
        Cb::Start(id) => match catalog.get(id.as_str()).filter(|m| m.is_sold()) {
            Some(m) => wizard::start(ctx, m, None).await?,
            None => return Ok(false),
        },
        Cb::Pick {
            draft,
            field,
            value,
        } => {
            let Some((d, m)) = wizard::draft_for(ctx, draft).await? else {
                return Ok(false);
            };
            return wizard::on_choice(ctx, d, &m, usize::from(field), ChoiceValue::Index(value))
                .await;
        }
        Cb::YesNo { draft, value } => {
            let Some((d, m)) = wizard::draft_for(ctx, draft).await? else {
                return Ok(false);
            };
            let Some(idx) = wizard::current_index(&m, &d) else {
                return Ok(false);
            };
            return wizard::on_choice(ctx, d, &m, idx, ChoiceValue::Bool(value)).await;
        }
        Cb::Skip(draft) => {
            let Some((d, m)) = wizard::draft_for(ctx, draft).await? else {
                return Ok(false);
            };
            return wizard::on_skip(ctx, d, &m).await;
        }
        Cb::Done(draft) => {
            let Some((d, m)) = wizard::draft_for(ctx, draft).await? else {
                return Ok(false);
            };
            return wizard::on_done(ctx, d, &m).await;
        }
        Cb::Back(draft) => {
            let Some((d, m)) = wizard::draft_for(ctx, draft).await? else {
                return Ok(false);
            };
            return wizard::on_back(ctx, d, &m).await;
        }
        Cb::Advanced(draft) => {
            let Some((d, m)) = wizard::draft_for(ctx, draft).await? else {
                return Ok(false);
            };
            return wizard::on_advanced(ctx, d, &m).await;
        }
        Cb::Confirm(draft) => match ctx.dialogue() {
            Dialogue::Wizard(d) if d.id == draft => {
                let Some(m) = catalog
                    .get(d.model.as_str())
                    .filter(|m| m.is_sold())
                    .cloned()
                else {
                    return Ok(false);
                };
                wizard::on_confirm(ctx, &m, &d).await?;
            }
            Dialogue::Confirmed {
                draft: done,
                generation,
            } if done == draft => {
                wizard::already(ctx, generation).await?;
            }
            _ => return Ok(false),
        },
        Cb::TopUp => payments::topup(ctx).await?,
        Cb::Stars(n) => {
            if !payments::STAR_PRESETS.contains(&n) {
                return Ok(false);
            }
            payments::invoice(ctx, n).await?;
        }
        Cb::StarsCustom => payments::ask_custom(ctx).await?,
        Cb::Admin(a) => {
            if !ctx.is_admin() {
                ctx.send(texts::admin_only(ctx.lang), None).await?;
                return Ok(true);
            }
            return admin::on_button(ctx, a).await;
        }
    }
    Ok(true)
}
