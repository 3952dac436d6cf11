//! `kiebot`: the all-in-one binary.
//!
//! Subcommands wire library crates together; the work itself lives in them.
//! Configuration comes from the environment (see `kiebot-config`); a bad value
//! stops the command with one line naming the variable.

mod admin;
mod catalog;
mod out;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiebot_config::{LogFormat, Settings};

use kiebot_domain::{Family, Money, UserId};

#[derive(Parser)]
#[command(
    name = "kiebot",
    version,
    about = "AI generations for Telegram, paid from a prepaid balance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: the bot, the workers and the ops HTTP
    /// server (the embedded mode by default).
    Run,
    /// Play a scripted user through a whole purchase against in-process fake
    /// Telegram and KIE servers; needs no token. Exits 0 only if the results
    /// were delivered and the ledger is clean. Only in a build with the
    /// `demo` feature (`cargo run -p kiebot --features demo -- demo`).
    Demo,
    /// Apply database migrations to DATABASE_URL.
    Migrate,
    /// The model catalog: list it (one JSON object per model and line), check
    /// it against KIE's catalogue, draft entries, take models off sale.
    Catalog {
        /// Include models that are not sold ("coming soon").
        #[arg(long)]
        all: bool,
        #[command(subcommand)]
        command: Option<CatalogCommand>,
    },
    /// Operator commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Compare every sold model with KIE's catalogue API (model list, each
    /// schema and price): one line per finding naming model and field; exit 1
    /// on any error.
    Check {
        /// One JSON document instead of lines.
        #[arg(long)]
        json: bool,
        /// Least milliseconds between two requests (KIE allows one per second).
        #[arg(long, default_value_t = 1100)]
        pace_ms: u64,
        /// Also take off sale (in DATABASE_URL) the models whose every request
        /// would fail.
        #[arg(long)]
        hold: bool,
    },
    /// Print a catalog entry drafted from KIE's schema of a model.
    Import {
        /// KIE's model string.
        model: String,
        /// The KIE API that serves it: market, veo or suno.
        #[arg(long, default_value = "market")]
        family: String,
    },
    /// Take a model off sale (hidden from menus, confirmations refused).
    Hold {
        /// The catalog id.
        model: String,
        /// Why (shown to operators).
        #[arg(long, default_value = "taken off sale by an operator")]
        reason: String,
    },
    /// Put a model back on sale.
    Release {
        /// The catalog id.
        model: String,
    },
    /// List the models off sale.
    Held,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Recompute every wallet from its ledger entries; exit 1 on drift.
    LedgerCheck,
    /// Credit a user's balance (audited).
    Grant {
        /// The user's Telegram id.
        telegram_id: i64,
        /// Amount in the operator's currency, like 150 or 150.50.
        amount: String,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "granted from the command line")]
        reason: String,
        /// Idempotency key: repeating a grant with the same key credits once.
        #[arg(long)]
        key: Option<String>,
    },
}

// Handlers allocate many short-lived buffers (JSON, keyboards, HTTP bodies)
// across threads; mimalloc keeps that off glibc malloc's arena locks.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiebot: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The demo prints a conversation; logs would drown it.
    let _telemetry = if matches!(cli.command, Command::Demo) {
        init_logging(LogFormat::Pretty, "error");
        None
    } else if matches!(cli.command, Command::Run) {
        match kiebot_telemetry::init(
            "kiebot",
            settings.log_format,
            settings.otel_endpoint.as_deref(),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("kiebot: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        init_logging(settings.log_format, "warn,kiebot=info");
        None
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiebot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiebot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's fakes are test servers: a production build leaves them out.
#[cfg(feature = "demo")]
async fn demo() -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    let report = kiebot_app::demo::run(&mut out).await?;
    crate::out::say(format_args!(
        "demo: {} results delivered; charged {}; balance {} -> {}; ledger clean",
        report.delivered, report.charged, report.balance_before, report.balance_after
    ));
    Ok(ExitCode::SUCCESS)
}

/// Without the `demo` feature: says how to get a build that has it.
#[cfg(not(feature = "demo"))]
async fn demo() -> anyhow::Result<ExitCode> {
    eprintln!("{DEMO_MISSING}");
    Ok(ExitCode::from(2))
}

/// What `kiebot demo` says in a build without the demo.
#[cfg(not(feature = "demo"))]
const DEMO_MISSING: &str = "kiebot: this binary was built without the demo (its fake Telegram and KIE servers stay out of production builds); run it with `cargo run -p kiebot --features demo -- demo`";

async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run => {
            settings.require_telegram_token()?;
            kiebot_app::run(
                settings,
                kiebot_app::Parts {
                    bot: true,
                    workers: true,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo().await,
        Command::Migrate => {
            let store = admin::open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            crate::out::say(format_args!(
                "migrations applied to {}",
                redact_url(&settings.database_url)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog { all, command } => match command {
            None => catalog::list(&settings, all),
            Some(CatalogCommand::Check {
                json,
                pace_ms,
                hold,
            }) => catalog::run_check(&settings, json, Duration::from_millis(pace_ms), hold).await,
            Some(CatalogCommand::Import { model, family }) => {
                let family = match family.as_str() {
                    "market" => Family::Market,
                    "veo" => Family::Veo,
                    "suno" => Family::Suno,
                    other => anyhow::bail!("--family {other:?}: expected market, veo or suno"),
                };
                catalog::import(&settings, &model, family).await
            }
            Some(CatalogCommand::Hold { model, reason }) => {
                catalog::hold(&settings, &model, &reason).await
            }
            Some(CatalogCommand::Release { model }) => catalog::release(&settings, &model).await,
            Some(CatalogCommand::Held) => catalog::held(&settings).await,
        },
        Command::Admin {
            command: AdminCommand::LedgerCheck,
        } => admin::ledger_check(&settings).await,
        Command::Admin {
            command:
                AdminCommand::Grant {
                    telegram_id,
                    amount,
                    reason,
                    key,
                },
        } => {
            let amount: Money = amount
                .parse()
                .with_context(|| format!("amount {amount:?}"))?;
            admin::grant(&settings, UserId(telegram_id), amount, &reason, key).await
        }
    }
}

/// Hides a password in a database URL before printing it.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_in_printed_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://kiebot.db"), "sqlite://kiebot.db");
    }
}
