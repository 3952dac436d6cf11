//! Every user-visible string, in Russian and English, in one place.
//!
//! Handlers and workers never spell out text: they call a function here, so
//! a wording change is one edit, both languages stay side by side, and tests
//! can compare against the same functions. Strings are plain text (no parse
//! mode), so user input and model names never need escaping.

use kiebot_domain::{GenerationId, Money};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

/// A language the bot speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    /// Russian.
    Ru,
    /// English (the fallback).
    #[default]
    En,
}

impl Lang {
    /// Every language, in picker order.
    pub const ALL: [Lang; 2] = [Lang::Ru, Lang::En];

    /// From a stored or Telegram language code; English for anything else.
    pub fn parse(code: &str) -> Lang {
        if code.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("ru")) { Lang::Ru } else { Lang::En }
    }

    /// The two-letter code stored for a user.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }
}

/// Picks the text for a language.
fn pick(lang: Lang, ru: String, en: String) -> String {
    match lang {
        Lang::Ru => ru,
        Lang::En => en,
    }
}

/// The currency sign shown next to amounts.
pub const CURRENCY: &str = "₽";

/// An amount as users read it.
pub fn money(amount: Money) -> String {
    format!("{amount} {CURRENCY}")
}

/// Caption under a delivered result.
pub fn result_caption(lang: Lang, model: &str, price: Money) -> String {
    if price.is_positive() {
        pick(lang, format!("Готово: {model}. Списано {}.", money(price)), format!("Done: {model}. Charged {}.", money(price)))
    } else {
        pick(lang, format!("Готово: {model}."), format!("Done: {model}."))
    }
}

/// A generation KIE failed or refused; the hold was released.
pub fn generation_failed(lang: Lang, model: &str, reason: &str) -> String {
    let reason = friendly_reason(lang, reason);
    pick(
        lang,
        format!("Не получилось: {model}. {reason}\nДеньги не списаны."),
        format!("That didn't work: {model}. {reason}\nYou were not charged."),
    )
}

/// A generation that ran past its model's deadline; the hold was released.
pub fn generation_expired(lang: Lang, model: &str) -> String {
    pick(
        lang,
        format!("{model} не успела за отведённое время. Деньги не списаны, попробуйте ещё раз."),
        format!("{model} did not finish in time. You were not charged; please try again."),
    )
}

/// A generation canceled before a result; the hold was released.
pub fn generation_canceled(lang: Lang, model: &str) -> String {
    pick(lang, format!("Генерация {model} отменена. Деньги не списаны."), format!("The {model} generation was canceled. You were not charged."))
}

/// KIE's failure messages are for engineers; users get a short, calm reason.
fn friendly_reason(lang: Lang, reason: &str) -> String {
    let r = reason.to_ascii_lowercase();
    let (ru, en) = if r.contains("sensitive") || r.contains("safety") || r.contains("nsfw") || r.contains("content") {
        ("Модель отклонила запрос по правилам безопасности.", "The model refused the request under its content rules.")
    } else if r.contains("dry_run") || r.contains("dry run") {
        ("Включён тестовый режим: генерация не выполнялась.", "Test mode is on: nothing was generated.")
    } else if r.contains("validation") || r.contains("invalid") || r.contains("rejected the input") {
        ("Модель не приняла параметры.", "The model did not accept the parameters.")
    } else {
        ("Сервис генерации вернул ошибку.", "The generation service returned an error.")
    };
    pick(lang, ru.to_owned(), en.to_owned())
}

/// Buttons under a result: repeat it, open the history, back to the menu.
pub fn result_keyboard(lang: Lang, generation: GenerationId) -> InlineKeyboardMarkup {
    let (repeat, history, menu) = match lang {
        Lang::Ru => ("🔁 Повторить", "🗂 История", "🏠 Меню"),
        Lang::En => ("🔁 Repeat", "🗂 History", "🏠 Menu"),
    };
    InlineKeyboardMarkup::new(vec![
        vec![InlineKeyboardButton::callback(repeat, format!("1:rep:{}", generation.0))],
        vec![
            InlineKeyboardButton::callback(history, "1:hist:0"),
            InlineKeyboardButton::callback(menu, "1:menu"),
        ],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_with_an_english_fallback() {
        assert_eq!(Lang::parse("ru"), Lang::Ru);
        assert_eq!(Lang::parse("ru-RU"), Lang::Ru);
        assert_eq!(Lang::parse("de"), Lang::En);
        assert_eq!(Lang::parse(""), Lang::En);
    }

    #[test]
    fn failure_notices_say_nothing_was_charged() {
        for lang in Lang::ALL {
            let t = generation_failed(lang, "Z-Image", "KIE rejected the input: prompt");
            assert!(t.contains("Z-Image"));
            assert!(t.contains("не списаны") || t.contains("not charged"), "{t}");
        }
    }

    #[test]
    fn result_buttons_fit_telegrams_callback_limit() {
        let kb = result_keyboard(Lang::Ru, GenerationId(i64::MAX));
        for row in kb.inline_keyboard {
            for b in row {
                if let teloxide::types::InlineKeyboardButtonKind::CallbackData(d) = b.kind {
                    assert!(d.len() <= 64);
                }
            }
        }
    }
}
