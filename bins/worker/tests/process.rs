//! Worker processes dying and Redis restarting: the pipeline resumes from the
//! database and nobody is charged twice.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiebot_app::harness::{Flavor, Harness, quick_pipeline};
use kiebot_domain::{GenerationStatus, Money};

const SETTLE: Duration = Duration::from_secs(120);

fn spawn_worker(h: &Harness) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiebot-worker"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(h.process_env())
        .env("JOB_LEASE_SECS", "3")
        .env("POLL_INITIAL_MS", "100")
        .env("WORKER_CONCURRENCY", "4")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kiebot-worker starts")
}

async fn count_started(h: &Harness) -> u64 {
    let counts = h.ctx.store.generations().count_by_status().await.unwrap();
    counts
        .iter()
        .filter(|(s, _)| *s != GenerationStatus::Pending)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_mid_job_is_replaced_and_nobody_is_charged_twice() {
    let mut h = Harness::start(Flavor::Fleet).await;
    // Slow KIE: jobs are in flight in the worker when it dies.
    h.kie.set_latency(Duration::from_millis(300));
    let user = h.funded_user(Money::from_minor(1_000_000)).await;
    let mut ids = vec![];
    for _ in 0..24 {
        ids.push(
            h.confirm(user, "google/nano-banana", Money::from_minor(500))
                .await,
        );
    }
    let mut worker = spawn_worker(&h);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count_started(&h).await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker process did no work"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().expect("SIGKILL");
    let _ = worker.wait();
    let unfinished = h.ctx.store.generations().count_unfinished().await.unwrap();
    assert!(unfinished > 0, "the worker was killed mid-run");

    // Another worker takes over what the dead one held.
    h.start_workers(4);
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(
        h.statuses(&ids).await,
        vec![GenerationStatus::Delivered; ids.len()]
    );
    assert_eq!(
        h.ctx.store.ledger().wallet(user).await.unwrap().balance,
        Money::from_minor(1_000_000 - 24 * 500),
        "each generation charged exactly once"
    );
    h.assert_money_consistent().await;
    h.cleanup().await;
}

/// A Redis server of this test's own, so that stopping it disturbs no other
/// test.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (ops/scripts/dev-services.sh)");
        OwnRedis {
            port,
            child: Some(child),
        }
    }

    async fn wait_up(&self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_loses_no_generation() {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    redis.wait_up().await;
    let mut h = Harness::with_redis(Flavor::Fleet, quick_pipeline(), redis.url()).await;
    h.kie.set_latency(Duration::from_millis(200));
    let user = h.funded_user(Money::from_minor(1_000_000)).await;
    let mut ids = vec![];
    for _ in 0..24 {
        ids.push(
            h.confirm(user, "google/nano-banana", Money::from_minor(500))
                .await,
        );
    }
    h.start_workers(4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count_started(&h).await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Redis keeps nothing on disk here: every queued job is gone.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let redis = OwnRedis::start(port);
    redis.wait_up().await;

    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(
        h.statuses(&ids).await,
        vec![GenerationStatus::Delivered; ids.len()]
    );
    h.assert_money_consistent().await;
    h.cleanup().await;
    drop(redis);
}
