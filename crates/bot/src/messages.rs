//! Messages: commands, typed answers and files.

use std::sync::Arc;

use kiebot_domain::UserId;
use kiebot_tg::keyboards;
use kiebot_tg::texts::{self, Lang, Refusal};
use teloxide::prelude::*;
use teloxide::types::Update;

use crate::commands::{Access, Command};
use crate::state::{Dialogue, parse_dialogue};
use crate::wizard::{self, IncomingFile};
use crate::{BotDeps, Ctx, Prefetched, admin, callbacks, menu, payments};

/// Loads (or creates) the sender; private chats only. A blocked user or
/// (for non-admins) maintenance mode is told so and stops here.
pub(crate) async fn gate(
    deps: Arc<BotDeps>,
    msg: Message,
    update: Update,
    pre: Prefetched,
) -> Option<Ctx> {
    if !msg.chat.is_private() {
        return None;
    }
    let from = msg.from.as_ref()?;
    let uid = UserId(i64::try_from(from.id.0).ok()?);
    let client_lang = from.language_code.as_deref().map_or(Lang::En, Lang::parse);
    let loaded = async {
        Ok::<_, kiebot_store::StoreError>(match pre.user_with_dialogue(&deps, uid).await? {
            Some((user, raw)) => (user, parse_dialogue(uid, raw.as_deref()), false),
            None => (deps.store.users().ensure(uid).await?, Dialogue::Idle, true),
        })
    }
    .await;
    let (user, dialogue, first_contact) = match loaded {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(user = %uid, error = %e, "cannot load user");
            let _ = deps
                .bot
                .send_message(msg.chat.id, texts::internal_error(client_lang))
                .await;
            return None;
        }
    };
    let lang = user.language.as_deref().map_or(client_lang, Lang::parse);
    let ctx = Ctx {
        deps: Arc::clone(&deps),
        uid,
        lang,
        chat: msg.chat.id,
        update_id: i64::from(update.id.0),
        origin: None,
        first_contact,
        user,
        dialogue: Arc::new(std::sync::Mutex::new(dialogue)),
        press: None,
    };
    let refuse = |text: String| async {
        if let Err(e) = ctx.send(text, None).await {
            tracing::warn!(error = %e, "refusal not sent");
        }
    };
    if ctx.user.blocked && !ctx.is_admin() {
        refuse(texts::blocked(lang)).await;
        return None;
    }
    if !ctx.is_admin() && callbacks::maintenance(&deps).await {
        refuse(texts::maintenance(lang)).await;
        return None;
    }
    Some(ctx)
}

/// Routes a message.
pub(crate) async fn handle(ctx: Ctx, msg: Message) -> anyhow::Result<()> {
    if let Some(text) = msg.text() {
        if let Some(cmd) = text.strip_prefix('/') {
            return command(&ctx, cmd).await;
        }
        return match ctx.dialogue() {
            Dialogue::Wizard(d) => match ctx
                .deps
                .catalog
                .get(d.model.as_str())
                .filter(|m| m.is_sold())
                .cloned()
            {
                Some(m) => wizard::on_text(&ctx, d, &m, text).await,
                None => not_understood(&ctx).await,
            },
            Dialogue::StarsAmount => payments::custom_amount(&ctx, text).await,
            _ => not_understood(&ctx).await,
        };
    }
    if let Some(file) = incoming_file(&msg) {
        return match ctx.dialogue() {
            Dialogue::Wizard(d) => match ctx
                .deps
                .catalog
                .get(d.model.as_str())
                .filter(|m| m.is_sold())
                .cloned()
            {
                Some(m) => wizard::on_file(&ctx, d, &m, file).await,
                None => not_understood(&ctx).await,
            },
            _ => not_understood(&ctx).await,
        };
    }
    // Stickers, locations...: in a wizard, say what is expected.
    match ctx.dialogue() {
        Dialogue::Wizard(_) => {
            ctx.send(texts::refusal(ctx.lang, &Refusal::UseButtons), None)
                .await
        }
        _ => not_understood(&ctx).await,
    }
}

async fn not_understood(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.send(
        texts::not_understood(ctx.lang),
        Some(keyboards::home(ctx.lang)),
    )
    .await
}

/// What Telegram says about a file, before anything is downloaded.
fn incoming_file(msg: &Message) -> Option<IncomingFile> {
    let mk = |meta: &teloxide::types::FileMeta,
              mime: Option<String>,
              default_mime: &str,
              name: Option<&String>| IncomingFile {
        file_id: meta.id.clone(),
        unique_id: meta.unique_id.0.clone(),
        size: u64::from(meta.size),
        mime: mime.unwrap_or_else(|| default_mime.to_owned()),
        name: name.cloned().unwrap_or_default(),
    };
    if let Some(sizes) = msg.photo() {
        // Telegram re-encodes photos as JPEG; the largest size is last.
        let p = sizes.last()?;
        return Some(mk(&p.file, None, "image/jpeg", None));
    }
    if let Some(d) = msg.document() {
        let mime = d.mime_type.as_ref().map(|m| m.essence_str().to_owned());
        return Some(mk(
            &d.file,
            mime,
            "application/octet-stream",
            d.file_name.as_ref(),
        ));
    }
    if let Some(a) = msg.audio() {
        let mime = a.mime_type.as_ref().map(|m| m.essence_str().to_owned());
        return Some(mk(&a.file, mime, "audio/mpeg", a.file_name.as_ref()));
    }
    if let Some(v) = msg.voice() {
        let mime = v.mime_type.as_ref().map(|m| m.essence_str().to_owned());
        return Some(mk(&v.file, mime, "audio/ogg", None));
    }
    if let Some(v) = msg.video() {
        let mime = v.mime_type.as_ref().map(|m| m.essence_str().to_owned());
        return Some(mk(&v.file, mime, "video/mp4", v.file_name.as_ref()));
    }
    None
}

/// `/name args` (see [`Command::parse`]).
async fn command(ctx: &Ctx, text: &str) -> anyhow::Result<()> {
    let Some((cmd, args)) = Command::parse(text) else {
        return not_understood(ctx).await;
    };
    let arg = (!args.is_empty()).then_some(args);
    match cmd.access() {
        Access::Anyone => {}
        Access::Staff(_) if ctx.is_admin() => return admin::command(ctx, cmd, args).await,
        Access::Staff(_) => return ctx.send(texts::admin_only(ctx.lang), None).await,
    }
    match cmd {
        Command::Start => menu::start(ctx, arg, ctx.first_contact).await,
        Command::Menu => {
            ctx.set_dialogue(&Dialogue::Idle).await?;
            menu::main_menu(ctx).await
        }
        Command::Balance => menu::balance(ctx).await,
        Command::History => menu::history(ctx, 0).await,
        Command::Help => menu::help(ctx).await,
        Command::Language => menu::languages(ctx).await,
        Command::Cancel => {
            ctx.set_dialogue(&Dialogue::Idle).await?;
            ctx.send(texts::cancelled(ctx.lang), Some(keyboards::home(ctx.lang)))
                .await
        }
        Command::Promo => payments::promo(ctx, arg).await,
        // Staff commands went to the admin module above.
        _ => not_understood(ctx).await,
    }
}
