//! Peak memory of a `kiebot-worker` process delivering large results.
//!
//! A fleet harness (PostgreSQL + Redis) confirms `BENCH_N` generations whose
//! results are `BENCH_FILE_MB` MiB files on the fake KIE (zeros, streamed as
//! they are sent); the fake Bot API refuses every result by URL, so each is
//! downloaded by the worker and uploaded again, and counts the uploaded bytes
//! as they stream in without keeping them. One `kiebot-worker` process with
//! `WORKER_CONCURRENCY=BENCH_N` does the work; its peak resident memory
//! (`VmHWM` in `/proc/<pid>/status`, read just before it is stopped) is the
//! figure, next to the bench process's own (the fakes).
//!
//! ```sh
//! cargo bench -p kiebot-worker-bin --bench delivery_rss
//! BENCH_N=32 BENCH_FILE_MB=50 cargo bench -p kiebot-worker-bin --bench delivery_rss
//! # another worker build (say, an older one) against the same fakes
//! BENCH_WORKER_BIN=/path/to/kiebot-worker cargo bench -p kiebot-worker-bin --bench delivery_rss
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiebot_app::harness::{Flavor, Harness, test_redis_url};
use kiebot_domain::{GenerationStatus, Money};
use kiebot_jobs::Job;
use kiebot_testkit::kie::Outcome;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn memory_kib(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let n = env_u64("BENCH_N", 32);
    let file_mb = env_u64("BENCH_FILE_MB", 50);
    let file_bytes = file_mb * 1024 * 1024;
    let mut h = Harness::with_settings(
        Flavor::Fleet,
        kiebot_app::harness::quick_pipeline(),
        test_redis_url(),
        &[("DELIVERY_RATE_PER_SECOND", "100000")],
    )
    .await;
    h.kie.set_default_outcome(Outcome::succeed(1));
    h.kie.set_result_size(Some(file_bytes), true);
    h.telegram.discard_uploads(true);
    h.telegram.reject_url_media(usize::try_from(n).unwrap() * 2);

    let mut ids = Vec::new();
    for i in 0..n {
        let user = h.funded_user(Money::from_minor(1_000_000)).await;
        let id = h
            .create(
                user,
                "google/nano-banana",
                Money::from_minor(100),
                &format!("rss-{i}"),
            )
            .await;
        h.ctx.queues.push(Job::Submit(id)).await.expect("enqueue");
        ids.push(id);
    }

    let bin = std::env::var("BENCH_WORKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kiebot-worker").to_owned());
    let temp = tempfile::tempdir().expect("temp dir");
    let worker = Worker(
        Command::new(&bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TMPDIR", temp.path())
            .envs(h.process_env())
            .env("POLL_INITIAL_MS", "0")
            .env("WORKER_CONCURRENCY", n.to_string())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kiebot-worker starts"),
    );
    let pid = worker.0.id().to_string();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(env_u64("BENCH_TIMEOUT_SECS", 300));
    let mut peak_hwm = 0;
    loop {
        if let Some((hwm, _)) = memory_kib(&pid) {
            peak_hwm = peak_hwm.max(hwm);
        }
        let delivered = h
            .statuses(&ids)
            .await
            .iter()
            .filter(|s| **s == GenerationStatus::Delivered)
            .count();
        if delivered == ids.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    if let Some((hwm, _)) = memory_kib(&pid) {
        peak_hwm = peak_hwm.max(hwm);
    }
    drop(worker);
    let statuses = h.statuses(&ids).await;
    let delivered = statuses
        .iter()
        .filter(|s| **s == GenerationStatus::Delivered)
        .count();
    let uploaded: u64 = h
        .telegram
        .sent()
        .iter()
        .flat_map(|c| c.media.iter())
        .filter_map(|m| match m.source {
            kiebot_testkit::telegram::MediaSource::Upload { size, .. } => Some(size),
            _ => None,
        })
        .sum();
    let own = memory_kib("self").map_or(0, |(hwm, _)| hwm);
    println!(
        "delivery_rss: {delivered}/{n} delivered ({file_mb} MiB each, {} MiB uploaded) in {:.1} s; \
         worker peak RSS (VmHWM) {:.1} MiB; bench process (fakes) VmHWM {:.1} MiB",
        uploaded / (1024 * 1024),
        elapsed.as_secs_f64(),
        peak_hwm as f64 / 1024.0,
        own as f64 / 1024.0,
    );
    h.cleanup().await;
    assert_eq!(delivered, ids.len(), "every result delivered");
}
