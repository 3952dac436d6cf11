//! `kiebot-bot`: the front of a fleet.
//!
//! Takes Telegram updates (long polling, or the webhook with `BOT_MODE=webhook`),
//! validates, holds and enqueues; serves KIE callbacks, health, readiness,
//! metrics and the dashboard on `HTTP_ADDR`. It never calls KIE's generation
//! endpoints: `kiebot-worker` processes do.

use std::process::ExitCode;

use kiebot_app::{Parts, run};
use kiebot_config::{Mode, Settings};

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiebot-bot: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = settings.mode().and_then(|m| match m {
        Mode::Fleet => Ok(()),
        Mode::Embedded => Err(kiebot_config::ConfigError {
            var: "DATABASE_URL",
            reason: "kiebot-bot is the fleet's front (postgres:// and REDIS_URL); use `kiebot run` for one process".into(),
        }),
    }) {
        eprintln!("kiebot-bot: configuration error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = settings.require_telegram_token() {
        eprintln!("kiebot-bot: configuration error: {e}");
        return ExitCode::from(2);
    }
    let _telemetry = match kiebot_telemetry::init(
        "kiebot-bot",
        settings.log_format,
        settings.otel_endpoint.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kiebot-bot: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiebot-bot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(
        settings,
        Parts {
            bot: true,
            workers: false,
        },
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kiebot-bot stopped");
            eprintln!("kiebot-bot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
