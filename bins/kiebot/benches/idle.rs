//! An idle embedded `kiebot run`, and how soon a job is picked up.
//!
//! `cargo bench -p kiebot --bench idle` starts the real binary in embedded
//! mode (SQLite, no Redis) against the fake Bot API and the fake KIE, lets it
//! settle, and reads its CPU time from /proc over `BENCH_SECS` (default 60)
//! of doing nothing: the share of one core it spends. Then, in-process over
//! the same kind of queue, it confirms `BENCH_PICKUPS` generations (default
//! 30) one at a time, at random moments, and reports how long each waited
//! between its confirmation and its task's creation at the (instant) fake
//! KIE: the queue's pick-up latency.
//!
//! Linux only (it reads /proc).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use kiebot_app::harness::{Flavor, Harness};
use kiebot_domain::{GenerationStatus, Money};
use rand::Rng;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields, 12th and 13th after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = env_u64("BENCH_SECS", 60);
    let pickups = env_u64("BENCH_PICKUPS", 30);
    let bin = std::env::var("BENCH_KIEBOT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kiebot").to_owned());

    // Idle: the real binary, doing nothing.
    let mut h = Harness::start(Flavor::Embedded).await;
    let mut child = tokio::process::Command::new(&bin)
        .arg("run")
        .envs(h.process_env())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start kiebot run");
    let pid = child.id().expect("a running child");
    // Start-up (migrations, first ticks, the first long poll) is not idling.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kiebot run exited during start-up"
    );
    let hz = clock_ticks_per_second();
    let before = cpu_ticks(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ticks = cpu_ticks(pid) - before;
    let wall = started.elapsed().as_secs_f64();
    let share = ticks as f64 / hz as f64 / wall * 100.0;
    println!(
        "idle: kiebot run (embedded) used {share:.2} % of one core over {wall:.0} s ({ticks} ticks at {hz} Hz)"
    );
    child.kill().await.ok();

    // Pick-up: confirmations one at a time, at random moments.
    h.start_workers(4);
    let mut waits = Vec::new();
    for _ in 0..pickups {
        let pause = rand::rng().random_range(0..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let user = h.funded_user(Money::from_minor(10_000)).await;
        let id = h
            .confirm(user, "google/nano-banana", Money::from_minor(100))
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let g = loop {
            let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
            if g.status != GenerationStatus::Pending || Instant::now() > deadline {
                break g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let submitted = g.submitted_at.expect("the task was created at KIE");
        let waited = u64::try_from(submitted - g.created_at).unwrap_or(0);
        waits.push(Duration::from_millis(waited));
    }
    waits.sort();
    println!(
        "pick-up: {} confirmations, confirmed to created at KIE p50 {:?} p90 {:?} max {:?}",
        waits.len(),
        percentile(&waits, 0.5),
        percentile(&waits, 0.9),
        waits[waits.len() - 1]
    );
    h.cleanup().await;
}
