//! 100,000 random and mutated updates through the router against the fake
//! Bot API (the generator and checks of `tests/fuzz/mod.rs`): no panic,
//! every callback query answered once. Prints the run's figures.
//!
//! ```sh
//! cargo bench -p kiebot-bot --bench router_fuzz
//! FUZZ_UPDATES=20000 FUZZ_SEED=7 cargo bench -p kiebot-bot --bench router_fuzz
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent:
    // stay quick then.
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("FUZZ_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 100_000 } else { 200 });
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b69_6562);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(fuzz::run(n, seed, 8, 50));
    let secs = report.elapsed.as_secs_f64();
    println!(
        "router_fuzz: {} updates ({} presses, {} not updates) in {:.1} s ({:.0} updates/s): no panic, every press answered once",
        report.updates,
        report.presses,
        report.unparsed,
        secs,
        report.updates as f64 / secs
    );
}
