//! The callback-data codec: every inline button's payload, typed and versioned.
//!
//! Telegram caps callback data at 64 bytes and anyone can forge it, so the
//! encoding is compact (`1:` version prefix, short tags, indices instead of
//! enum values that may contain `:`), and [`Cb::parse`] is total: any string,
//! however crafted, yields either a well-formed [`Cb`] or `None`. It never
//! panics, and what a parsed value refers to (a draft, a model, a field, an
//! option) is checked again by the handler against the live state.
//!
//! Version 1 grammar (fields separated by `:`):
//!
//! ```text
//! 1:menu | 1:help | 1:bal | 1:langs | 1:lang:<ru|en> | 1:noop | 1:x
//! 1:hist:<page> | 1:res:<generation> | 1:rep:<generation>
//! 1:t:<generation type> | 1:m:<model id> | 1:go:<model id>
//! 1:v:<draft>:<field index>:<option index> | 1:yn:<draft>:<0|1>
//! 1:skip:<draft> | 1:done:<draft> | 1:back:<draft> | 1:adv:<draft> | 1:ok:<draft>
//! 1:top | 1:st:<stars> | 1:stc
//! 1:a:<stats|failed|maint|bcast> | 1:a:u:<user> | 1:a:blk:<user> | 1:a:unb:<user>
//! ```

use std::fmt;

use kiebot_domain::{GenerationId, GenerationType, ModelId, UserId};

use crate::texts::Lang;

/// Telegram's limit on callback data, in bytes.
pub const MAX_LEN: usize = 64;

/// The version prefix of every payload this codec writes.
pub const PREFIX: &str = "1:";

/// A wizard draft's id: random, so a button from an abandoned wizard can
/// never act on a newer one, and unique per user so it keys the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DraftId(pub u64);

impl fmt::Display for DraftId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl DraftId {
    fn parse(s: &str) -> Option<DraftId> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(DraftId)
    }
}

/// An admin action behind a button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCb {
    /// The statistics screen.
    Stats,
    /// Recent failed generations.
    Failed,
    /// Toggle maintenance mode.
    Maintenance,
    /// Start a broadcast (asks for the text).
    Broadcast,
    /// Show a user.
    User(UserId),
    /// Block a user.
    Block(UserId),
    /// Unblock a user.
    Unblock(UserId),
}

/// Every button the bot shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cb {
    /// A label-only button; answered, does nothing.
    Noop,
    /// The main menu.
    Menu,
    /// Help.
    Help,
    /// Balance.
    Balance,
    /// The language picker.
    Languages,
    /// Choose a language.
    Lang(Lang),
    /// Cancel the current wizard or input and go home.
    Cancel,
    /// A page of the history.
    History(u32),
    /// Send a delivered result again (by Telegram file id).
    Resend(GenerationId),
    /// Start the wizard again with a past generation's parameters.
    Repeat(GenerationId),
    /// Models of a generation type.
    Type(GenerationType),
    /// A model's card.
    Model(ModelId),
    /// Start the wizard for a model.
    Start(ModelId),
    /// Choose option `value` of the draft's field number `field`.
    Pick {
        /// The draft the button belongs to.
        draft: DraftId,
        /// Index of the field in the model's schema.
        field: u8,
        /// Index of the option in the field's values.
        value: u8,
    },
    /// Answer a yes/no step.
    YesNo {
        /// The draft.
        draft: DraftId,
        /// The answer.
        value: bool,
    },
    /// Leave the current optional step at its default.
    Skip(DraftId),
    /// No more files for the current upload step.
    Done(DraftId),
    /// Back to the previous step.
    Back(DraftId),
    /// Open the advanced options.
    Advanced(DraftId),
    /// Confirm and pay.
    Confirm(DraftId),
    /// The top-up screen.
    TopUp,
    /// Buy this many Stars' worth of balance.
    Stars(u32),
    /// Type a custom number of Stars.
    StarsCustom,
    /// An admin action.
    Admin(AdminCb),
}

impl Cb {
    /// The payload for `InlineKeyboardButton::callback`. Always starts with
    /// [`PREFIX`]; at most [`MAX_LEN`] bytes for every value the bot creates
    /// (model ids are checked by the catalog tests).
    pub fn encode(&self) -> String {
        let body = match self {
            Cb::Noop => "noop".to_owned(),
            Cb::Menu => "menu".to_owned(),
            Cb::Help => "help".to_owned(),
            Cb::Balance => "bal".to_owned(),
            Cb::Languages => "langs".to_owned(),
            Cb::Lang(l) => format!("lang:{}", l.code()),
            Cb::Cancel => "x".to_owned(),
            Cb::History(p) => format!("hist:{p}"),
            Cb::Resend(g) => format!("res:{}", g.0),
            Cb::Repeat(g) => format!("rep:{}", g.0),
            Cb::Type(t) => format!("t:{}", t.as_str()),
            Cb::Model(m) => format!("m:{m}"),
            Cb::Start(m) => format!("go:{m}"),
            Cb::Pick {
                draft,
                field,
                value,
            } => format!("v:{draft}:{field}:{value}"),
            Cb::YesNo { draft, value } => format!("yn:{draft}:{}", u8::from(*value)),
            Cb::Skip(d) => format!("skip:{d}"),
            Cb::Done(d) => format!("done:{d}"),
            Cb::Back(d) => format!("back:{d}"),
            Cb::Advanced(d) => format!("adv:{d}"),
            Cb::Confirm(d) => format!("ok:{d}"),
            Cb::TopUp => "top".to_owned(),
            Cb::Stars(n) => format!("st:{n}"),
            Cb::StarsCustom => "stc".to_owned(),
            Cb::Admin(a) => match a {
                AdminCb::Stats => "a:stats".to_owned(),
                AdminCb::Failed => "a:failed".to_owned(),
                AdminCb::Maintenance => "a:maint".to_owned(),
                AdminCb::Broadcast => "a:bcast".to_owned(),
                AdminCb::User(u) => format!("a:u:{}", u.0),
                AdminCb::Block(u) => format!("a:blk:{}", u.0),
                AdminCb::Unblock(u) => format!("a:unb:{}", u.0),
            },
        };
        format!("{PREFIX}{body}")
    }

    /// Parses callback data. `None` for anything this version did not write:
    /// another version, unknown tags, extra or missing parts, numbers out of
    /// range, data over [`MAX_LEN`] bytes.
    pub fn parse(data: &str) -> Option<Cb> {
        if data.len() > MAX_LEN {
            return None;
        }
        let body = data.strip_prefix(PREFIX)?;
        let parts: Vec<&str> = body.split(':').collect();
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let id = |s: &str| -> Option<i64> { num(s).and_then(|n| i64::try_from(n).ok()) };
        let cb = match parts.as_slice() {
            ["noop"] => Cb::Noop,
            ["menu"] => Cb::Menu,
            ["help"] => Cb::Help,
            ["bal"] => Cb::Balance,
            ["langs"] => Cb::Languages,
            ["lang", "ru"] => Cb::Lang(Lang::Ru),
            ["lang", "en"] => Cb::Lang(Lang::En),
            ["x"] => Cb::Cancel,
            ["hist", p] => Cb::History(u32::try_from(num(p)?).ok()?),
            ["res", g] => Cb::Resend(GenerationId(id(g)?)),
            ["rep", g] => Cb::Repeat(GenerationId(id(g)?)),
            ["t", t] => Cb::Type(GenerationType::ALL.into_iter().find(|x| x.as_str() == *t)?),
            // Model ids contain `/` but never `:`, so they are one part.
            ["m", m] => Cb::Model(ModelId::parse(m).ok()?),
            ["go", m] => Cb::Start(ModelId::parse(m).ok()?),
            ["v", d, f, v] => Cb::Pick {
                draft: DraftId::parse(d)?,
                field: u8::try_from(num(f)?).ok()?,
                value: u8::try_from(num(v)?).ok()?,
            },
            ["yn", d, "0"] => Cb::YesNo {
                draft: DraftId::parse(d)?,
                value: false,
            },
            ["yn", d, "1"] => Cb::YesNo {
                draft: DraftId::parse(d)?,
                value: true,
            },
            ["skip", d] => Cb::Skip(DraftId::parse(d)?),
            ["done", d] => Cb::Done(DraftId::parse(d)?),
            ["back", d] => Cb::Back(DraftId::parse(d)?),
            ["adv", d] => Cb::Advanced(DraftId::parse(d)?),
            ["ok", d] => Cb::Confirm(DraftId::parse(d)?),
            ["top"] => Cb::TopUp,
            ["st", n] => Cb::Stars(u32::try_from(num(n)?).ok()?),
            ["stc"] => Cb::StarsCustom,
            ["a", "stats"] => Cb::Admin(AdminCb::Stats),
            ["a", "failed"] => Cb::Admin(AdminCb::Failed),
            ["a", "maint"] => Cb::Admin(AdminCb::Maintenance),
            ["a", "bcast"] => Cb::Admin(AdminCb::Broadcast),
            ["a", "u", u] => Cb::Admin(AdminCb::User(UserId(id(u)?))),
            ["a", "blk", u] => Cb::Admin(AdminCb::Block(UserId(id(u)?))),
            ["a", "unb", u] => Cb::Admin(AdminCb::Unblock(UserId(id(u)?))),
            _ => return None,
        };
        // Canonical form only: `1:hist:007` or `1:v:0A:..` are not ours.
        (cb.encode() == data).then_some(cb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Cb> {
        let d = DraftId(u64::MAX);
        let m = ModelId::parse("wan/2-2-a14b-speech-to-video-turbo").expect("model id");
        let mut v = vec![
            Cb::Noop,
            Cb::Menu,
            Cb::Help,
            Cb::Balance,
            Cb::Languages,
            Cb::Lang(Lang::Ru),
            Cb::Lang(Lang::En),
            Cb::Cancel,
            Cb::History(u32::MAX),
            Cb::Resend(GenerationId(i64::MAX)),
            Cb::Repeat(GenerationId(0)),
            Cb::Model(m.clone()),
            Cb::Start(m),
            Cb::Pick {
                draft: d,
                field: 255,
                value: 255,
            },
            Cb::YesNo {
                draft: d,
                value: true,
            },
            Cb::YesNo {
                draft: DraftId(0),
                value: false,
            },
            Cb::Skip(d),
            Cb::Done(d),
            Cb::Back(d),
            Cb::Advanced(d),
            Cb::Confirm(d),
            Cb::TopUp,
            Cb::Stars(100_000),
            Cb::StarsCustom,
            Cb::Admin(AdminCb::Stats),
            Cb::Admin(AdminCb::Failed),
            Cb::Admin(AdminCb::Maintenance),
            Cb::Admin(AdminCb::Broadcast),
            Cb::Admin(AdminCb::User(UserId(i64::MAX))),
            Cb::Admin(AdminCb::Block(UserId(1))),
            Cb::Admin(AdminCb::Unblock(UserId(1))),
        ];
        v.extend(GenerationType::ALL.into_iter().map(Cb::Type));
        v
    }

    #[test]
    fn every_button_round_trips_within_telegrams_limit() {
        for cb in samples() {
            let data = cb.encode();
            assert!(data.len() <= MAX_LEN, "{data}");
            assert!(data.starts_with(PREFIX));
            assert_eq!(Cb::parse(&data), Some(cb), "{data}");
        }
    }

    #[test]
    fn the_result_keyboard_payloads_are_understood() {
        assert_eq!(Cb::parse("1:menu"), Some(Cb::Menu));
        assert_eq!(Cb::parse("1:hist:0"), Some(Cb::History(0)));
        assert_eq!(Cb::parse("1:rep:42"), Some(Cb::Repeat(GenerationId(42))));
    }

    #[test]
    fn forged_or_foreign_data_is_refused() {
        for bad in [
            "",
            "1:",
            "2:menu",
            "menu",
            "1:menu:",
            "1:menu:x",
            "1:hist:-1",
            "1:hist:007",
            "1:hist:99999999999999999999",
            "1:rep:9223372036854775808",
            "1:v:zz:0:0",
            "1:v:0A:0:0",
            "1:v:a:256:0",
            "1:v:a:0",
            "1:yn:a:2",
            "1:lang:de",
            "1:t:nonsense",
            "1:m:",
            "1:a:u:abc",
            "1:\u{0}",
            "1:v:ffffffffffffffffff:0:0",
        ] {
            assert_eq!(Cb::parse(bad), None, "{bad:?}");
        }
        let long = format!("1:m:{}", "a".repeat(80));
        assert_eq!(Cb::parse(&long), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 58) as usize;
            let s: String = (0..len)
                .map(|i| {
                    let b = (seed >> (i % 8 * 8)) as u8;
                    b"1:vmenuhistrepyn0123456789abcdef/-"[usize::from(b) % 34] as char
                })
                .collect();
            let _ = Cb::parse(&s);
        }
    }
}
