//! Every user-visible string, in Russian and English, in one place.
//!
//! Handlers and workers never spell out text: they call a function here, so
//! a wording change is one edit, both languages stay side by side, and tests
//! can compare against the same functions. Strings are plain text (no parse
//! mode), so user input and model names never need escaping.

use kiebot_domain::{GenerationId, GenerationStatus, GenerationType, Money, UserId};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use crate::callback::Cb;

/// Both languages side by side; format strings capture variables in scope.
macro_rules! tr {
    ($lang:expr, $ru:literal, $en:literal) => {
        match $lang {
            Lang::Ru => format!($ru),
            Lang::En => format!($en),
        }
    };
}

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
        if code.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("ru")) {
            Lang::Ru
        } else {
            Lang::En
        }
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
        pick(
            lang,
            format!("Готово: {model}. Списано {}.", money(price)),
            format!("Done: {model}. Charged {}.", money(price)),
        )
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

/// A finished result that could not be fetched from where KIE left it; the
/// charge was paid back.
pub fn result_undeliverable(lang: Lang, model: &str) -> String {
    pick(
        lang,
        format!(
            "Результат {model} готов, но его не удалось безопасно получить. Деньги возвращены на баланс."
        ),
        format!(
            "{model} finished, but its result could not be fetched safely. The charge was returned to your balance."
        ),
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
    pick(
        lang,
        format!("Генерация {model} отменена. Деньги не списаны."),
        format!("The {model} generation was canceled. You were not charged."),
    )
}

/// KIE's failure messages are for engineers; users get a short, calm reason.
fn friendly_reason(lang: Lang, reason: &str) -> String {
    let r = reason.to_ascii_lowercase();
    let (ru, en) = if r.contains("sensitive")
        || r.contains("safety")
        || r.contains("nsfw")
        || r.contains("content")
    {
        (
            "Модель отклонила запрос по правилам безопасности.",
            "The model refused the request under its content rules.",
        )
    } else if r.contains("dry_run") || r.contains("dry run") {
        (
            "Включён тестовый режим: генерация не выполнялась.",
            "Test mode is on: nothing was generated.",
        )
    } else if r.contains("validation") || r.contains("invalid") || r.contains("rejected the input")
    {
        (
            "Модель не приняла параметры.",
            "The model did not accept the parameters.",
        )
    } else {
        (
            "Сервис генерации вернул ошибку.",
            "The generation service returned an error.",
        )
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
        vec![InlineKeyboardButton::callback(
            repeat,
            Cb::Repeat(generation).encode(),
        )],
        vec![
            InlineKeyboardButton::callback(history, Cb::History(0).encode()),
            InlineKeyboardButton::callback(menu, Cb::Menu.encode()),
        ],
    ])
}

// ----- front bot: menus ------------------------------------------------------

/// The first-contact language picker (both languages: we do not know yet).
pub fn choose_language() -> String {
    "Выберите язык / Choose your language".to_owned()
}

/// Picker button label.
pub fn language_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "🇷🇺 Русский",
        Lang::En => "🇬🇧 English",
    }
}

/// The main menu's text.
pub fn main_menu(lang: Lang, available: Money) -> String {
    let b = money(available);
    tr!(
        lang,
        "Главное меню. Баланс: {b}.\nВыберите, что создать:",
        "Main menu. Balance: {b}.\nChoose what to make:"
    )
}

/// A generation type's name.
pub fn type_name(lang: Lang, t: GenerationType) -> &'static str {
    use GenerationType as G;
    match (lang, t) {
        (Lang::Ru, G::TextToImage) => "🖼 Текст → изображение",
        (Lang::En, G::TextToImage) => "🖼 Text to image",
        (Lang::Ru, G::ImageToImage) => "🎨 Изображение → изображение",
        (Lang::En, G::ImageToImage) => "🎨 Image to image",
        (Lang::Ru, G::ImageEditing) => "🪄 Редактирование фото",
        (Lang::En, G::ImageEditing) => "🪄 Image editing",
        (Lang::Ru, G::TextToVideo) => "🎬 Текст → видео",
        (Lang::En, G::TextToVideo) => "🎬 Text to video",
        (Lang::Ru, G::ImageToVideo) => "📽 Изображение → видео",
        (Lang::En, G::ImageToVideo) => "📽 Image to video",
        (Lang::Ru, G::VideoEditing) => "✂️ Редактирование видео",
        (Lang::En, G::VideoEditing) => "✂️ Video editing",
        (Lang::Ru, G::LipSync) => "🗣 Анимация по образцу",
        (Lang::En, G::LipSync) => "🗣 Animate and lip-sync",
        (Lang::Ru, G::SpeechToVideo) => "🎙 Речь → видео",
        (Lang::En, G::SpeechToVideo) => "🎙 Speech to video",
        (Lang::Ru, G::SpeechToText) => "📝 Речь → текст",
        (Lang::En, G::SpeechToText) => "📝 Speech to text",
        (Lang::Ru, G::TextToSpeech) => "🔊 Текст → речь",
        (Lang::En, G::TextToSpeech) => "🔊 Text to speech",
        (Lang::Ru, G::TextToMusic) => "🎵 Текст → музыка",
        (Lang::En, G::TextToMusic) => "🎵 Text to music",
        (Lang::Ru, G::AudioToAudio) => "🎧 Аудио → аудио",
        (Lang::En, G::AudioToAudio) => "🎧 Audio to audio",
    }
}

/// A menu button for a type with its number of models.
pub fn type_button(lang: Lang, t: GenerationType, models: usize) -> String {
    format!("{} ({models})", type_name(lang, t))
}

/// Labels of the fixed menu buttons.
#[derive(Debug, Clone, Copy)]
pub enum Button {
    /// Balance.
    Balance,
    /// History.
    History,
    /// Top up.
    TopUp,
    /// Help.
    Help,
    /// Language.
    Language,
    /// Main menu.
    Menu,
    /// Back.
    Back,
    /// Cancel.
    Cancel,
    /// Start the wizard.
    Start,
    /// Leave the field at its default.
    Skip,
    /// Leave an optional field without a default empty.
    SkipEmpty,
    /// No more files.
    Done,
    /// Advanced options.
    Advanced,
    /// Confirm.
    Confirm,
    /// Yes.
    Yes,
    /// No.
    No,
    /// Custom amount.
    Custom,
    /// Previous page.
    Prev,
    /// Next page.
    Next,
}

/// The label of a fixed button.
pub fn button(lang: Lang, b: Button) -> &'static str {
    let (ru, en) = match b {
        Button::Balance => ("💰 Баланс", "💰 Balance"),
        Button::History => ("🗂 История", "🗂 History"),
        Button::TopUp => ("⭐ Пополнить", "⭐ Top up"),
        Button::Help => ("❓ Помощь", "❓ Help"),
        Button::Language => ("🌐 Язык", "🌐 Language"),
        Button::Menu => ("🏠 Меню", "🏠 Menu"),
        Button::Back => ("⬅️ Назад", "⬅️ Back"),
        Button::Cancel => ("✖️ Отмена", "✖️ Cancel"),
        Button::Start => ("▶️ Начать", "▶️ Start"),
        Button::Skip => ("⏭ Оставить по умолчанию", "⏭ Keep the default"),
        Button::SkipEmpty => ("⏭ Пропустить", "⏭ Skip"),
        Button::Done => ("✅ Готово", "✅ Done"),
        Button::Advanced => ("⚙️ Доп. настройки", "⚙️ Advanced options"),
        Button::Confirm => ("✅ Подтвердить", "✅ Confirm"),
        Button::Yes => ("Да", "Yes"),
        Button::No => ("Нет", "No"),
        Button::Custom => ("✏️ Своя сумма", "✏️ Custom amount"),
        Button::Prev => ("◀️ Назад", "◀️ Newer"),
        Button::Next => ("Дальше ▶️", "Older ▶️"),
    };
    match lang {
        Lang::Ru => ru,
        Lang::En => en,
    }
}

/// The model list's heading.
pub fn choose_model(lang: Lang, t: GenerationType) -> String {
    let name = type_name(lang, t);
    tr!(
        lang,
        "{name}\nВыберите модель (цена с настройками по умолчанию):",
        "{name}\nChoose a model (price with default settings):"
    )
}

/// A price as shown on buttons: an amount or "free".
pub fn price_tag(lang: Lang, price: Money) -> String {
    if price.is_positive() {
        money(price)
    } else {
        tr!(lang, "бесплатно", "free")
    }
}

/// A model button: name and price of its defaults.
pub fn model_button(lang: Lang, name: &str, price: Money) -> String {
    format!("{name} · {}", price_tag(lang, price))
}

/// The model card.
pub fn model_card(
    lang: Lang,
    name: &str,
    description: &str,
    price: Money,
    free_left: Option<u32>,
) -> String {
    let p = price_tag(lang, price);
    let mut t = tr!(
        lang,
        "{name}\n\n{description}\n\nЦена: от {p}",
        "{name}\n\n{description}\n\nPrice: from {p}"
    );
    if let Some(n) = free_left {
        t.push_str(&tr!(
            lang,
            "\nБесплатно сегодня: осталось {n}",
            "\nFree today: {n} left"
        ));
    }
    t
}

// ----- front bot: the wizard ---------------------------------------------------

/// What the wizard asks for one step.
#[derive(Debug, Clone)]
pub enum Ask<'a> {
    /// Free text up to `max_len` characters.
    Text {
        /// Longest accepted text.
        max_len: usize,
    },
    /// A whole number in a range.
    Integer {
        /// Smallest.
        min: i64,
        /// Largest.
        max: i64,
    },
    /// A decimal in a range.
    Number {
        /// Smallest.
        min: f64,
        /// Largest.
        max: f64,
    },
    /// One of the buttons.
    Choice,
    /// Yes or no.
    YesNo,
    /// Files of a kind.
    Upload {
        /// "image", "video" or "audio".
        media: &'a str,
        /// Files received so far.
        count: usize,
        /// Fewest needed.
        min: usize,
        /// Most accepted.
        max: usize,
    },
}

/// The question of a wizard step: step counter, label, what to send, the
/// current value (after Back) and whether it may be skipped.
pub fn ask_step(
    lang: Lang,
    step: usize,
    steps: usize,
    label: &str,
    ask: &Ask<'_>,
    current: Option<&str>,
    optional: bool,
) -> String {
    let head = tr!(
        lang,
        "Шаг {step} из {steps}. {label}",
        "Step {step} of {steps}. {label}"
    );
    let body = match ask {
        Ask::Text { max_len } => tr!(
            lang,
            "Отправьте текст (до {max_len} символов).",
            "Send the text (up to {max_len} characters)."
        ),
        Ask::Integer { min, max } => tr!(
            lang,
            "Отправьте целое число от {min} до {max}.",
            "Send a whole number from {min} to {max}."
        ),
        Ask::Number { min, max } => tr!(
            lang,
            "Отправьте число от {min} до {max}.",
            "Send a number from {min} to {max}."
        ),
        Ask::Choice => tr!(lang, "Выберите вариант:", "Choose an option:"),
        Ask::YesNo => tr!(lang, "Да или нет?", "Yes or no?"),
        Ask::Upload {
            media,
            count,
            min,
            max,
        } => {
            let what = match (lang, *media) {
                (Lang::Ru, "video") => "видео",
                (Lang::Ru, "audio") => "аудио (файл или голосовое)",
                (Lang::Ru, _) => "изображение (фото или файлом)",
                (Lang::En, "video") => "a video",
                (Lang::En, "audio") => "audio (a file or a voice note)",
                (Lang::En, _) => "an image (a photo or a file)",
            };
            let mut t = if max > &1 {
                tr!(
                    lang,
                    "Отправьте {what}: от {min} до {max} файлов. Получено: {count}.",
                    "Send {what}: {min} to {max} files. Received: {count}."
                )
            } else {
                tr!(lang, "Отправьте {what}.", "Send {what}.")
            };
            if *count > 0 && max > &1 {
                t.push_str(&tr!(
                    lang,
                    " Можно добавить ещё или нажать «Готово».",
                    " Add more or press Done."
                ));
            }
            t
        }
    };
    let mut t = format!("{head}\n{body}");
    if let Some(c) = current {
        t.push_str(&tr!(lang, "\nСейчас: {c}", "\nCurrent: {c}"));
    }
    if optional {
        t.push_str(&tr!(lang, "\nНеобязательно.", "\nOptional."));
    }
    t
}

/// A file of the current upload step was accepted.
pub fn file_received(lang: Lang, count: usize, max: usize) -> String {
    tr!(
        lang,
        "Файл получен ({count} из {max}).",
        "File received ({count} of {max})."
    )
}

/// Why a user's input was refused; nothing changed.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Empty text.
    Empty,
    /// Text over the limit.
    TooLong {
        /// Characters sent.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Control characters in the text.
    ControlChars,
    /// Not a number.
    NotANumber,
    /// A number out of range.
    OutOfRange {
        /// Smallest.
        min: String,
        /// Largest.
        max: String,
    },
    /// Not one of the options.
    NotAnOption,
    /// A file of a type the step does not take.
    WrongFileType {
        /// The file's type.
        mime: String,
    },
    /// A file larger than Telegram lets bots download.
    OverTelegramLimit {
        /// Size in MB.
        mb: u64,
    },
    /// A file over the model's limit.
    TooLarge {
        /// Size in MB.
        mb: u64,
        /// Limit in MB.
        max_mb: u64,
    },
    /// All the files the step takes were already received.
    TooManyFiles {
        /// Limit.
        max: usize,
    },
    /// A file where text is expected.
    ExpectedText,
    /// Text where a file is expected.
    ExpectedFile,
    /// Buttons are expected.
    UseButtons,
    /// Fewer files than needed.
    NeedMoreFiles {
        /// Fewest accepted.
        min: usize,
    },
    /// The file could not be fetched or stored; try again.
    UploadFailed,
    /// The parameters are invalid (a detail for the operator's log).
    Invalid(String),
    /// Values the model refuses together; the reason in each language.
    Combination {
        /// In English.
        en: String,
        /// In Russian.
        ru: String,
    },
}

/// The message for a refused input.
pub fn refusal(lang: Lang, r: &Refusal) -> String {
    match r {
        Refusal::Empty => tr!(
            lang,
            "Текст пустой. Отправьте текст.",
            "The text is empty. Please send some text."
        ),
        Refusal::TooLong { len, max } => tr!(
            lang,
            "Слишком длинный текст: {len} символов, максимум {max}. Сократите и отправьте снова.",
            "The text is too long: {len} characters, the limit is {max}. Please shorten it and send again."
        ),
        Refusal::ControlChars => tr!(
            lang,
            "В тексте недопустимые символы.",
            "The text contains characters that are not allowed."
        ),
        Refusal::NotANumber => tr!(
            lang,
            "Это не число. Отправьте число.",
            "That is not a number. Please send a number."
        ),
        Refusal::OutOfRange { min, max } => tr!(
            lang,
            "Число вне диапазона: допустимо от {min} до {max}.",
            "The number is out of range: from {min} to {max} is accepted."
        ),
        Refusal::NotAnOption => tr!(
            lang,
            "Такого варианта нет. Выберите кнопкой.",
            "That is not one of the options. Please use the buttons."
        ),
        Refusal::WrongFileType { mime } => tr!(
            lang,
            "Файлы типа {mime} здесь не принимаются. Отправьте файл подходящего типа.",
            "Files of type {mime} are not accepted here. Please send a file of the right type."
        ),
        Refusal::OverTelegramLimit { mb } => tr!(
            lang,
            "Файл слишком большой ({mb} МБ): Telegram позволяет ботам получать файлы до 20 МБ.",
            "The file is too large ({mb} MB): Telegram lets bots fetch files up to 20 MB."
        ),
        Refusal::TooLarge { mb, max_mb } => tr!(
            lang,
            "Файл слишком большой ({mb} МБ), максимум {max_mb} МБ.",
            "The file is too large ({mb} MB); the limit is {max_mb} MB."
        ),
        Refusal::TooManyFiles { max } => tr!(
            lang,
            "Уже получено максимум файлов ({max}). Нажмите «Готово».",
            "The maximum of {max} files is already received. Press Done."
        ),
        Refusal::ExpectedText => tr!(
            lang,
            "Здесь нужен текст, а не файл.",
            "Text is expected here, not a file."
        ),
        Refusal::ExpectedFile => tr!(lang, "Здесь нужен файл.", "A file is expected here."),
        Refusal::UseButtons => tr!(
            lang,
            "Выберите вариант кнопкой ниже.",
            "Please choose with the buttons below."
        ),
        Refusal::NeedMoreFiles { min } => tr!(
            lang,
            "Нужно хотя бы {min} файл(ов).",
            "At least {min} file(s) are needed."
        ),
        Refusal::UploadFailed => tr!(
            lang,
            "Не удалось сохранить файл. Попробуйте ещё раз.",
            "The file could not be stored. Please try again."
        ),
        Refusal::Invalid(_) => tr!(
            lang,
            "Параметры не подходят модели. Проверьте шаги и попробуйте снова.",
            "The parameters do not fit the model. Please check the steps and try again."
        ),
        Refusal::Combination { en, ru } => {
            let why = if lang == Lang::Ru { ru } else { en };
            tr!(
                lang,
                "Такое сочетание параметров недоступно: {why}. Измените один из них и подтвердите снова.",
                "This combination is not available: {why}. Change one of them and confirm again."
            )
        }
    }
}

/// Why a generation is free or cheaper, shown on the confirm screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceNote {
    /// The normal price.
    None,
    /// A daily free use.
    FreeQuota,
    /// DRY_RUN: nothing is generated or charged.
    DryRun,
    /// The owner is not charged.
    Owner,
    /// A limited admin's budget pays; `left` is what remains before this one.
    AdminBudget {
        /// The budget left.
        left: Money,
    },
}

/// The confirm screen.
pub fn confirm(
    lang: Lang,
    model: &str,
    summary: &[(String, String)],
    price: Money,
    note: PriceNote,
) -> String {
    let mut t = tr!(
        lang,
        "Проверьте параметры — {model}:",
        "Check the parameters: {model}:"
    );
    for (k, v) in summary {
        t.push_str(&format!("\n• {k}: {v}"));
    }
    let p = price_tag(lang, price);
    t.push_str(&tr!(lang, "\n\nЦена: {p}", "\n\nPrice: {p}"));
    let n = match note {
        PriceNote::None => String::new(),
        PriceNote::FreeQuota => tr!(
            lang,
            " (бесплатная попытка дня)",
            " (a free use of the day)"
        ),
        PriceNote::DryRun => tr!(
            lang,
            " (тестовый режим: без генерации и списаний)",
            " (test mode: nothing generated, nothing charged)"
        ),
        PriceNote::Owner => tr!(lang, " (владелец: без списания)", " (owner: not charged)"),
        PriceNote::AdminBudget { left } => {
            let left = money(left);
            tr!(
                lang,
                " (из бюджета администратора, осталось {left})",
                " (from the admin budget, {left} left)"
            )
        }
    };
    t.push_str(&n);
    t.push_str(&tr!(
        lang,
        "\nСумма будет зарезервирована и списана только после успешной генерации.",
        "\nThe amount is reserved now and charged only when the result is ready."
    ));
    t
}

/// The generation was queued.
pub fn started(lang: Lang, model: &str, id: GenerationId, note: PriceNote) -> String {
    let mut t = tr!(
        lang,
        "Генерация #{id} ({model}) запущена. Результат придёт сюда.",
        "Generation #{id} ({model}) has started. The result will arrive here."
    );
    if note == PriceNote::DryRun {
        t.push_str(&tr!(
            lang,
            "\nТестовый режим: цена 0, KIE не вызывается.",
            "\nTest mode: price 0, KIE is not called."
        ));
    }
    t
}

/// A second tap on confirm: the first one already started it.
pub fn already_started(lang: Lang, id: GenerationId) -> String {
    tr!(
        lang,
        "Генерация #{id} уже запущена.",
        "Generation #{id} has already started."
    )
}

/// Not enough money; nothing was held.
pub fn insufficient_funds(lang: Lang, price: Money, available: Money) -> String {
    let (p, a) = (money(price), money(available));
    tr!(
        lang,
        "Недостаточно средств: нужно {p}, доступно {a}. Пополните баланс и подтвердите снова.",
        "Not enough balance: {p} needed, {a} available. Top up and confirm again."
    )
}

/// The last free use of the day was taken since the confirm screen was
/// shown; the screen is shown again with the price.
pub fn free_quota_used_up(lang: Lang) -> String {
    tr!(
        lang,
        "Бесплатные попытки этой модели на сегодня уже использованы. Проверьте цену и подтвердите снова.",
        "Today's free uses of this model are already used up. Please check the price and confirm again."
    )
}

/// The price or who pays it changed between the confirm screen and the
/// press; nothing was charged and the screen below shows the new price.
pub fn price_changed(lang: Lang) -> String {
    tr!(
        lang,
        "Цена изменилась, ничего не списано. Проверьте новую цену и подтвердите снова.",
        "The price has changed; nothing was charged. Please check the new price and confirm again."
    )
}

/// A limited admin's budget does not cover the generation; nothing was
/// charged.
pub fn admin_budget_exhausted(lang: Lang, price: Money, left: Money) -> String {
    let (p, l) = (money(price), money(left));
    tr!(
        lang,
        "Бюджета администратора не хватает: нужно {p}, осталось {l}. Ничего не списано. Попросите владельца увеличить бюджет.",
        "Your admin budget does not cover this: {p} needed, {l} left. Nothing was charged. Ask the owner to raise the budget."
    )
}

/// Too many generations running.
pub fn too_many_active(lang: Lang, limit: u32) -> String {
    tr!(
        lang,
        "У вас уже {limit} активных генераций. Дождитесь результата и попробуйте снова.",
        "You already have {limit} generations running. Please wait for a result and try again."
    )
}

/// The user is blocked.
pub fn blocked(lang: Lang) -> String {
    tr!(
        lang,
        "Доступ к боту ограничен. Обратитесь в поддержку.",
        "Your access to the bot is restricted. Please contact support."
    )
}

/// The bot is under maintenance.
pub fn maintenance(lang: Lang) -> String {
    tr!(
        lang,
        "Идут технические работы. Пожалуйста, загляните чуть позже.",
        "The bot is under maintenance. Please come back a little later."
    )
}

/// Something on our side failed.
pub fn internal_error(lang: Lang) -> String {
    tr!(
        lang,
        "Что-то пошло не так. Попробуйте ещё раз через минуту.",
        "Something went wrong on our side. Please try again in a minute."
    )
}

/// An old or unknown button.
pub fn stale_button(lang: Lang) -> String {
    tr!(
        lang,
        "Эта кнопка устарела. Откройте меню заново.",
        "This button is out of date. Please open the menu again."
    )
}

/// The model is off sale for now (KIE changed it; an operator checks).
pub fn model_off_sale(lang: Lang) -> String {
    tr!(
        lang,
        "Эта модель временно недоступна: сервис генерации изменил её, и мы проверяем изменения. Ничего не списано — выберите другую модель.",
        "This model is temporarily unavailable: the generation service changed it and we are checking the change. Nothing was charged; please choose another model."
    )
}

/// The model is no longer sold.
pub fn model_unavailable(lang: Lang) -> String {
    tr!(
        lang,
        "Эта модель сейчас недоступна.",
        "This model is not available right now."
    )
}

/// The wizard was cancelled.
pub fn cancelled(lang: Lang) -> String {
    tr!(lang, "Отменено.", "Cancelled.")
}

/// A message the bot does not understand in the current state.
pub fn not_understood(lang: Lang) -> String {
    tr!(
        lang,
        "Не понял. Выберите действие в меню.",
        "I did not understand that. Please choose in the menu."
    )
}

/// Help.
pub fn help(lang: Lang) -> String {
    tr!(
        lang,
        "Как это работает:\n1. Выберите тип генерации и модель (цена на кнопке).\n2. Ответьте на вопросы мастера.\n3. Подтвердите цену — деньги резервируются и списываются только после успеха.\n\nКоманды: /start, /balance, /history, /promo КОД, /language, /cancel, /help",
        "How it works:\n1. Choose a generation type and a model (the price is on the button).\n2. Answer the wizard's questions.\n3. Confirm the price: the money is reserved and charged only on success.\n\nCommands: /start, /balance, /history, /promo CODE, /language, /cancel, /help"
    )
}

/// The balance screen.
pub fn balance(lang: Lang, balance: Money, held: Money) -> String {
    let (b, h) = (money(balance), money(held));
    tr!(
        lang,
        "Баланс: {b}\nЗарезервировано: {h}",
        "Balance: {b}\nReserved: {h}"
    )
}

/// A generation status for the history.
pub fn status_name(lang: Lang, s: GenerationStatus) -> &'static str {
    use GenerationStatus as S;
    match (lang, s) {
        (Lang::Ru, S::Pending) => "⏳ в очереди",
        (Lang::En, S::Pending) => "⏳ queued",
        (Lang::Ru, S::Submitted) => "⚙️ в работе",
        (Lang::En, S::Submitted) => "⚙️ running",
        (Lang::Ru, S::Succeeded) => "✅ готово",
        (Lang::En, S::Succeeded) => "✅ done",
        (Lang::Ru, S::Delivered) => "✅ доставлено",
        (Lang::En, S::Delivered) => "✅ delivered",
        (Lang::Ru, S::Failed) => "❌ ошибка",
        (Lang::En, S::Failed) => "❌ failed",
        (Lang::Ru, S::Expired) => "⌛ истекло",
        (Lang::En, S::Expired) => "⌛ expired",
        (Lang::Ru, S::Canceled) => "✖️ отменено",
        (Lang::En, S::Canceled) => "✖️ canceled",
    }
}

/// The history heading; `empty` when there is nothing on the page.
pub fn history(lang: Lang, page: u32, lines: &[String]) -> String {
    if lines.is_empty() {
        return tr!(lang, "История пуста.", "Your history is empty.");
    }
    let n = page + 1;
    let mut t = tr!(lang, "История, страница {n}:", "History, page {n}:");
    for l in lines {
        t.push('\n');
        t.push_str(l);
    }
    t
}

/// One generation on a history page.
pub fn history_line(
    lang: Lang,
    id: GenerationId,
    model: &str,
    status: GenerationStatus,
    price: Money,
) -> String {
    format!(
        "#{id} · {model} · {} · {}",
        status_name(lang, status),
        price_tag(lang, price)
    )
}

/// A history button to send a result again.
pub fn resend_button(lang: Lang, id: GenerationId) -> String {
    tr!(lang, "📤 #{id} ещё раз", "📤 Resend #{id}")
}

/// A history button to repeat a generation.
pub fn repeat_button(lang: Lang, id: GenerationId) -> String {
    tr!(lang, "🔁 Повторить #{id}", "🔁 Repeat #{id}")
}

/// The result to re-send is not available.
pub fn nothing_to_resend(lang: Lang) -> String {
    tr!(
        lang,
        "Этот результат нельзя отправить повторно.",
        "This result cannot be sent again."
    )
}

// ----- payments ------------------------------------------------------------------

/// The top-up screen.
pub fn topup(lang: Lang, per_star: Money) -> String {
    let r = money(per_star);
    tr!(
        lang,
        "Пополнение звёздами Telegram. 1 ⭐ = {r}. Выберите сумму:",
        "Top up with Telegram Stars. 1 ⭐ = {r}. Choose an amount:"
    )
}

/// A preset button.
pub fn stars_button(stars: u32, amount: Money) -> String {
    format!("{stars} ⭐ → {}", money(amount))
}

/// Ask for a custom number of Stars.
pub fn ask_stars(lang: Lang, min: u32, max: u32) -> String {
    tr!(
        lang,
        "Отправьте количество звёзд (от {min} до {max}).",
        "Send the number of Stars ({min} to {max})."
    )
}

/// A custom amount out of range.
pub fn bad_stars(lang: Lang, min: u32, max: u32) -> String {
    tr!(
        lang,
        "Нужно целое число от {min} до {max}.",
        "Please send a whole number from {min} to {max}."
    )
}

/// The invoice's title.
pub fn invoice_title(lang: Lang) -> String {
    tr!(lang, "Пополнение баланса", "Balance top-up")
}

/// The invoice's description.
pub fn invoice_description(lang: Lang, amount: Money) -> String {
    let a = money(amount);
    tr!(
        lang,
        "Зачисление {a} на баланс бота.",
        "{a} credited to your bot balance."
    )
}

/// pre_checkout refused: the invoice is not valid.
pub fn payment_refused(lang: Lang) -> String {
    tr!(
        lang,
        "Счёт недействителен. Создайте новый через «Пополнить».",
        "This invoice is not valid. Please create a new one with Top up."
    )
}

/// pre_checkout refused: the invoice is past its expiry.
pub fn invoice_expired(lang: Lang) -> String {
    tr!(
        lang,
        "Срок действия счёта истёк. Создайте новый через «Пополнить».",
        "This invoice has expired. Please create a new one with Top up."
    )
}

/// A payment was credited.
pub fn payment_received(lang: Lang, amount: Money, balance: Money) -> String {
    let (a, b) = (money(amount), money(balance));
    tr!(
        lang,
        "Зачислено {a}. Баланс: {b}.",
        "{a} credited. Balance: {b}."
    )
}

/// A payment that cannot be matched to an invoice (kept for the operator).
pub fn payment_unmatched(lang: Lang) -> String {
    tr!(
        lang,
        "Платёж получен, но не распознан. Мы разберёмся и зачислим его вручную.",
        "Payment received but not recognised. We will look into it and credit it manually."
    )
}

/// A promo code was redeemed.
pub fn promo_ok(lang: Lang, amount: Money) -> String {
    let a = money(amount);
    tr!(
        lang,
        "Промокод активирован: +{a}.",
        "Promo code redeemed: +{a}."
    )
}

/// The user already redeemed the code.
pub fn promo_repeat(lang: Lang) -> String {
    tr!(
        lang,
        "Вы уже активировали этот промокод.",
        "You have already redeemed this promo code."
    )
}

/// The code is unknown, expired or used up.
pub fn promo_refused(lang: Lang) -> String {
    tr!(
        lang,
        "Промокод не найден, истёк или закончился.",
        "This promo code is unknown, expired or used up."
    )
}

/// Too many refused promo codes in the last hour: no more tries for now.
pub fn promo_too_many(lang: Lang) -> String {
    tr!(
        lang,
        "Слишком много неверных промокодов. Попробуйте снова через час.",
        "Too many wrong promo codes. Please try again in an hour."
    )
}

/// Sent once when a user sends updates faster than the bot takes them:
/// what follows is ignored until they slow down.
pub fn flood_notice(lang: Lang) -> String {
    tr!(
        lang,
        "Вы отправляете сообщения слишком быстро, часть из них пропущена. Подождите немного и повторите.",
        "You are sending messages too fast, so some were skipped. Please wait a moment and try again."
    )
}

/// /promo without a code.
pub fn promo_usage(lang: Lang) -> String {
    tr!(lang, "Использование: /promo КОД", "Usage: /promo CODE")
}

/// The inviter's notice of a referral bonus.
pub fn referral_bonus(lang: Lang, amount: Money) -> String {
    let a = money(amount);
    tr!(
        lang,
        "Ваш приглашённый друг пополнил баланс: вам начислено {a}.",
        "A friend you invited topped up: {a} credited to you."
    )
}

// ----- admin -------------------------------------------------------------------------

/// A non-admin used an admin command.
pub fn admin_only(lang: Lang) -> String {
    tr!(
        lang,
        "Эта команда доступна только администраторам.",
        "This command is for administrators only."
    )
}

/// The admin screen's heading: the commands, each with who may use it.
pub fn admin_menu(lang: Lang) -> String {
    tr!(
        lang,
        "Администрирование. Права: владелец — всё; support — поиск, повтор, блокировка; finance — корректировки и возвраты в пределах лимитов; broadcast — рассылка; maintenance — техработы.\n/stats, /failed — статистика и ошибки (support)\n/user ID — пользователь (support)\n/resend GEN_ID — отправить результат владельцу ещё раз (support)\n/block ID, /unblock ID (support)\n/adjust ID СУММА ПРИЧИНА — корректировка (finance)\n/refund CHARGE_ID — возврат звёзд (finance)\n/broadcast ТЕКСТ — рассылка (broadcast)\n/maintenance — техработы вкл/выкл (maintenance)\n/budget ID СУММА|off ПРИЧИНА — бюджет администратора (владелец)\n/grant ID ПРАВО, /revoke ID ПРАВО — выдать или забрать право (владелец)\n/admins — кто что может (владелец)",
        "Administration. Permissions: the owner can do everything; support: look-ups, resend, block; finance: adjustments and refunds within the limits; broadcast: message everyone; maintenance: maintenance mode.\n/stats, /failed: statistics and failures (support)\n/user ID: look up a user (support)\n/resend GEN_ID: send a result to its owner again (support)\n/block ID, /unblock ID (support)\n/adjust ID AMOUNT REASON: adjust a balance (finance)\n/refund CHARGE_ID: refund Stars (finance)\n/broadcast TEXT: message every user (broadcast)\n/maintenance: maintenance mode on/off (maintenance)\n/budget ID AMOUNT|off REASON: an admin's budget (owner)\n/grant ID PERMISSION, /revoke ID PERMISSION: give or take a permission (owner)\n/admins: who may do what (owner)"
    )
}

/// An admin without the permission an action needs.
pub fn admin_lacks(lang: Lang, permission: &str) -> String {
    tr!(
        lang,
        "Для этого нужно право «{permission}». Попросите владельца: /grant ВАШ_ID {permission}.",
        "This needs the \"{permission}\" permission. Ask the owner to /grant it to you."
    )
}

/// An action only the owner may take.
pub fn owner_only(lang: Lang) -> String {
    tr!(
        lang,
        "Это может сделать только владелец.",
        "Only the owner can do this."
    )
}

/// An admin named themselves.
pub fn admin_self_target(lang: Lang) -> String {
    tr!(
        lang,
        "Нельзя выполнять это действие над своим аккаунтом или кошельком. Ничего не изменено.",
        "You cannot do this to your own account or wallet. Nothing was changed."
    )
}

/// An admin tried to block the owner.
pub fn admin_owner_protected(lang: Lang) -> String {
    tr!(
        lang,
        "Владельца нельзя заблокировать. Ничего не изменено.",
        "The owner cannot be blocked. Nothing was changed."
    )
}

/// Above the single-action cap.
pub fn admin_over_single(lang: Lang, max: Money) -> String {
    let m = money(max);
    tr!(
        lang,
        "Больше разового лимита ({m}). Ничего не изменено; крупные суммы — через владельца.",
        "Above the single-action cap ({m}). Nothing was changed; larger amounts go through the owner."
    )
}

/// Above what is left of the daily budget.
pub fn admin_over_budget(lang: Lang, left: Money, budget: Money) -> String {
    let (l, b) = (money(left), money(budget));
    tr!(
        lang,
        "Больше дневного бюджета: осталось {l} из {b} за 24 часа. Ничего не изменено.",
        "Above your daily budget: {l} of {b} left for the last 24 hours. Nothing was changed."
    )
}

/// The owner's notice of a large adjustment by another admin.
pub fn admin_adjust_notice(
    lang: Lang,
    actor: UserId,
    user: UserId,
    amount: Money,
    reason: &str,
) -> String {
    let a = money(amount);
    tr!(
        lang,
        "Крупная корректировка: администратор {actor} изменил баланс {user} на {a}. Причина: {reason}",
        "Large adjustment: admin {actor} adjusted the balance of {user} by {a}. Reason: {reason}"
    )
}

/// `/grant` and `/revoke` usage.
pub fn grant_usage(lang: Lang, command: &str) -> String {
    tr!(
        lang,
        "Использование: /{command} ID ПРАВО, где ПРАВО — support, finance, broadcast или maintenance.",
        "Usage: /{command} ID PERMISSION, where PERMISSION is support, finance, broadcast or maintenance."
    )
}

/// A permission granted (`fresh`) or already held.
pub fn granted(lang: Lang, user: UserId, permission: &str, fresh: bool) -> String {
    match fresh {
        true => tr!(
            lang,
            "Пользователь {user} получил право «{permission}».",
            "User {user} now has the \"{permission}\" permission."
        ),
        false => tr!(
            lang,
            "У пользователя {user} уже есть право «{permission}».",
            "User {user} already has the \"{permission}\" permission."
        ),
    }
}

/// A permission revoked (`fresh`) or not held.
pub fn revoked(lang: Lang, user: UserId, permission: &str, fresh: bool) -> String {
    match fresh {
        true => tr!(
            lang,
            "Право «{permission}» у пользователя {user} отозвано.",
            "The \"{permission}\" permission of user {user} is revoked."
        ),
        false => tr!(
            lang,
            "У пользователя {user} нет права «{permission}».",
            "User {user} does not have the \"{permission}\" permission."
        ),
    }
}

/// The owner has every permission already.
pub fn owner_has_everything(lang: Lang) -> String {
    tr!(
        lang,
        "У владельца и так есть все права.",
        "The owner has every permission already."
    )
}

/// No such user.
pub fn admin_no_user(lang: Lang, user: UserId) -> String {
    tr!(
        lang,
        "Пользователь {user} не найден.",
        "User {user} not found."
    )
}

/// `/admins`: who may do what (`lines` are `id: perms`).
pub fn admins_list(lang: Lang, owner: Option<UserId>, lines: &[String]) -> String {
    let owner = owner.map_or_else(|| "—".to_owned(), |o| o.to_string());
    let list = if lines.is_empty() {
        "—".to_owned()
    } else {
        lines.join("\n")
    };
    tr!(
        lang,
        "Владелец: {owner}\nАдминистраторы:\n{list}",
        "Owner: {owner}\nAdmins:\n{list}"
    )
}

/// `/resend` usage and its outcome.
pub fn resend_usage(lang: Lang) -> String {
    tr!(
        lang,
        "Использование: /resend GEN_ID",
        "Usage: /resend GEN_ID"
    )
}

/// `/resend` sent the result to its owner (`sent`), or there was none.
pub fn resent(lang: Lang, user: UserId, sent: bool) -> String {
    match sent {
        true => tr!(
            lang,
            "Результат отправлен пользователю {user} ещё раз.",
            "The result was sent to user {user} again."
        ),
        false => tr!(
            lang,
            "У этой генерации нет файлов для повторной отправки.",
            "This generation has no files to send again."
        ),
    }
}

/// Admin button labels.
pub fn admin_button(lang: Lang, what: &str) -> String {
    match (lang, what) {
        (Lang::Ru, "stats") => "📊 Статистика".into(),
        (Lang::En, "stats") => "📊 Statistics".into(),
        (Lang::Ru, "failed") => "❌ Ошибки".into(),
        (Lang::En, "failed") => "❌ Failed".into(),
        (Lang::Ru, "maint") => "🛠 Техработы вкл/выкл".into(),
        (Lang::En, "maint") => "🛠 Maintenance on/off".into(),
        (Lang::Ru, "block") => "🚫 Заблокировать".into(),
        (Lang::En, "block") => "🚫 Block".into(),
        (Lang::Ru, "unblock") => "✅ Разблокировать".into(),
        (Lang::En, "unblock") => "✅ Unblock".into(),
        (_, other) => other.to_owned(),
    }
}

/// An admin command typed without what it needs: `usage` is the command
/// with its arguments (for example `/user ID`), each language's own.
fn usage(lang: Lang, ru: &str, en: &str) -> String {
    tr!(lang, "Использование: {ru}", "Usage: {en}")
}

/// `/user` usage.
pub fn user_usage(lang: Lang) -> String {
    usage(lang, "/user ID", "/user ID")
}

/// `/block` (`block`) or `/unblock` usage.
pub fn block_usage(lang: Lang, block: bool) -> String {
    let c = if block { "/block ID" } else { "/unblock ID" };
    usage(lang, c, c)
}

/// `/adjust` usage.
pub fn adjust_usage(lang: Lang) -> String {
    usage(
        lang,
        "/adjust ID СУММА ПРИЧИНА (сумма может быть отрицательной)",
        "/adjust ID AMOUNT REASON (the amount may be negative)",
    )
}

/// `/budget` usage.
pub fn budget_usage(lang: Lang) -> String {
    usage(
        lang,
        "/budget ID СУММА ПРИЧИНА или /budget ID off ПРИЧИНА (бюджет — сколько администратор ещё может потратить)",
        "/budget ID AMOUNT REASON or /budget ID off REASON (the budget is what the admin may still spend)",
    )
}

/// `/refund` usage.
pub fn refund_usage(lang: Lang) -> String {
    usage(lang, "/refund CHARGE_ID", "/refund CHARGE_ID")
}

/// `/broadcast` usage.
pub fn broadcast_usage(lang: Lang) -> String {
    usage(lang, "/broadcast ТЕКСТ", "/broadcast TEXT")
}

/// The heading of the latest failed generations (`/failed`).
pub fn failed_heading(lang: Lang) -> String {
    tr!(lang, "Последние ошибки:", "Latest failed generations:")
}

/// One failed generation in `/failed`.
pub fn failed_line(id: GenerationId, user: UserId, model: &str, reason: &str) -> String {
    format!("#{id} · user {user} · {model} · {reason}")
}

/// Maintenance mode was switched `on` or off.
pub fn maintenance_switched(lang: Lang, on: bool) -> String {
    match on {
        true => tr!(
            lang,
            "Техработы включены: пользователи видят сообщение о работах.",
            "Maintenance mode is on: users see the maintenance message."
        ),
        false => tr!(lang, "Техработы выключены.", "Maintenance mode is off."),
    }
}

/// A user was `blocked` or unblocked.
pub fn user_blocked(lang: Lang, user: UserId, blocked: bool) -> String {
    match blocked {
        true => tr!(
            lang,
            "Пользователь {user} заблокирован.",
            "User {user} is blocked."
        ),
        false => tr!(
            lang,
            "Пользователь {user} разблокирован.",
            "User {user} is unblocked."
        ),
    }
}

/// A balance was adjusted by `amount`; `balance` is what it is now.
pub fn adjusted(lang: Lang, user: UserId, amount: Money, balance: Money) -> String {
    let (a, b) = (money(amount), money(balance));
    tr!(
        lang,
        "Баланс {user} изменён на {a}. Теперь: {b}.",
        "Balance of {user} adjusted by {a}. Now: {b}."
    )
}

/// An adjustment would take more than the wallet has available.
pub fn adjust_over_available(lang: Lang, available: Money) -> String {
    let a = money(available);
    tr!(
        lang,
        "Нельзя списать больше доступного ({a}).",
        "Cannot take more than is available ({a})."
    )
}

/// No such generation.
pub fn admin_no_generation(lang: Lang, id: GenerationId) -> String {
    tr!(
        lang,
        "Генерация #{id} не найдена.",
        "Generation #{id} not found."
    )
}

/// A limited admin tried to set a budget.
pub fn budget_owner_only(lang: Lang) -> String {
    tr!(
        lang,
        "Бюджеты администраторов задаёт только владелец.",
        "Only the owner sets admin budgets."
    )
}

/// A budget for someone who is not a limited admin.
pub fn budget_not_applicable(lang: Lang, user: UserId) -> String {
    tr!(
        lang,
        "{user} — не ограниченный администратор: бюджет ему не нужен.",
        "{user} is not a limited admin: a budget would not apply."
    )
}

/// A limited admin's budget set (`None`: no budget), and what it was.
pub fn budget_set(lang: Lang, user: UserId, now: Option<Money>, was: Option<Money>) -> String {
    let show = |b: Option<Money>| b.map_or_else(|| "—".to_owned(), money);
    let (now, was) = (show(now), show(was));
    tr!(
        lang,
        "Бюджет администратора {user}: {now} (было {was}).",
        "Admin budget of {user}: {now} (was {was})."
    )
}

/// `/refund` of an unknown charge.
pub fn payment_not_found(lang: Lang) -> String {
    tr!(lang, "Платёж не найден.", "Payment not found.")
}

/// A refund the user's wallet no longer covers.
pub fn refund_spent(lang: Lang, available: Money) -> String {
    let a = money(available);
    tr!(
        lang,
        "Пользователь уже потратил деньги: доступно {a}.",
        "The user has spent the money: {a} available."
    )
}

/// A refund of a payment refunded before.
pub fn refund_repeat(lang: Lang) -> String {
    tr!(
        lang,
        "Этот платёж уже возвращён.",
        "This payment was already refunded."
    )
}

/// Stars refunded.
pub fn refunded(lang: Lang, stars: i64, amount: Money, user: UserId) -> String {
    let a = money(amount);
    tr!(
        lang,
        "Возвращено {stars} ⭐ ({a}) пользователю {user}.",
        "Refunded {stars} ⭐ ({a}) to user {user}."
    )
}

/// Telegram gave no clear answer to a refund (`error`); the debit stands.
pub fn refund_unknown(lang: Lang, error: &str) -> String {
    tr!(
        lang,
        "Telegram не подтвердил возврат ({error}). Списание остаётся; сверка платежей покажет итог. Если возврата не было, верните деньги через /adjust.",
        "Telegram did not confirm the refund ({error}). The debit stands; the payment reconciler will show the outcome. If no refund was made, credit the user back with /adjust."
    )
}

/// Telegram refused a refund (`error`); the debit was reversed.
pub fn refund_refused(lang: Lang, error: &str) -> String {
    tr!(
        lang,
        "Telegram отказал в возврате: {error}. Списание отменено.",
        "Telegram refused the refund: {error}. The debit was reversed."
    )
}

/// `/broadcast` while one is running.
pub fn broadcast_running(lang: Lang) -> String {
    tr!(
        lang,
        "Рассылка уже идёт.",
        "A broadcast is already running."
    )
}

/// A broadcast was started.
pub fn broadcast_started(lang: Lang) -> String {
    tr!(lang, "Рассылка запущена.", "Broadcast started.")
}

/// The report of a finished broadcast.
pub fn broadcast_finished(lang: Lang, sent: u64, failed: u64) -> String {
    tr!(
        lang,
        "Рассылка завершена: доставлено {sent}, не доставлено {failed}.",
        "Broadcast finished: {sent} delivered, {failed} failed."
    )
}

/// `/stats`: how many users there are.
pub fn stats_users(total: u64, blocked: u64, active: u64) -> String {
    format!("Users: {total} (blocked {blocked}, active 24h {active})")
}

/// `/stats`: the heading of generations by status.
pub fn stats_generations() -> String {
    "Generations:".to_owned()
}

/// `/stats`: how many generations are in `status`.
pub fn stats_status(status: GenerationStatus, count: u64) -> String {
    format!("  {status}: {count}")
}

/// `/stats`: revenue and top-ups over `period` (`24h`, `7d`, `30d`).
pub fn stats_period(period: &str, revenue: Money, topups: Money) -> String {
    format!(
        "{period}: revenue {} · top-ups {}",
        money(revenue),
        money(topups)
    )
}

/// `/stats`: KIE's credits (`Ok`), why they are unknown (`Err`), or dry
/// run (`None`).
pub fn stats_kie_credits(credits: Option<Result<String, String>>) -> String {
    match credits {
        Some(Ok(c)) => format!("KIE credits: {c}"),
        Some(Err(e)) => format!("KIE credits: unavailable ({e})"),
        None => "KIE credits: dry run".to_owned(),
    }
}

/// What `/user` shows of a user.
#[derive(Debug, Clone)]
pub struct UserCard<'a> {
    /// Who.
    pub id: UserId,
    /// Their role's name.
    pub role: &'a str,
    /// Their language code, if they chose one.
    pub language: Option<&'a str>,
    /// Whether they are blocked.
    pub blocked: bool,
    /// Their balance.
    pub balance: Money,
    /// The part of it held for running generations.
    pub held: Money,
    /// Who invited them.
    pub referrer: Option<UserId>,
    /// Their budget, when they are a limited admin with one.
    pub admin_budget: Option<Money>,
    /// Their latest generations: id, model, status, price.
    pub generations: Vec<(GenerationId, &'a str, GenerationStatus, Money)>,
}

/// `/user ID`: the user card (operators read English and Russian alike, so
/// it carries numbers with short labels).
pub fn user_card(c: &UserCard<'_>) -> String {
    use std::fmt::Write as _;
    let mut t = format!(
        "User {}\nrole: {}\nlanguage: {}\nblocked: {}\nbalance: {} (held {})\nreferrer: {}",
        c.id,
        c.role,
        c.language.unwrap_or("-"),
        c.blocked,
        money(c.balance),
        money(c.held),
        c.referrer.map_or_else(|| "-".to_owned(), |r| r.to_string()),
    );
    if let Some(b) = c.admin_budget {
        let _ = write!(t, "\nadmin budget: {}", money(b));
    }
    for (id, model, status, price) in &c.generations {
        let _ = write!(t, "\n#{id} {model} {status} {}", money(*price));
    }
    t
}

/// `/admins`: an admin by configuration only.
pub fn admins_line_configured(user: UserId) -> String {
    format!("{user}: support (ADMIN_IDS)")
}

/// `/admins`: an admin and their permissions (`configured`: in
/// `ADMIN_IDS` too, which gives `support`).
pub fn admins_line(user: UserId, permissions: &[&str], configured: bool) -> String {
    let mut names: Vec<&str> = permissions.to_vec();
    if configured && !permissions.contains(&"support") {
        names.insert(0, "support (ADMIN_IDS)");
    }
    format!("{user}: {}", names.join(", "))
}

/// What the files of an answer are shown as on the confirm screen.
pub fn files_value(lang: Lang, count: usize) -> String {
    tr!(lang, "файлов: {count}", "{count} file(s)")
}

/// The description of the command `name` in Telegram's command menu
/// (`setMyCommands`); `None` for a command that is not registered there.
pub fn command_description(lang: Lang, name: &str) -> Option<&'static str> {
    let (ru, en) = match name {
        "start" => ("Главное меню", "Main menu"),
        "balance" => ("Баланс", "Balance"),
        "history" => ("История генераций", "Generation history"),
        "promo" => ("Активировать промокод", "Redeem a promo code"),
        "language" => ("Язык", "Language"),
        "cancel" => ("Отменить текущее действие", "Cancel the current action"),
        "help" => ("Помощь", "Help"),
        _ => return None,
    };
    Some(match lang {
        Lang::Ru => ru,
        Lang::En => en,
    })
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
    fn a_changed_price_says_nothing_was_charged() {
        for lang in Lang::ALL {
            let t = price_changed(lang);
            assert!(
                t.contains("ничего не списано") || t.contains("nothing was charged"),
                "{t}"
            );
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
