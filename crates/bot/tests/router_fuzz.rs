//! Random and mutated updates through the router (see `fuzz/mod.rs`): no
//! panic, every callback query answered once.
//!
//! The suite runs `FUZZ_UPDATES` updates (default 10,000, about 20 s in a
//! debug build); the 100,000-update run is the `router_fuzz` bench
//! (`cargo bench -p kiebot-bot --bench router_fuzz`), which runs the same
//! generator and checks in a release build.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fuzz;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_updates_never_panic_and_every_press_is_answered() {
    let n: usize = std::env::var("FUZZ_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b69_6562);
    let report = fuzz::run(n, seed, 4, 25).await;
    eprintln!("{report:?}");
    assert_eq!(report.updates, n);
    // The mix is press-heavy, so the answer check means something.
    assert!(report.presses * 4 > n, "{report:?}");
}
