//! `kiebot-bot`: the front of a fleet.
//!
//! Takes Telegram updates (long polling, or the webhook with `BOT_MODE=webhook`),
//! validates, holds and enqueues; serves KIE callbacks and the webhook on
//! `HTTP_ADDR` (public), health, readiness, metrics and the dashboard on
//! `OPS_ADDR` (private). It never calls KIE's generation
//! endpoints: `kiebot-worker` processes do.

use std::process::ExitCode;

use kiebot_app::Parts;
use kiebot_config::{Mode, Settings};

// Handlers allocate many short-lived buffers (JSON, keyboards, HTTP bodies)
// across threads; mimalloc keeps that off glibc malloc's arena locks.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    kiebot_app::run_process(
        "kiebot-bot",
        settings,
        Parts {
            bot: true,
            workers: false,
        },
    )
}
