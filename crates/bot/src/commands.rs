//! The bot's commands: one enum and one table of every command, users' and
//! admins' alike, with who may use it and whether it is registered with
//! Telegram (`setMyCommands`, descriptions from the text catalogue).
//!
//! Handlers match on [`Command`], never on strings. Parsing follows what
//! Telegram clients send: `/name args`, the name case-insensitive and
//! possibly suffixed with `@botname` (ignored, as the bot only talks in
//! private chats), the arguments the rest of the text, trimmed.
//! teloxide's `BotCommands` derive is not used: it cannot ignore case, and
//! the admin commands take free-form arguments each parses itself.

use std::str::FromStr;

use kiebot_store::Permission;

use crate::admin::Need;

/// A command the bot understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Command {
    /// `/start [payload]`: the menu, or the language picker at first contact.
    Start,
    /// `/balance`.
    Balance,
    /// `/history`.
    History,
    /// `/promo CODE`.
    Promo,
    /// `/language`.
    Language,
    /// `/cancel`: leaves the current dialogue.
    Cancel,
    /// `/help`.
    Help,
    /// `/menu`: the main menu, leaving the current dialogue.
    Menu,
    /// `/admin`: the admin screen.
    Admin,
    /// `/stats`.
    Stats,
    /// `/failed`.
    Failed,
    /// `/user ID`.
    User,
    /// `/resend GEN_ID`.
    Resend,
    /// `/block ID`.
    Block,
    /// `/unblock ID`.
    Unblock,
    /// `/adjust ID AMOUNT REASON`.
    Adjust,
    /// `/refund CHARGE_ID`.
    Refund,
    /// `/broadcast TEXT`.
    Broadcast,
    /// `/maintenance`.
    Maintenance,
    /// `/budget ID AMOUNT|off REASON`.
    Budget,
    /// `/grant ID PERMISSION`.
    Grant,
    /// `/revoke ID PERMISSION`.
    Revoke,
    /// `/admins`.
    Admins,
}

/// Who may use a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everyone.
    Anyone,
    /// Admins, with what the admin needs besides.
    Staff(Need),
}

/// One row of [`TABLE`].
struct Spec {
    command: Command,
    name: &'static str,
    access: Access,
    /// Registered with Telegram (`setMyCommands`) for the command menu.
    registered: bool,
}

const fn user(command: Command, name: &'static str, registered: bool) -> Spec {
    Spec {
        command,
        name,
        access: Access::Anyone,
        registered,
    }
}

const fn staff(command: Command, name: &'static str, need: Need) -> Spec {
    Spec {
        command,
        name,
        access: Access::Staff(need),
        registered: false,
    }
}

const SUPPORT: Need = Need::Permission(Permission::Support);
const FINANCE: Need = Need::Permission(Permission::Finance);

/// Every command, in the order Telegram's command menu shows the
/// registered ones.
const TABLE: [Spec; 23] = [
    user(Command::Start, "start", true),
    user(Command::Balance, "balance", true),
    user(Command::History, "history", true),
    user(Command::Promo, "promo", true),
    user(Command::Language, "language", true),
    user(Command::Cancel, "cancel", true),
    user(Command::Help, "help", true),
    user(Command::Menu, "menu", false),
    staff(Command::Admin, "admin", Need::Admin),
    staff(Command::Stats, "stats", SUPPORT),
    staff(Command::Failed, "failed", SUPPORT),
    staff(Command::User, "user", SUPPORT),
    staff(Command::Resend, "resend", SUPPORT),
    staff(Command::Block, "block", SUPPORT),
    staff(Command::Unblock, "unblock", SUPPORT),
    staff(Command::Adjust, "adjust", FINANCE),
    staff(Command::Refund, "refund", FINANCE),
    staff(
        Command::Broadcast,
        "broadcast",
        Need::Permission(Permission::Broadcast),
    ),
    staff(
        Command::Maintenance,
        "maintenance",
        Need::Permission(Permission::Maintenance),
    ),
    staff(Command::Budget, "budget", Need::Owner),
    staff(Command::Grant, "grant", Need::Owner),
    staff(Command::Revoke, "revoke", Need::Owner),
    staff(Command::Admins, "admins", Need::Owner),
];

impl Command {
    fn spec(self) -> &'static Spec {
        TABLE
            .iter()
            .find(|s| s.command == self)
            .expect("every command has a row in the table")
    }

    /// The name typed after the slash.
    pub(crate) fn name(self) -> &'static str {
        self.spec().name
    }

    /// Who may use it.
    pub(crate) fn access(self) -> Access {
        self.spec().access
    }

    /// What an admin needs for it (`None`: a user command).
    pub(crate) fn need(self) -> Option<Need> {
        match self.access() {
            Access::Anyone => None,
            Access::Staff(need) => Some(need),
        }
    }

    /// The commands registered with Telegram, in menu order.
    pub(crate) fn registered() -> impl Iterator<Item = Command> {
        TABLE.iter().filter(|s| s.registered).map(|s| s.command)
    }

    /// Every command.
    #[cfg(test)]
    fn all() -> impl Iterator<Item = Command> {
        TABLE.iter().map(|s| s.command)
    }

    /// A command message's text without its slash (`name[@bot] args`): the
    /// command and its trimmed arguments; `None` for an unknown command.
    pub(crate) fn parse(text: &str) -> Option<(Command, &str)> {
        let (name, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let name = name.split('@').next().unwrap_or("");
        Some((name.parse().ok()?, args.trim()))
    }
}

/// A name that is no command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownCommand;

impl FromStr for Command {
    type Err = UnknownCommand;

    /// By name, ignoring case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        TABLE
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.command)
            .ok_or(UnknownCommand)
    }
}

#[cfg(test)]
mod tests {
    use kiebot_tg::texts::{self, Lang};

    use super::*;

    #[test]
    fn every_command_has_one_row_and_parses_back_from_its_name() {
        assert_eq!(Command::all().count(), TABLE.len());
        for c in Command::all() {
            assert_eq!(TABLE.iter().filter(|s| s.command == c).count(), 1, "{c:?}");
            assert_eq!(c.name().parse::<Command>(), Ok(c));
            assert_eq!(c.name().to_uppercase().parse::<Command>(), Ok(c));
        }
    }

    #[test]
    fn parsing_ignores_case_and_a_bot_suffix_and_trims_the_arguments() {
        assert_eq!(
            Command::parse("Start@kiebot_bot ref_42 "),
            Some((Command::Start, "ref_42"))
        );
        assert_eq!(
            Command::parse("adjust\t300  -5 a reason"),
            Some((Command::Adjust, "300  -5 a reason"))
        );
        assert_eq!(Command::parse("MENU"), Some((Command::Menu, "")));
        assert_eq!(Command::parse("nonsense 1"), None);
        assert_eq!(Command::parse(""), None);
    }

    #[test]
    fn registered_commands_are_user_commands_described_in_both_languages() {
        let registered: Vec<Command> = Command::registered().collect();
        assert!(registered.contains(&Command::Start));
        for c in registered {
            assert_eq!(c.access(), Access::Anyone, "{c:?}");
            for lang in Lang::ALL {
                assert!(
                    texts::command_description(lang, c.name()).is_some(),
                    "{c:?} {lang:?}"
                );
            }
        }
    }
}
