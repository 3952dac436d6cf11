//! KIE's limits, measured: how close the pipeline runs to KIE's create limit,
//! and how soon a user has a result KIE finished, with the status-poll budget
//! kept.
//!
//! ```sh
//! # 1,000 generations confirmed at once against a fake KIE enforcing 20
//! # creates per 10 s (two kiebot-worker processes): throughput and waits.
//! BENCH_CASE=limit BENCH_N=1000 cargo bench -p kiebot-worker-bin --bench kie_pacing
//! # 100 generations in flight for BENCH_SECS (600) with tasks of 5 to 120 s:
//! # KIE-finished-to-delivered latency, polls only and then with callbacks.
//! BENCH_CASE=latency BENCH_SECS=600 cargo bench -p kiebot-worker-bin --bench kie_pacing
//! ```
//!
//! The fake KIE refuses what real KIE would (429 beyond 20 creates per 10 s,
//! beyond 10 status requests per second); the run reports how many it had to
//! refuse.

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiebot_app::harness::{Flavor, Harness, test_redis_url};
use kiebot_domain::{GenerationId, GenerationStatus, Money, UserId};
use kiebot_jobs::Job;
use kiebot_testkit::kie::{CallbackMode, Endpoint, Outcome};
use kiebot_worker::PipelineConfig;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KIE_LIMITS: [(&str, &str); 5] = [
    ("KIE_CREATES_PER_WINDOW", "20"),
    ("KIE_CREATE_WINDOW_SECS", "10"),
    ("KIE_MAX_IN_FLIGHT", "100"),
    ("KIE_POLLS_PER_SECOND", "10"),
    ("DELIVERY_RATE_PER_SECOND", "1000"),
];

/// Models standing for tasks of 5 to 120 s (each run time drawn within 5 %
/// of its class at the fake).
const CLASSES: [(&str, u64); 5] = [
    ("google/nano-banana", 5),
    ("z-image", 20),
    ("flux-2/pro-text-to-image", 45),
    ("kling-2.6/text-to-video", 90),
    ("wan/2-5-text-to-video", 120),
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_workers(h: &Harness, n: usize) -> Workers {
    Workers(
        (0..n)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_kiebot-worker"))
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .envs(h.process_env())
                    .env("JOB_LEASE_SECS", "30")
                    .env("WORKER_CONCURRENCY", "16")
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("kiebot-worker starts")
            })
            .collect(),
    )
}

/// 1,000 generations confirmed at once; KIE takes 20 per 10 s.
async fn limit(n: usize) {
    let mut h = Harness::with_settings(
        Flavor::Fleet,
        PipelineConfig::default(),
        test_redis_url(),
        &KIE_LIMITS,
    )
    .await;
    h.kie.set_create_limit(Some((20, Duration::from_secs(10))));
    h.kie.set_poll_limit(Some((10, Duration::from_secs(1))));
    let mut users = vec![];
    for _ in 0..(n / 5).max(1) {
        users.push(h.funded_user(Money::from_minor(1_000_000)).await);
    }
    let mut ids = vec![];
    for i in 0..n {
        let id = h
            .create(
                users[i % users.len()],
                "google/nano-banana",
                Money::from_minor(100),
                &format!("limit-{i}"),
            )
            .await;
        h.ctx.queues.push(Job::Submit(id)).await.unwrap();
        ids.push(id);
    }
    let workers = spawn_workers(&h, 2);
    let started = Instant::now();
    let expected = Duration::from_secs_f64(n as f64 / 2.0);
    h.wait_settled(expected * 2 + Duration::from_secs(120))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    drop(workers);
    let mut waits = vec![];
    let mut first_submit = i64::MAX;
    let mut last_submit = 0;
    for id in &ids {
        let g = h.ctx.store.generations().get(*id).await.unwrap().unwrap();
        assert_eq!(g.status, GenerationStatus::Delivered);
        let s = g.submitted_at.unwrap();
        first_submit = first_submit.min(s);
        last_submit = last_submit.max(s);
        waits.push((s - g.created_at) as f64 / 1000.0);
    }
    waits.sort_by(f64::total_cmp);
    let span = (last_submit - first_submit) as f64 / 1000.0;
    // n creates span n-1 gaps; KIE's limit is 2 per second.
    let rate = (n as f64 - 1.0) / span;
    let calls = h.kie.calls(Endpoint::CreateTask);
    println!(
        "limit: {n} generations delivered in {:.1}s; creates {:.3}/s over {span:.1}s = {:.1} % of KIE's 2/s",
        elapsed.as_secs_f64(),
        rate,
        rate / 2.0 * 100.0
    );
    println!(
        "limit: wait for KIE p50 {:.1}s p99 {:.1}s max {:.1}s; create calls {calls}, refused with 429 {}; most creates in any 10 s window {}; polls refused {}",
        pct(&waits, 0.5),
        pct(&waits, 0.99),
        pct(&waits, 1.0),
        h.kie.rate_limited_creates(),
        h.kie.max_creates_in_any_window(Duration::from_secs(10)),
        h.kie.rate_limited_polls(),
    );
    h.assert_money_consistent().await;
    h.cleanup().await;
}

fn unix_ms(anchor: (Instant, i64), t: Instant) -> i64 {
    let (i0, ms0) = anchor;
    if t >= i0 {
        ms0 + i64::try_from((t - i0).as_millis()).unwrap()
    } else {
        ms0 - i64::try_from((i0 - t).as_millis()).unwrap()
    }
}

/// 100 generations in flight, for `secs`; KIE-finished-to-delivered latency.
async fn latency(secs: u64, callbacks: bool) {
    let label = if callbacks {
        "with callbacks"
    } else {
        "polls only"
    };
    let secret = "bench-callback-secret";
    // The callback endpoint as the front bot serves it; its address goes
    // into the pipeline's configuration before the pipeline is built.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = PipelineConfig {
        callback_url: callbacks.then(|| {
            kiebot_worker::CallbackUrl::new(format!("http://{addr}/kie/callback/{secret}"))
        }),
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_settings(Flavor::Fleet, cfg, test_redis_url(), &KIE_LIMITS).await;
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = kiebot_ops::OpsState {
        store: h.ctx.store.clone(),
        queues: h.ctx.queues.clone(),
        dashboard_token: None,
        callback_secret: Some(secret.to_owned()),
        callback_hmac_key: None,
        metrics: None,
        webhook: None,
    };
    tokio::spawn(kiebot_ops::serve_listener(
        listener,
        kiebot_ops::router(state),
        async move {
            let _ = stopped.await;
        },
    ));
    h.kie.set_callbacks(if callbacks {
        CallbackMode::Once
    } else {
        CallbackMode::Off
    });
    h.kie.set_create_limit(Some((20, Duration::from_secs(10))));
    h.kie.set_poll_limit(Some((10, Duration::from_secs(1))));
    for (model, s) in CLASSES {
        let d = Duration::from_secs(s);
        h.kie.set_model_outcome(
            model,
            Outcome::succeed_between(d.mul_f64(0.95), d.mul_f64(1.05), 1),
        );
    }
    let mut users: Vec<UserId> = vec![];
    for _ in 0..200 {
        users.push(h.funded_user(Money::from_minor(100_000_000)).await);
    }
    h.start_workers(32);
    let anchor = (
        Instant::now(),
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let started = Instant::now();
    let mut ids: Vec<(GenerationId, usize)> = vec![];
    let mut next = 0usize;
    while started.elapsed() < Duration::from_secs(secs) {
        let unfinished = h.ctx.store.generations().count_unfinished().await.unwrap();
        for _ in unfinished..100 {
            let class = next % CLASSES.len();
            let id = h
                .confirm(
                    users[next % users.len()],
                    CLASSES[class].0,
                    Money::from_minor(100),
                )
                .await;
            ids.push((id, class));
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.wait_settled(Duration::from_secs(600)).await.unwrap();
    let finished: HashMap<String, Instant> = h.kie.finish_times().into_iter().collect();
    // Per class, in creation order; the first runs of a model are planned
    // from the catalog's guess until five have been measured.
    let mut seen = [0usize; CLASSES.len()];
    let (mut warm, mut all) = (vec![], vec![]);
    for (id, class) in &ids {
        let g = h.ctx.store.generations().get(*id).await.unwrap().unwrap();
        let (Some(task), Some(delivered)) = (g.kie_task_id.as_deref(), g.delivered_at) else {
            continue;
        };
        let Some(done) = finished.get(task) else {
            continue;
        };
        let latency = (delivered - unix_ms(anchor, *done)) as f64 / 1000.0;
        all.push(latency);
        seen[*class] += 1;
        if seen[*class] > kiebot_worker::plan::MIN_SAMPLES + 2 {
            warm.push(latency);
        }
    }
    warm.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    let polls = h.kie.calls(Endpoint::RecordInfo);
    println!(
        "latency ({label}): {} generations over {secs}s, 100 in flight, tasks of 5-120 s",
        ids.len()
    );
    println!(
        "latency ({label}): KIE finished -> delivered: p50 {:.2}s p99 {:.2}s max {:.2}s (after each model's first runs; all runs p50 {:.2}s p99 {:.2}s)",
        pct(&warm, 0.5),
        pct(&warm, 0.99),
        pct(&warm, 1.0),
        pct(&all, 0.5),
        pct(&all, 0.99),
    );
    println!(
        "latency ({label}): recordInfo calls {polls} ({:.1} per generation), most in any second {}, refused {}; creates refused {}",
        polls as f64 / ids.len().max(1) as f64,
        h.kie.max_polls_in_any_window(Duration::from_secs(1)),
        h.kie.rate_limited_polls(),
        h.kie.rate_limited_creates(),
    );
    h.assert_money_consistent().await;
    let _ = stop_server.send(());
    h.cleanup().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let case = std::env::var("BENCH_CASE").unwrap_or_else(|_| "both".to_owned());
        if case == "both" || case == "limit" {
            limit(env_usize("BENCH_N", 1000)).await;
        }
        if case == "both" || case == "latency" {
            let secs = env_usize("BENCH_SECS", 600) as u64;
            latency(secs, false).await;
            latency(secs, true).await;
        }
    });
}
