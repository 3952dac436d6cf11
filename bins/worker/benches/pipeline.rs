//! Pipeline benchmark: drives generations from confirmation to delivery
//! through the fleet (PostgreSQL + Redis + `kiebot-worker` processes) and the
//! embedded mode (SQLite + in-process workers), against the fake KIE and Bot
//! API at zero latency, and prints what it measured.
//!
//! ```sh
//! cargo bench -p kiebot-worker-bin --bench pipeline
//! BENCH_N=5000 BENCH_MODE=fleet BENCH_WORKERS=2 cargo bench -p kiebot-worker-bin --bench pipeline
//! BENCH_INFLIGHT=100000 BENCH_MODE=fleet cargo bench -p kiebot-worker-bin --bench pipeline
//! BENCH_BACKLOG=1 BENCH_N=6000 cargo bench -p kiebot-worker-bin --bench pipeline
//! ```
//!
//! Figures: generations per second (first confirmation to last delivery),
//! p50/p99 confirm-to-delivered latency, KIE calls per generation, and the
//! peak resident memory (VmHWM) of each worker process.

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiebot_app::harness::{Flavor, Harness, test_redis_url};
use kiebot_domain::{GenerationStatus, Money, UserId};
use kiebot_jobs::Job;
use kiebot_testkit::kie::{Endpoint, Outcome};
use kiebot_worker::PipelineConfig;

// The allocator the shipped binaries use (the embedded run is in-process).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_pipeline() -> PipelineConfig {
    PipelineConfig {
        poll_first: Duration::ZERO,
        poll_max: Duration::from_secs(2),
        lease: Duration::from_secs(30),
        pending_grace: Duration::from_secs(2),
        reconcile_batch: 2000,
        // The fake finishes every task at once: poll as soon as possible.
        estimate_runs: false,
        ..PipelineConfig::default()
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Worker processes, killed when dropped (also when the benchmark panics,
/// so none is left running against a dropped database).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl std::ops::Deref for Workers {
    type Target = [Child];
    fn deref(&self) -> &[Child] {
        &self.0
    }
}

fn spawn_workers(h: &Harness, n: usize, concurrency: usize) -> Workers {
    let worker_log = std::env::var("BENCH_WORKER_LOG").ok();
    Workers(
        (0..n)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_kiebot-worker"))
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .envs(h.process_env())
                    .env("POLL_INITIAL_MS", "0")
                    .env("JOB_LEASE_SECS", "30")
                    .env("WORKER_CONCURRENCY", concurrency.to_string())
                    // BENCH_WORKER_LOG=info (a RUST_LOG filter) shows the
                    // workers' logs on the bench's stdout.
                    .env("RUST_LOG", worker_log.as_deref().unwrap_or("error"))
                    .stdout(if worker_log.is_some() {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    })
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("kiebot-worker starts")
            })
            .collect(),
    )
}

/// Confirms `n` generations from `parallel` concurrent "front" tasks, each a
/// create-with-hold transaction plus an enqueue, as the bot does.
async fn confirm_many(h: &Arc<Harness>, users: &[UserId], n: usize, parallel: usize) {
    let per = n.div_ceil(parallel);
    let mut tasks = vec![];
    for p in 0..parallel {
        let h = h.clone();
        let users = users.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (p * per)..((p + 1) * per).min(n) {
                let user = users[i % users.len()];
                let id = h
                    .create(
                        user,
                        "google/nano-banana",
                        Money::from_minor(100),
                        &format!("bench-{i}"),
                    )
                    .await;
                // As in the bot: the row is committed, so a failed push is
                // left to the reconciler.
                if let Err(e) = h.ctx.queues.push(Job::Submit(id)).await {
                    eprintln!("enqueue failed, left to the reconciler: {e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("confirm task");
    }
}

struct Figures {
    rate: f64,
    p50_ms: i64,
    p99_ms: i64,
    kie_calls_per_gen: f64,
}

async fn figures(h: &Harness, n: usize) -> Figures {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT created_at, delivered_at FROM generations WHERE delivered_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(h.ctx.store.pool())
    .await
    .expect("timings");
    let first = rows.iter().map(|r| r.0).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.1).max().unwrap_or(0);
    let mut lat: Vec<i64> = rows.iter().map(|r| r.1 - r.0).collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let calls = h.kie.calls(Endpoint::CreateTask) + h.kie.calls(Endpoint::RecordInfo);
    Figures {
        rate: rows.len() as f64 / ((last - first).max(1) as f64 / 1000.0),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        kie_calls_per_gen: calls as f64 / n as f64,
    }
}

async fn run(flavor: Flavor, n: usize) {
    let workers = env_usize("BENCH_WORKERS", 2);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let mut h = Harness::with_settings(
        flavor,
        bench_pipeline(),
        test_redis_url(),
        &[("DELIVERY_RATE_PER_SECOND", "100000")],
    )
    .await;
    h.kie.set_default_outcome(Outcome::succeed(1));
    let mut users = vec![];
    for _ in 0..(n / 2).clamp(1, 5000) {
        users.push(h.funded_user(Money::from_minor(1_000_000)).await);
    }
    // BENCH_BACKLOG=1: confirm everything first, then start the workers, so
    // the rate is the workers' own (the front's confirmations, which share
    // these two cores, are not in it); latency then includes the wait.
    let backlog = env_usize("BENCH_BACKLOG", 0) == 1;
    let mut children = Workers(vec![]);
    let mut h = Arc::new(h);
    let started = Instant::now();
    if backlog {
        confirm_many(&h, &users, n, 16).await;
    }
    let workers_at = kiebot_worker::now_ms();
    let workers_started = Instant::now();
    match flavor {
        Flavor::Fleet => children = spawn_workers(&h, workers, concurrency),
        Flavor::Embedded => Arc::get_mut(&mut h)
            .expect("no confirmation task holds the harness")
            .start_workers(concurrency),
    }
    if !backlog {
        confirm_many(&h, &users, n, 16).await;
    }
    let confirmed = started.elapsed();
    h.wait_settled(Duration::from_secs(1800))
        .await
        .expect("every generation settles");
    let wall = started.elapsed();
    if backlog {
        let last: i64 = sqlx::query_scalar("SELECT MAX(delivered_at) FROM generations")
            .fetch_one(h.ctx.store.pool())
            .await
            .unwrap();
        println!(
            "{flavor:?}: backlog of {n} drained by the workers at {:.0} generations/s ({:.1}s from worker start)",
            n as f64 / ((last - workers_at).max(1) as f64 / 1000.0),
            workers_started.elapsed().as_secs_f64()
        );
    }
    let f = figures(&h, n).await;
    let rss: Vec<String> = match flavor {
        Flavor::Fleet => children
            .iter()
            .map(|c| format!("{} MiB", vm_hwm_kib(c.id()).unwrap_or(0) / 1024))
            .collect(),
        Flavor::Embedded => vec![format!(
            "{} MiB (bench process incl. fakes)",
            vm_hwm_kib(std::process::id()).unwrap_or(0) / 1024
        )],
    };
    let delivered = h.ctx.store.generations().count_by_status().await.unwrap();
    println!(
        "{flavor:?}: n={n} workers={} concurrency={concurrency}: {:.0} generations/s, p50 {} ms, p99 {} ms confirm-to-delivered, {:.2} KIE calls/generation, confirm phase {:.1}s, wall {:.1}s, worker peak RSS {}",
        if flavor == Flavor::Fleet { workers } else { 1 },
        f.rate,
        f.p50_ms,
        f.p99_ms,
        f.kie_calls_per_gen,
        confirmed.as_secs_f64(),
        wall.as_secs_f64(),
        rss.join(", ")
    );
    assert!(
        delivered
            .iter()
            .any(|(s, c)| *s == GenerationStatus::Delivered && *c as usize == n),
        "{delivered:?}"
    );
    h.assert_money_consistent().await;
    drop(children);
    if let Ok(h) = Arc::try_unwrap(h) {
        h.cleanup().await;
    }
}

/// 100,000 generations in flight at once: KIE holds every task for a while,
/// so all of them are submitted and polled before any finishes. Reports how
/// the database-driven polls stay bounded and the workers' memory.
async fn in_flight(n: usize) {
    let workers = env_usize("BENCH_WORKERS", 2);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let hold = Duration::from_secs(env_usize("BENCH_HOLD_SECS", 120) as u64);
    let cfg = PipelineConfig {
        poll_first: Duration::from_secs(3),
        poll_max: Duration::from_secs(30),
        ..bench_pipeline()
    };
    let mut h = Harness::with_settings(
        Flavor::Fleet,
        cfg,
        test_redis_url(),
        &[("DELIVERY_RATE_PER_SECOND", "100000")],
    )
    .await;
    h.kie.set_default_outcome(Outcome::succeed_after(hold, 1));
    let mut users = vec![];
    for _ in 0..5000 {
        users.push(h.funded_user(Money::from_minor(100_000_000)).await);
    }
    let children = spawn_workers(&h, workers, concurrency);
    // Worker processes read POLL_INITIAL_MS from the environment: give them
    // production-like polling for this run.
    let h = Arc::new(h);
    let started = Instant::now();
    confirm_many(&h, &users, n, 16).await;
    println!(
        "in-flight: {n} confirmed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut peak_submitted = 0u64;
    loop {
        let counts = h.ctx.store.generations().count_by_status().await.unwrap();
        let submitted = counts
            .iter()
            .find(|(s, _)| *s == GenerationStatus::Submitted)
            .map_or(0, |c| c.1);
        let delivered = counts
            .iter()
            .find(|(s, _)| *s == GenerationStatus::Delivered)
            .map_or(0, |c| c.1);
        peak_submitted = peak_submitted.max(submitted);
        let depth: u64 = h
            .ctx
            .queues
            .depths()
            .await
            .map(|d| d.iter().map(|x| x.1).sum())
            .unwrap_or(0);
        let rss: Vec<u64> = children
            .iter()
            .map(|c| vm_hwm_kib(c.id()).unwrap_or(0) / 1024)
            .collect();
        println!(
            "in-flight: t={:>5.1}s submitted={submitted} delivered={delivered} queued jobs={depth} recordInfo calls={} worker peak RSS MiB={rss:?}",
            started.elapsed().as_secs_f64(),
            h.kie.calls(Endpoint::RecordInfo)
        );
        // Done when every generation is terminal and its user told: a task
        // whose polls fell behind its deadline ends expired (released).
        let gens = h.ctx.store.generations();
        if gens.count_unfinished().await.unwrap() == 0 && gens.count_untold().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let counts = h.ctx.store.generations().count_by_status().await.unwrap();
    println!(
        "in-flight: peak {peak_submitted} generations in flight at once; all {n} finished and told in {:.1}s: {counts:?}",
        started.elapsed().as_secs_f64()
    );
    h.assert_money_consistent().await;
    drop(children);
    if let Ok(h) = Arc::try_unwrap(h) {
        h.cleanup().await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let inflight = env_usize("BENCH_INFLIGHT", 0);
        if inflight > 0 {
            in_flight(inflight).await;
            return;
        }
        let n = env_usize("BENCH_N", 2000);
        let mode = std::env::var("BENCH_MODE").unwrap_or_else(|_| "both".to_owned());
        if mode == "both" || mode == "fleet" {
            run(Flavor::Fleet, n).await;
        }
        if mode == "both" || mode == "embedded" {
            run(Flavor::Embedded, n).await;
        }
    });
}
