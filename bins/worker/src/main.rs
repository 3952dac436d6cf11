//! `kiebot-worker`: one stateless worker of a fleet.
//!
//! Runs every queue's worker and the reconciler against PostgreSQL and Redis,
//! plus the ops HTTP server (health, readiness, metrics) on `OPS_ADDR` (and
//! `/healthz` on `HTTP_ADDR`). Run
//! as many as the load needs; they share nothing but the database and the
//! queue. SIGTERM stops fetching and drains in-flight jobs.

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
            eprintln!("kiebot-worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match settings.mode() {
        Ok(Mode::Fleet) => {}
        Ok(Mode::Embedded) => {
            eprintln!(
                "kiebot-worker: DATABASE_URL/REDIS_URL: kiebot-worker runs in the fleet (postgres:// and redis://); use `kiebot run` for one process"
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("kiebot-worker: {e}");
            return ExitCode::FAILURE;
        }
    }
    kiebot_app::run_process(
        "kiebot-worker",
        settings,
        Parts {
            bot: false,
            workers: true,
        },
    )
}
