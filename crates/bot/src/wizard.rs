//! The generation wizard, built only from the catalog schema.
//!
//! Steps are the model's `ask = wizard` fields in catalog order; "advanced
//! options" appends the `ask = advanced` ones. Each step's input follows the
//! field's type: enum -> buttons, boolean -> yes/no, string -> text with its
//! maximum length, integer/number -> typed with its range, upload -> files
//! with add-more/done. Back returns to the previous step with its value kept
//! (and shown); optional fields and fields with a default can be left at the
//! default. After the last step comes the confirm screen with the exact
//! price; instant models skip it. The draft keeps the price and funding the
//! screen showed, and Confirm charges nothing else: if they changed, the
//! screen comes back with the new price under a new draft id.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use kiebot_domain::catalog::{Ask as FieldAsk, Media};
use kiebot_domain::{
    Field, FieldKind, GenerationId, Model, Money, ParamError, ParamValue, Params, PromptError,
};
use kiebot_jobs::Job;
use kiebot_store::{Creation, DialogueAfter, Funding, NewGeneration, StoreError};
use kiebot_tg::callback::{Cb, DraftId};
use kiebot_tg::keyboards::{self, StepNav};
use kiebot_tg::texts::{self, Ask, Button, Lang, PriceNote, Refusal};
use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::{FileId, InlineKeyboardMarkup};

use crate::state::{Dialogue, Draft, Quote, Upload};
use crate::{Ctx, DIALOGUE_TTL};

/// Telegram lets bots download files up to this size through `getFile`.
pub const TELEGRAM_GET_FILE_LIMIT: u64 = 20 * 1024 * 1024;

/// A file a user sent, as Telegram describes it (nothing downloaded yet).
#[derive(Debug, Clone)]
pub(crate) struct IncomingFile {
    pub file_id: FileId,
    pub unique_id: String,
    pub size: u64,
    pub mime: String,
    pub name: String,
}

/// Starts the wizard for a model, optionally pre-filled (Repeat).
pub(crate) async fn start(
    ctx: &Ctx,
    model: &Model,
    prefill: Option<BTreeMap<String, ParamValue>>,
) -> anyhow::Result<()> {
    if !model.is_sold() {
        return ctx
            .show(
                texts::model_unavailable(ctx.lang),
                Some(keyboards::home(ctx.lang)),
            )
            .await;
    }
    if ctx.off_sale(&model.id).await {
        return ctx.show_off_sale().await;
    }
    let mut steps: Vec<String> = model.wizard_fields().map(|f| f.name.clone()).collect();
    let mut values = BTreeMap::new();
    let mut advanced = false;
    let prefilled = prefill.is_some();
    if let Some(pre) = prefill {
        for f in &model.fields {
            let Some(v) = pre.get(&f.name) else { continue };
            // Values equal to the default need not be carried; others are,
            // and an advanced field with a value opens the advanced steps.
            if f.default_value().as_ref() == Some(v) {
                continue;
            }
            values.insert(f.name.clone(), v.clone());
            if f.ask() == FieldAsk::Advanced {
                advanced = true;
            }
        }
        if advanced {
            steps.extend(advanced_fields(model).map(|f| f.name.clone()));
        }
    }
    // A prefilled draft opens at its first step still to be answered (an
    // upload too old to reuse), else at the confirm screen.
    let pos = if prefilled {
        steps
            .iter()
            .position(|name| {
                model.field(name).is_some_and(|f| {
                    f.required && f.default.is_none() && !values.contains_key(name)
                })
            })
            .unwrap_or(steps.len())
    } else {
        0
    };
    let draft = Draft {
        id: DraftId(rand::random()),
        model: model.id.clone(),
        values,
        pos,
        steps,
        advanced,
        quote: None,
        uploads: BTreeMap::new(),
    };
    after_change(ctx, model, draft, None).await
}

fn advanced_fields(model: &Model) -> impl Iterator<Item = &Field> {
    model
        .fields
        .iter()
        .filter(|f| f.ask() == FieldAsk::Advanced)
}

/// Saves the draft and shows where it stands; at the end, an instant model
/// is confirmed at once. `prefix` is a line shown above the step (a file
/// received).
async fn after_change(
    ctx: &Ctx,
    model: &Model,
    draft: Draft,
    prefix: Option<String>,
) -> anyhow::Result<()> {
    if draft.pos >= draft.steps.len() {
        if model.instant {
            ctx.set_dialogue(&Dialogue::Wizard(draft.clone())).await?;
            return confirm(ctx, model, &draft, Trigger::Instant).await;
        }
        return show_confirm(ctx, model, draft, prefix).await;
    }
    ctx.set_dialogue(&Dialogue::Wizard(draft.clone())).await?;
    let (text, kb) = step_screen(ctx.lang, model, &draft);
    ctx.show(with_prefix(prefix, text), Some(kb)).await
}

/// Shows the confirm screen, saving first the draft with the quote the
/// screen states, so that a press as fast as the screen finds it.
async fn show_confirm(
    ctx: &Ctx,
    model: &Model,
    mut draft: Draft,
    prefix: Option<String>,
) -> anyhow::Result<()> {
    let (text, kb) = confirm_screen(ctx, model, &mut draft).await?;
    ctx.set_dialogue(&Dialogue::Wizard(draft)).await?;
    ctx.show(with_prefix(prefix, text), Some(kb)).await
}

fn with_prefix(prefix: Option<String>, text: String) -> String {
    match prefix {
        Some(p) => format!("{p}\n\n{text}"),
        None => text,
    }
}

fn label(lang: Lang, f: &Field) -> String {
    match &f.label {
        Some(l) => l.get(lang.code()).to_owned(),
        None => {
            let mut s = f.name.replace('_', " ");
            if let Some(c) = s.get(..1) {
                let up = c.to_uppercase();
                s.replace_range(..1, &up);
            }
            s
        }
    }
}

fn display(lang: Lang, v: &ParamValue) -> String {
    match v {
        ParamValue::Text(s) => {
            let short: String = s.chars().take(60).collect();
            if short.len() < s.len() {
                format!("{short}…")
            } else {
                short
            }
        }
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Num(x) => x.to_string(),
        ParamValue::Bool(b) => {
            texts::button(lang, if *b { Button::Yes } else { Button::No }).to_owned()
        }
        ParamValue::Choice(c) => c.clone(),
        ParamValue::Files(f) => texts::files_value(lang, f.len()),
    }
}

fn skippable(f: &Field) -> bool {
    !f.required || f.default.is_some()
}

fn file_count(draft: &Draft, f: &Field) -> usize {
    match draft.values.get(&f.name) {
        Some(ParamValue::Files(v)) => v.len(),
        _ => 0,
    }
}

fn current_field<'m>(model: &'m Model, draft: &Draft) -> Option<(usize, &'m Field)> {
    let name = draft.steps.get(draft.pos)?;
    model
        .fields
        .iter()
        .enumerate()
        .find(|(_, f)| &f.name == name)
}

fn step_screen(lang: Lang, model: &Model, draft: &Draft) -> (String, InlineKeyboardMarkup) {
    let Some((idx, f)) = current_field(model, draft) else {
        return (texts::stale_button(lang), keyboards::home(lang));
    };
    let current = draft.values.get(&f.name);
    let chosen = current.cloned().or_else(|| f.default_value());
    let mark = |on: bool, l: &str| if on { format!("✓ {l}") } else { l.to_owned() };
    let mut choices = vec![];
    let mut nav = StepNav {
        skip: f.default.is_some(),
        skip_empty: !f.required && f.default.is_none(),
        done: false,
        back: draft.pos > 0,
    };
    let media_name;
    let ask = match &f.kind {
        FieldKind::String { max_len } => Ask::Text { max_len: *max_len },
        FieldKind::Integer { min, max } => Ask::Integer {
            min: *min,
            max: *max,
        },
        FieldKind::Number { min, max, .. } => Ask::Number {
            min: *min,
            max: *max,
        },
        FieldKind::Boolean => {
            for (value, b) in [(true, Button::Yes), (false, Button::No)] {
                let on = chosen == Some(ParamValue::Bool(value));
                choices.push((
                    mark(on, texts::button(lang, b)),
                    Cb::YesNo {
                        draft: draft.id,
                        value,
                    },
                ));
            }
            Ask::YesNo
        }
        FieldKind::Enum { values, .. } => {
            for (i, v) in values.iter().enumerate() {
                let on = chosen == Some(ParamValue::Choice(v.clone()));
                choices.push((
                    mark(on, v),
                    Cb::Pick {
                        draft: draft.id,
                        field: u8::try_from(idx).unwrap_or(u8::MAX),
                        value: u8::try_from(i).unwrap_or(u8::MAX),
                    },
                ));
            }
            Ask::Choice
        }
        FieldKind::Upload {
            media,
            min_items,
            max_items,
            ..
        } => {
            let count = file_count(draft, f);
            nav.done = count > 0 && count >= *min_items;
            media_name = match media {
                Media::Image => "image",
                Media::Video => "video",
                Media::Audio => "audio",
            };
            Ask::Upload {
                media: media_name,
                count,
                min: (*min_items).max(usize::from(f.required)),
                max: *max_items,
            }
        }
    };
    let current_text = match (&f.kind, current) {
        // Enum and boolean show their choice as a check mark instead.
        (FieldKind::Enum { .. } | FieldKind::Boolean | FieldKind::Upload { .. }, _) => None,
        (_, Some(v)) => Some(display(lang, v)),
        (_, None) => f
            .default_value()
            .filter(|v| !matches!(v, ParamValue::Text(t) if t.trim().is_empty()))
            .map(|v| display(lang, &v)),
    };
    let text = texts::ask_step(
        lang,
        draft.pos + 1,
        draft.steps.len(),
        &label(lang, f),
        &ask,
        current_text.as_deref(),
        !f.required,
    );
    (text, keyboards::wizard_step(lang, draft.id, choices, nav))
}

/// What confirming a draft costs whom, and how the screen explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Priced {
    /// The price and funding.
    quote: Quote,
    /// Why it differs from the model's price.
    note: PriceNote,
}

impl Priced {
    fn new(price: Money, note: PriceNote, funding: Funding) -> Self {
        Priced {
            quote: Quote { price, funding },
            note,
        }
    }
}

/// The user's price for validated parameters, and why it differs from the
/// model's price: the funding policy ([`kiebot_domain::funding::decide`])
/// applied to this user, with today's free uses read when the model has any.
async fn decide_price(
    ctx: &Ctx,
    model: &Model,
    params: &Params,
) -> anyhow::Result<Result<Priced, String>> {
    use kiebot_domain::funding::{self, Buyer, FreeBecause, FreeUses};
    let base = match ctx.deps.pricing.price(model, params) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let buyer = Buyer {
        dry_run: ctx.deps.dry_run,
        owner: ctx.is_owner(),
        admin_budget: if ctx.is_admin() {
            ctx.user.admin_budget
        } else {
            None
        },
    };
    let day = today();
    let mut free = FreeUses {
        daily: model.free_daily,
        used: 0,
    };
    // Read only when a free use could be what pays.
    if free.daily > 0 && !buyer.dry_run && !buyer.owner && base.is_positive() {
        free.used = ctx
            .deps
            .store
            .free_usage()
            .used_today(ctx.uid, &model.id, &day)
            .await?;
    }
    let priced = match funding::decide(base, buyer, free) {
        funding::Funding::Free(why) => {
            let note = match why {
                FreeBecause::DryRun => PriceNote::DryRun,
                FreeBecause::Owner => PriceNote::Owner,
                FreeBecause::ZeroPrice => PriceNote::None,
            };
            Priced::new(Money::ZERO, note, Funding::Wallet)
        }
        funding::Funding::FreeUse { limit } => Priced::new(
            Money::ZERO,
            PriceNote::FreeQuota,
            Funding::FreeQuota { day, limit },
        ),
        funding::Funding::AdminBudget { amount, left } => Priced::new(
            Money::ZERO,
            PriceNote::AdminBudget { left },
            Funding::AdminBudget { amount },
        ),
        funding::Funding::Wallet { price } => Priced::new(price, PriceNote::None, Funding::Wallet),
    };
    Ok(Ok(priced))
}

/// Free quotas count days in the server's local time zone.
pub(crate) fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

/// The confirm screen. Records on `draft` the quote it states; a quote
/// different from one shown before under the draft's id moves the draft to
/// a new id, so the older screen's button no longer confirms.
async fn confirm_screen(
    ctx: &Ctx,
    model: &Model,
    draft: &mut Draft,
) -> anyhow::Result<(String, InlineKeyboardMarkup)> {
    let lang = ctx.lang;
    let back = !draft.steps.is_empty();
    let params = match Params::validate(model, &draft.values) {
        Ok(p) => p,
        Err(e) => {
            return Ok((
                texts::refusal(lang, &refusal_of(&e)),
                keyboards::wizard_step(
                    lang,
                    draft.id,
                    vec![],
                    StepNav {
                        back,
                        ..StepNav::default()
                    },
                ),
            ));
        }
    };
    let priced = match decide_price(ctx, model, &params).await? {
        Ok(x) => x,
        Err(why) => {
            return Ok((
                texts::refusal(lang, &Refusal::Invalid(why)),
                keyboards::wizard_step(
                    lang,
                    draft.id,
                    vec![],
                    StepNav {
                        back,
                        ..StepNav::default()
                    },
                ),
            ));
        }
    };
    if draft.quote.as_ref().is_some_and(|q| *q != priced.quote) {
        draft.id = DraftId(rand::random());
    }
    draft.quote = Some(priced.quote.clone());
    let summary: Vec<(String, String)> = model
        .fields
        .iter()
        .filter(|f| draft.steps.contains(&f.name))
        .filter_map(|f| {
            params
                .get(&f.name)
                .map(|v| (label(lang, f), display(lang, v)))
        })
        .collect();
    let has_advanced = !draft.advanced && advanced_fields(model).next().is_some();
    Ok((
        texts::confirm(
            lang,
            model.name.get(lang.code()),
            &summary,
            priced.quote.shown(),
            priced.note,
        ),
        keyboards::confirm(lang, draft.id, has_advanced, back),
    ))
}

/// Maps a validation error to what the user reads.
pub(crate) fn refusal_of(e: &ParamError) -> Refusal {
    match e {
        ParamError::Text { source, .. } => match source {
            PromptError::Empty => Refusal::Empty,
            PromptError::TooLong { len, max } => Refusal::TooLong {
                len: *len,
                max: *max,
            },
            PromptError::ControlCharacters => Refusal::ControlChars,
        },
        ParamError::WrongType { .. } => Refusal::NotANumber,
        ParamError::OutOfRange { min, max, .. } => Refusal::OutOfRange {
            min: min.clone(),
            max: max.clone(),
        },
        ParamError::NotInEnum { .. } => Refusal::NotAnOption,
        ParamError::Mime { mime, .. } => Refusal::WrongFileType { mime: mime.clone() },
        ParamError::TooLarge { size, max, .. } => Refusal::TooLarge {
            mb: size.div_ceil(1024 * 1024),
            max_mb: max / (1024 * 1024),
        },
        ParamError::ItemCount { min, .. } => Refusal::NeedMoreFiles { min: *min },
        ParamError::Excluded { reason, reason_ru } => Refusal::Combination {
            en: reason.clone(),
            ru: reason_ru.clone(),
        },
        other => Refusal::Invalid(other.to_string()),
    }
}

/// Sends a refusal under the current step's keyboard; nothing changes.
async fn refuse(ctx: &Ctx, model: &Model, draft: &Draft, r: Refusal) -> anyhow::Result<()> {
    tracing::debug!(user = %ctx.uid, model = %model.id, refusal = ?r, "input refused");
    let kb = if draft.pos < draft.steps.len() {
        step_screen(ctx.lang, model, draft).1
    } else {
        keyboards::home(ctx.lang)
    };
    ctx.send(texts::refusal(ctx.lang, &r), Some(kb)).await
}

/// The draft and model behind a button, or `None` (stale: another draft, no
/// wizard, a model no longer sold).
pub(crate) async fn draft_for(ctx: &Ctx, id: DraftId) -> anyhow::Result<Option<(Draft, Model)>> {
    if let Dialogue::Wizard(d) = ctx.dialogue()
        && d.id == id
        && let Some(m) = ctx
            .deps
            .catalog
            .get(d.model.as_str())
            .filter(|m| m.is_sold())
    {
        return Ok(Some((d, m.clone())));
    }
    Ok(None)
}

/// A typed answer to the current step.
pub(crate) async fn on_text(
    ctx: &Ctx,
    mut draft: Draft,
    model: &Model,
    text: &str,
) -> anyhow::Result<()> {
    let Some((_, f)) = current_field(model, &draft) else {
        return refuse(ctx, model, &draft, Refusal::UseButtons).await;
    };
    if f.is_upload() {
        return refuse(ctx, model, &draft, Refusal::ExpectedFile).await;
    }
    match ParamValue::parse_text(f, text) {
        Ok(v) => {
            draft.values.insert(f.name.clone(), v);
            draft.pos += 1;
            after_change(ctx, model, draft, None).await
        }
        Err(e) => {
            let r = match (&f.kind, &e) {
                (FieldKind::Enum { .. } | FieldKind::Boolean, _) => Refusal::UseButtons,
                _ => refusal_of(&e),
            };
            refuse(ctx, model, &draft, r).await
        }
    }
}

/// A button answer (enum option, yes/no) to the current step. `None` from a
/// button that does not belong to the current step: stale.
pub(crate) async fn on_choice(
    ctx: &Ctx,
    mut draft: Draft,
    model: &Model,
    field: usize,
    value: ChoiceValue,
) -> anyhow::Result<bool> {
    let Some((idx, f)) = current_field(model, &draft) else {
        return Ok(false);
    };
    if idx != field {
        return Ok(false);
    }
    let v = match (&f.kind, value) {
        (FieldKind::Enum { values, .. }, ChoiceValue::Index(i)) => match values.get(usize::from(i))
        {
            Some(v) => ParamValue::Choice(v.clone()),
            None => {
                refuse(ctx, model, &draft, Refusal::NotAnOption).await?;
                return Ok(true);
            }
        },
        (FieldKind::Boolean, ChoiceValue::Bool(b)) => ParamValue::Bool(b),
        _ => return Ok(false),
    };
    draft.values.insert(f.name.clone(), v);
    draft.pos += 1;
    after_change(ctx, model, draft, None).await?;
    Ok(true)
}

/// What a choice button carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChoiceValue {
    Index(u8),
    Bool(bool),
}

/// The index of the current step's field, for yes/no buttons (which carry no
/// field index).
pub(crate) fn current_index(model: &Model, draft: &Draft) -> Option<usize> {
    current_field(model, draft).map(|(i, _)| i)
}

/// "Keep the default".
pub(crate) async fn on_skip(ctx: &Ctx, mut draft: Draft, model: &Model) -> anyhow::Result<bool> {
    let Some((_, f)) = current_field(model, &draft) else {
        return Ok(false);
    };
    if !skippable(f) {
        return Ok(false);
    }
    draft.values.remove(&f.name);
    draft.pos += 1;
    after_change(ctx, model, draft, None).await?;
    Ok(true)
}

/// "Done" on an upload step.
pub(crate) async fn on_done(ctx: &Ctx, mut draft: Draft, model: &Model) -> anyhow::Result<bool> {
    let Some((_, f)) = current_field(model, &draft) else {
        return Ok(false);
    };
    let FieldKind::Upload { min_items, .. } = &f.kind else {
        return Ok(false);
    };
    let count = file_count(&draft, f);
    let need = (*min_items).max(1);
    if count < need {
        refuse(ctx, model, &draft, Refusal::NeedMoreFiles { min: need }).await?;
        return Ok(true);
    }
    draft.pos += 1;
    after_change(ctx, model, draft, None).await?;
    Ok(true)
}

/// "Back": the previous step, its value kept.
pub(crate) async fn on_back(ctx: &Ctx, mut draft: Draft, model: &Model) -> anyhow::Result<bool> {
    if draft.pos == 0 {
        return Ok(false);
    }
    draft.pos = draft.pos.min(draft.steps.len()) - 1;
    after_change(ctx, model, draft, None).await?;
    Ok(true)
}

/// "Advanced options": the advanced fields become steps after the others.
pub(crate) async fn on_advanced(
    ctx: &Ctx,
    mut draft: Draft,
    model: &Model,
) -> anyhow::Result<bool> {
    if draft.advanced || advanced_fields(model).next().is_none() {
        return Ok(false);
    }
    draft.pos = draft.steps.len();
    draft
        .steps
        .extend(advanced_fields(model).map(|f| f.name.clone()));
    draft.advanced = true;
    after_change(ctx, model, draft, None).await?;
    Ok(true)
}

/// A file sent during the wizard: checked against the schema before anything
/// is downloaded, then fetched from Telegram and stored on KIE.
pub(crate) async fn on_file(
    ctx: &Ctx,
    mut draft: Draft,
    model: &Model,
    file: IncomingFile,
) -> anyhow::Result<()> {
    let Some((_, f)) = current_field(model, &draft) else {
        return refuse(ctx, model, &draft, Refusal::UseButtons).await;
    };
    let FieldKind::Upload { max_items, .. } = &f.kind else {
        let r = match f.kind {
            FieldKind::String { .. } | FieldKind::Integer { .. } | FieldKind::Number { .. } => {
                Refusal::ExpectedText
            }
            _ => Refusal::UseButtons,
        };
        return refuse(ctx, model, &draft, r).await;
    };
    let max_items = *max_items;
    let count = file_count(&draft, f);
    if count >= max_items {
        return refuse(ctx, model, &draft, Refusal::TooManyFiles { max: max_items }).await;
    }
    if let Err(e) = kiebot_domain::params::check_upload(f, &file.mime, file.size) {
        return refuse(ctx, model, &draft, refusal_of(&e)).await;
    }
    if file.size > TELEGRAM_GET_FILE_LIMIT {
        let mb = file.size.div_ceil(1024 * 1024);
        return refuse(ctx, model, &draft, Refusal::OverTelegramLimit { mb }).await;
    }
    let url = match fetch_and_store(ctx, &file).await {
        Ok(u) => {
            draft.uploads.insert(
                u.clone(),
                Upload {
                    at: kiebot_store::now_ms(),
                    file_id: file.file_id.0.clone(),
                    unique_id: file.unique_id.clone(),
                    mime: file.mime.clone(),
                    name: file.name.clone(),
                    size: file.size,
                },
            );
            u
        }
        Err(e) => {
            tracing::warn!(user = %ctx.uid, error = format!("{e:#}"), "upload failed");
            return refuse(ctx, model, &draft, Refusal::UploadFailed).await;
        }
    };
    let files = match draft
        .values
        .entry(f.name.clone())
        .or_insert_with(|| ParamValue::Files(vec![]))
    {
        ParamValue::Files(v) => v,
        other => {
            *other = ParamValue::Files(vec![]);
            match other {
                ParamValue::Files(v) => v,
                _ => unreachable!("just set"),
            }
        }
    };
    files.push(url);
    let count = files.len();
    if count >= max_items {
        draft.pos += 1;
        after_change(ctx, model, draft, None).await
    } else {
        let note = texts::file_received(ctx.lang, count, max_items);
        after_change(ctx, model, draft, Some(note)).await
    }
}

async fn fetch_and_store(ctx: &Ctx, file: &IncomingFile) -> anyhow::Result<String> {
    let bot = &ctx.deps.bot;
    let tg_file = bot.get_file(file.file_id.clone()).await?;
    // getFile's size, else the message's (Telegram may leave either out).
    let declared = match u64::from(tg_file.size) {
        0 => file.size,
        n => n,
    };
    if declared > TELEGRAM_GET_FILE_LIMIT {
        anyhow::bail!("the file is larger than the download limit");
    }
    let name = upload_name(file);
    // Telegram's bytes go on to KIE as they arrive: the front never holds a
    // whole file. More bytes than Telegram declared (or than the limit)
    // abort the upload.
    let mut seen: u64 = 0;
    let chunks = bot.download_file_stream(&tg_file.path).map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > declared {
            return Err(std::io::Error::other(
                "the file grew past its declared size",
            ));
        }
        Ok::<Bytes, std::io::Error>(chunk)
    });
    let up = ctx
        .deps
        .kie
        .upload(
            Box::pin(chunks),
            declared,
            &name,
            &file.mime,
            &format!("kiebot/{}", ctx.uid),
        )
        .await?;
    Ok(up.download_url)
}

/// A name for KIE's upload host that no other upload has: KIE overwrites an
/// upload with the same name in the same folder (each user has one), so two
/// photos both called `image.jpg` would otherwise become one. The original
/// extension is kept (KIE and the models read the type from it).
fn upload_name(file: &IncomingFile) -> String {
    let ext = std::path::Path::new(&file.name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_ascii_lowercase)
        .or_else(|| {
            file.mime
                .split_once('/')
                .map(|(_, sub)| sub.trim_start_matches("x-").to_owned())
                .filter(|e| e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        })
        .unwrap_or_else(|| "bin".to_owned());
    let stem: String = file
        .unique_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    format!(
        "{stem}-{:x}-{:08x}.{ext}",
        kiebot_store::now_ms(),
        rand::random::<u32>()
    )
}

/// Uploads older than this are uploaded again when the draft is confirmed:
/// KIE keeps them about a day, and a confirmed generation can wait in line
/// for KIE (at most its model's deadline, six hours at most) before its
/// task is created.
pub(crate) const REUPLOAD_AFTER_MS: i64 = 12 * 3600 * 1000;

/// Uploads the draft's old files again from Telegram and puts the new URLs
/// in place. `Err` when one cannot be fetched again (Telegram keeps files
/// for a long time, but not forever).
async fn refresh_uploads(ctx: &Ctx, draft: &Draft) -> anyhow::Result<Option<Draft>> {
    let now = kiebot_store::now_ms();
    let stale: Vec<(String, Upload)> = draft
        .uploads
        .iter()
        .filter(|(_, u)| now - u.at > REUPLOAD_AFTER_MS)
        .map(|(url, u)| (url.clone(), u.clone()))
        .collect();
    if stale.is_empty() {
        return Ok(None);
    }
    let mut fresh = draft.clone();
    for (old, up) in stale {
        let file = IncomingFile {
            file_id: FileId(up.file_id.clone()),
            unique_id: up.unique_id.clone(),
            size: up.size,
            mime: up.mime.clone(),
            name: up.name.clone(),
        };
        let new = fetch_and_store(ctx, &file).await?;
        for v in fresh.values.values_mut() {
            if let ParamValue::Files(urls) = v {
                for u in urls.iter_mut().filter(|u| **u == old) {
                    u.clone_from(&new);
                }
            }
        }
        fresh.uploads.remove(&old);
        fresh.uploads.insert(new, Upload { at: now, ..up });
    }
    tracing::info!(user = %ctx.uid, "old uploads sent to KIE again before confirming");
    Ok(Some(fresh))
}

/// How a confirmation came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The confirm screen's button: only the quote that screen showed may be
    /// charged.
    Button,
    /// An instant model at the end of its steps, with no confirm screen.
    Instant,
}

/// The confirm button of the draft's screen.
pub(crate) async fn on_confirm(ctx: &Ctx, model: &Model, draft: &Draft) -> anyhow::Result<()> {
    confirm(ctx, model, draft, Trigger::Button).await
}

/// Confirms the draft: validate, price, create the pending generation with
/// its hold in one transaction (keyed by the draft id, so a double tap
/// creates one), then queue it.
async fn confirm(ctx: &Ctx, model: &Model, draft: &Draft, via: Trigger) -> anyhow::Result<()> {
    let lang = ctx.lang;
    let refreshed = match refresh_uploads(ctx, draft).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(user = %ctx.uid, error = format!("{e:#}"), "old upload not fetched again");
            return refuse(ctx, model, draft, Refusal::UploadFailed).await;
        }
    };
    if let Some(fresh) = &refreshed {
        ctx.set_dialogue(&Dialogue::Wizard(fresh.clone())).await?;
    }
    let draft = refreshed.as_ref().unwrap_or(draft);
    if ctx.off_sale(&model.id).await {
        // Nothing is created or held; the draft stays for when it is back.
        tracing::info!(user = %ctx.uid, model = %model.id, "confirmation of a model off sale refused");
        return ctx.show_off_sale().await;
    }
    let params = match Params::validate(model, &draft.values) {
        Ok(p) => p,
        Err(e) => return refuse(ctx, model, draft, refusal_of(&e)).await,
    };
    let Priced { quote, note } = match decide_price(ctx, model, &params).await? {
        Ok(x) => x,
        Err(why) => return refuse(ctx, model, draft, Refusal::Invalid(why)).await,
    };
    // Free uses spent elsewhere, a budget or catalog price changed, the
    // owner's or admin's role changed: the user would pay what they were
    // never shown. Nothing is created; the screen shows the new quote.
    if via == Trigger::Button && draft.quote.as_ref() != Some(&quote) {
        tracing::info!(
            user = %ctx.uid,
            model = %model.id,
            shown = ?draft.quote,
            now = ?quote,
            "quote changed since the confirm screen; asked again"
        );
        let mut again = draft.clone();
        again.id = DraftId(rand::random());
        again.quote = None;
        return show_confirm(ctx, model, again, Some(texts::price_changed(lang))).await;
    }
    let Quote { price, funding } = quote;
    let new = NewGeneration {
        user: ctx.uid,
        draft_key: format!("{}:{}", ctx.uid, draft.id),
        model: model.id.clone(),
        params_json: serde_json::to_string(params.values())?,
        request_json: params.kie_request(model).to_string(),
        price,
        chat_id: ctx.chat.0,
        deadline_secs: model.deadline_secs,
        max_active: ctx.deps.max_active,
        traceparent: kiebot_telemetry::current_traceparent(),
    };
    let name = model.name.get(lang.code());
    // The "confirmed" dialogue is written by the same transaction, with the
    // new generation's id filled in there.
    let then = serde_json::to_string(&Dialogue::Confirmed {
        draft: draft.id,
        generation: GenerationId(0),
    })?;
    let created = ctx
        .deps
        .store
        .generations()
        .confirm(
            &new,
            &funding,
            &DialogueAfter {
                state_json: &then,
                id_field: Dialogue::CONFIRMED_GENERATION_FIELD,
                ttl: DIALOGUE_TTL,
            },
        )
        .await;
    match created {
        Ok(Creation::Created(id)) => {
            ctx.remember_dialogue(Dialogue::Confirmed {
                draft: draft.id,
                generation: id,
            });
            tracing::info!(user = %ctx.uid, generation = %id, model = %model.id, price_minor = price.minor(), "generation confirmed");
            // The job and the reply go out together: neither needs the
            // other, and the generation is safe in the database whatever
            // becomes of the push. The press is answered with the reply,
            // not after the push.
            let submit = async {
                match ctx.deps.queues.push(Job::Submit(id)).await {
                    Ok(true) => {}
                    // The queue is at its bound: the reconciler enqueues the
                    // pending row once there is room.
                    Ok(false) => tracing::debug!(generation = %id, "submit left to the reconciler"),
                    Err(e) => {
                        tracing::error!(generation = %id, error = %e, "submit not queued; the reconciler will retry");
                    }
                }
            };
            let reply = async {
                let shown = ctx
                    .show(
                        texts::started(lang, name, id, note),
                        Some(keyboards::home(lang)),
                    )
                    .await;
                if shown.is_ok() {
                    ctx.answer_press().await;
                }
                shown
            };
            let ((), shown) = tokio::join!(submit, reply);
            shown
        }
        Ok(Creation::AlreadyExists(id)) => already(ctx, id).await,
        Err(StoreError::InsufficientFunds {
            available,
            requested,
        }) => {
            ctx.send(
                texts::insufficient_funds(lang, requested, available),
                Some(keyboards::need_topup(lang)),
            )
            .await
        }
        Err(StoreError::TooManyActive { limit }) => {
            ctx.send(
                texts::too_many_active(lang, limit),
                Some(keyboards::home(lang)),
            )
            .await
        }
        Err(StoreError::Blocked { .. }) => ctx.send(texts::blocked(lang), None).await,
        // Another confirmation took the last free use since this screen was
        // shown: show the screen again with the price, never charge unseen.
        Err(StoreError::FreeQuotaUsedUp { .. }) => {
            show_confirm(
                ctx,
                model,
                draft.clone(),
                Some(texts::free_quota_used_up(lang)),
            )
            .await
        }
        Err(StoreError::BudgetExhausted {
            available,
            requested,
        }) => {
            ctx.send(
                texts::admin_budget_exhausted(lang, requested, available.unwrap_or(Money::ZERO)),
                Some(keyboards::home(lang)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// A second confirm of a draft that already made a generation.
pub(crate) async fn already(ctx: &Ctx, id: GenerationId) -> anyhow::Result<()> {
    ctx.send(
        texts::already_started(ctx.lang, id),
        Some(keyboards::home(ctx.lang)),
    )
    .await
}
