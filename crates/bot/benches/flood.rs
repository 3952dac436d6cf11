//! One user floods the front bot with 1,000 updates at once; another user's
//! reply latency (update queued at the Bot API to the bot's reply reaching
//! it) with and without the flood, through long polling on the embedded
//! setup (SQLite, the fake Bot API on loopback).
//!
//! Phases, each `BENCH_SAMPLES` requests of "the other user", one after
//! another with `BENCH_GAP_MS` between them. The requests go round-robin
//! over `BENCH_OTHERS` users (default 50), each well within the flood
//! limits, as people are; one user sending every 10 ms would be a flood
//! itself:
//! - `quiet`: nobody else;
//! - `flood`: the flooder's 1,000 updates queued together with the first
//!   request (flood control at its defaults, 60/min, burst 20);
//! - `flood-uncontrolled`: the same with flood control off, for comparison.
//!
//! ```sh
//! cargo bench -p kiebot-bot --bench flood
//! BENCH_SAMPLES=500 BENCH_FLOOD=5000 cargo bench -p kiebot-bot --bench flood
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{App, Options};
use kiebot_bot::FloodConfig;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Measured {
    latencies: Vec<Duration>,
    flooder_handled: usize,
    notices: usize,
    elapsed: Duration,
}

async fn phase(
    flood: Option<FloodConfig>,
    flood_n: usize,
    samples: usize,
    gap: Duration,
    others: i64,
) -> Measured {
    let config = flood.unwrap_or_else(FloodConfig::off);
    let app = App::with(Options {
        flood: config,
        ..Options::default()
    })
    .await;
    let flooder = 900_i64;
    let other_ids: Vec<i64> = (0..others).map(|i| 1_000 + i).collect();
    // Everyone exists already, as regular users do.
    let everyone: Vec<i64> = std::iter::once(flooder)
        .chain(other_ids.iter().copied())
        .collect();
    for u in &everyone {
        app.tg.send_text(*u, "/start");
    }
    let mut events = app.tg.call_events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let polling = tokio::spawn(kiebot_bot::run_polling(app.deps.clone(), async {
        let _ = stopped.await;
    }));
    // Wait for both /start replies before measuring.
    let mut started = std::collections::HashSet::new();
    while started.len() < everyone.len() {
        let e = events.recv().await.unwrap();
        if let Some(c) = e.chat_id.filter(|c| everyone.contains(c)) {
            started.insert(c);
        }
    }
    while events.try_recv().is_ok() {}

    let t0 = Instant::now();
    if flood.is_some() || flood_n > 0 {
        for _ in 0..flood_n {
            app.tg.send_text(flooder, "/help");
        }
    }
    let mut latencies = Vec::with_capacity(samples);
    let mut flooder_handled = 0;
    for i in 0..samples {
        let other = other_ids[i % other_ids.len()];
        let sent = Instant::now();
        app.tg.send_text(other, "/help");
        loop {
            let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .expect("a reply within a minute")
                .unwrap();
            match e.chat_id {
                Some(c) if c == other && e.method == "sendMessage" => {
                    latencies.push(e.at.saturating_duration_since(sent));
                    break;
                }
                Some(c) if c == flooder && e.method == "sendMessage" => flooder_handled += 1,
                _ => {}
            }
        }
        tokio::time::sleep(gap).await;
    }
    let elapsed = t0.elapsed();
    let _ = stop.send(());
    polling.await.unwrap();
    while let Ok(e) = events.try_recv() {
        if e.chat_id == Some(flooder) && e.method == "sendMessage" {
            flooder_handled += 1;
        }
    }
    let notices = app
        .tg
        .messages_to(flooder)
        .iter()
        .filter(|m| m.text.as_deref().is_some_and(|t| t.contains("too fast")))
        .count();
    Measured {
        latencies,
        flooder_handled,
        notices,
        elapsed,
    }
}

fn report(name: &str, flood_n: usize, mut m: Measured) {
    m.latencies.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{name:<20} flood {flood_n:>5} updates | other user: {} replies, p50 {}, p99 {}, max {} | flooder: {} replies (notices {}) | {:.1} s",
        m.latencies.len(),
        ms(pct(&m.latencies, 0.50)),
        ms(pct(&m.latencies, 0.99)),
        ms(*m.latencies.last().unwrap_or(&Duration::ZERO)),
        m.flooder_handled,
        m.notices,
        m.elapsed.as_secs_f64(),
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let samples = env_usize("BENCH_SAMPLES", if bench { 300 } else { 5 });
    let flood_n = env_usize("BENCH_FLOOD", if bench { 1000 } else { 50 });
    let gap = Duration::from_millis(env_usize("BENCH_GAP_MS", 10) as u64);
    let others = env_usize("BENCH_OTHERS", 50) as i64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let quiet = phase(None, 0, samples, gap, others).await;
        report("quiet", 0, quiet);
        let flood = phase(Some(FloodConfig::default()), flood_n, samples, gap, others).await;
        report("flood", flood_n, flood);
        let open = phase(None, flood_n, samples, gap, others).await;
        report("flood-uncontrolled", flood_n, open);
    });
}
