//! Every inline keyboard the front bot shows, built from [`texts`](crate::texts)
//! labels and [`Cb`] payloads only, so a test can press any button by its text
//! and every payload passes through the one codec.

use kiebot_domain::{GenerationId, GenerationType, ModelId, Money, UserId};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use crate::callback::{AdminCb, Cb, DraftId};
use crate::texts::{self, Button, Lang};

fn btn(label: impl Into<String>, cb: &Cb) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(label.into(), cb.encode())
}

fn fixed(lang: Lang, b: Button, cb: &Cb) -> InlineKeyboardButton {
    btn(texts::button(lang, b), cb)
}

/// Just "Menu".
pub fn home(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![fixed(lang, Button::Menu, &Cb::Menu)]])
}

/// The language picker.
pub fn languages() -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![
        Lang::ALL
            .iter()
            .map(|&l| btn(texts::language_name(l), &Cb::Lang(l)))
            .collect::<Vec<_>>(),
    ])
}

/// The main menu: generation types with their model counts, then the
/// account buttons.
pub fn main_menu(lang: Lang, types: &[(GenerationType, usize)]) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = types
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .map(|&(t, n)| btn(texts::type_button(lang, t, n), &Cb::Type(t)))
                .collect()
        })
        .collect();
    rows.push(vec![
        fixed(lang, Button::Balance, &Cb::Balance),
        fixed(lang, Button::TopUp, &Cb::TopUp),
    ]);
    rows.push(vec![
        fixed(lang, Button::History, &Cb::History(0)),
        fixed(lang, Button::Help, &Cb::Help),
        fixed(lang, Button::Language, &Cb::Languages),
    ]);
    InlineKeyboardMarkup::new(rows)
}

/// The models of a type, one per row, each with the price of its defaults.
pub fn model_list(lang: Lang, models: &[(ModelId, String, Money)]) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = models
        .iter()
        .map(|(id, name, price)| {
            vec![btn(
                texts::model_button(lang, name, *price),
                &Cb::Model(id.clone()),
            )]
        })
        .collect();
    rows.push(vec![fixed(lang, Button::Menu, &Cb::Menu)]);
    InlineKeyboardMarkup::new(rows)
}

/// Under a model card: start the wizard, back to the type, home.
pub fn model_card(
    lang: Lang,
    model: &ModelId,
    back_to: Option<GenerationType>,
) -> InlineKeyboardMarkup {
    let mut nav = vec![];
    if let Some(t) = back_to {
        nav.push(fixed(lang, Button::Back, &Cb::Type(t)));
    }
    nav.push(fixed(lang, Button::Menu, &Cb::Menu));
    InlineKeyboardMarkup::new(vec![
        vec![fixed(lang, Button::Start, &Cb::Start(model.clone()))],
        nav,
    ])
}

/// What a wizard step offers besides its own choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepNav {
    /// "Keep the default" (fields with a default).
    pub skip: bool,
    /// "Skip" (optional fields without a default).
    pub skip_empty: bool,
    /// "Done" (upload steps with enough files).
    pub done: bool,
    /// "Back" (not on the first step).
    pub back: bool,
}

/// A wizard step: its choices (two per row), then skip/done, then
/// back/cancel/home.
pub fn wizard_step(
    lang: Lang,
    draft: DraftId,
    choices: Vec<(String, Cb)>,
    nav: StepNav,
) -> InlineKeyboardMarkup {
    let per_row = if choices.iter().any(|(l, _)| l.chars().count() > 14) {
        2
    } else {
        3
    };
    let mut rows: Vec<Vec<InlineKeyboardButton>> = choices
        .chunks(per_row)
        .map(|c| c.iter().map(|(l, cb)| btn(l.clone(), cb)).collect())
        .collect();
    let mut extra = vec![];
    if nav.done {
        extra.push(fixed(lang, Button::Done, &Cb::Done(draft)));
    }
    if nav.skip {
        extra.push(fixed(lang, Button::Skip, &Cb::Skip(draft)));
    } else if nav.skip_empty {
        extra.push(fixed(lang, Button::SkipEmpty, &Cb::Skip(draft)));
    }
    if !extra.is_empty() {
        rows.push(extra);
    }
    let mut bottom = vec![];
    if nav.back {
        bottom.push(fixed(lang, Button::Back, &Cb::Back(draft)));
    }
    bottom.push(fixed(lang, Button::Cancel, &Cb::Cancel));
    rows.push(bottom);
    InlineKeyboardMarkup::new(rows)
}

/// The confirm screen: confirm, advanced options (when the model has any not
/// yet shown), back, cancel.
pub fn confirm(lang: Lang, draft: DraftId, advanced: bool, back: bool) -> InlineKeyboardMarkup {
    let mut rows = vec![vec![fixed(lang, Button::Confirm, &Cb::Confirm(draft))]];
    if advanced {
        rows.push(vec![fixed(lang, Button::Advanced, &Cb::Advanced(draft))]);
    }
    let mut bottom = vec![];
    if back {
        bottom.push(fixed(lang, Button::Back, &Cb::Back(draft)));
    }
    bottom.push(fixed(lang, Button::Cancel, &Cb::Cancel));
    rows.push(bottom);
    InlineKeyboardMarkup::new(rows)
}

/// After "not enough money": top up, or home.
pub fn need_topup(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        fixed(lang, Button::TopUp, &Cb::TopUp),
        fixed(lang, Button::Menu, &Cb::Menu),
    ]])
}

/// The balance screen.
pub fn balance(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![
        vec![
            fixed(lang, Button::TopUp, &Cb::TopUp),
            fixed(lang, Button::History, &Cb::History(0)),
        ],
        vec![fixed(lang, Button::Menu, &Cb::Menu)],
    ])
}

/// Star presets (stars, credited amount), a custom amount, home.
pub fn topup(lang: Lang, presets: &[(u32, Money)]) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = presets
        .chunks(2)
        .map(|c| {
            c.iter()
                .map(|&(s, m)| btn(texts::stars_button(s, m), &Cb::Stars(s)))
                .collect()
        })
        .collect();
    rows.push(vec![fixed(lang, Button::Custom, &Cb::StarsCustom)]);
    rows.push(vec![fixed(lang, Button::Menu, &Cb::Menu)]);
    InlineKeyboardMarkup::new(rows)
}

/// A history page: per generation a resend button (when it was delivered
/// with file ids) and a repeat button; paging; home.
pub fn history(
    lang: Lang,
    items: &[(GenerationId, bool)],
    page: u32,
    has_more: bool,
) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = items
        .iter()
        .map(|&(id, resend)| {
            let mut row = vec![];
            if resend {
                row.push(btn(texts::resend_button(lang, id), &Cb::Resend(id)));
            }
            row.push(btn(texts::repeat_button(lang, id), &Cb::Repeat(id)));
            row
        })
        .collect();
    let mut paging = vec![];
    if page > 0 {
        paging.push(fixed(lang, Button::Prev, &Cb::History(page - 1)));
    }
    if has_more {
        paging.push(fixed(
            lang,
            Button::Next,
            &Cb::History(page.saturating_add(1)),
        ));
    }
    if !paging.is_empty() {
        rows.push(paging);
    }
    rows.push(vec![fixed(lang, Button::Menu, &Cb::Menu)]);
    InlineKeyboardMarkup::new(rows)
}

/// The admin screen.
pub fn admin(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![
        vec![
            btn(
                texts::admin_button(lang, "stats"),
                &Cb::Admin(AdminCb::Stats),
            ),
            btn(
                texts::admin_button(lang, "failed"),
                &Cb::Admin(AdminCb::Failed),
            ),
        ],
        vec![btn(
            texts::admin_button(lang, "maint"),
            &Cb::Admin(AdminCb::Maintenance),
        )],
        vec![fixed(lang, Button::Menu, &Cb::Menu)],
    ])
}

/// Under an admin's user card.
pub fn admin_user(lang: Lang, user: UserId, blocked: bool) -> InlineKeyboardMarkup {
    let toggle = if blocked {
        btn(
            texts::admin_button(lang, "unblock"),
            &Cb::Admin(AdminCb::Unblock(user)),
        )
    } else {
        btn(
            texts::admin_button(lang, "block"),
            &Cb::Admin(AdminCb::Block(user)),
        )
    };
    InlineKeyboardMarkup::new(vec![
        vec![toggle],
        vec![btn(
            texts::admin_button(lang, "stats"),
            &Cb::Admin(AdminCb::Stats),
        )],
    ])
}
