//! Front-bot benchmark: the real handlers behind `run_polling` (getUpdates
//! long polling, real HTTP replies) against the fake Bot API, with many
//! simulated users, in the embedded setup (SQLite + SQLite queue) and the
//! fleet setup (PostgreSQL + Redis queue).
//!
//! ```sh
//! cargo bench -p kiebot-bot --bench front
//! BENCH_UPDATES=5000 BENCH_SETUP=embedded BENCH_CASE=nav cargo bench -p kiebot-bot --bench front
//! ```
//!
//! Cases: `nav` (main menu -> generation type -> model list -> model card ->
//! back, every press answered with an edit) and `confirm` (the confirm
//! button: create the pending generation with its hold in one transaction,
//! then enqueue `Submit`). Each case runs twice:
//!
//! - `saturated`: every user presses again as soon as the bot's reply
//!   arrives: the sustained throughput. Its latency is mostly queueing
//!   (Little's law: users / throughput).
//! - `paced`: presses are scheduled at `BENCH_RATE` per second (default
//!   2000) over the same users: the latency at that load. If the bot cannot
//!   keep up, presses start late and the achieved rate says so.
//! - `half load`: paced at half the saturated throughput just measured (half
//!   the updates): the latency of a bot that is not overloaded.
//!
//! Latency is from injecting the update into the fake to the fake reading
//! the bot's reply to that user (the edit or message), from
//! [`FakeTelegram::call_events`]; `answered` is the same up to the
//! `answerCallbackQuery`, which the bot sends after the reply.
//!
//! Environment: `BENCH_UPDATES` (per case and phase; default 20000 for
//! navigation, 5000 for confirm), `BENCH_USERS` (200), `BENCH_RATE` (2000),
//! `BENCH_PHASE` (`saturated`, `paced`, `half`, or a comma list of them),
//! `BENCH_SETUP` (`embedded`, `fleet` or `all`), `BENCH_CASE` (`nav`,
//! `confirm` or `all`), `BENCH_WARMUP` (confirmations pressed before each
//! confirm phase at its pace and not measured; default 1000),
//! `BENCH_SERIES` (a file to write each press of the
//! last phase to: its start and its latency, in ms), `RUST_LOG` (the bot's
//! own logs, on stderr), `TEST_POSTGRES_URL`, `TEST_REDIS_URL`.
//!
//! Each phase also reports the whole machine's CPU (every process: the bot,
//! the database, Redis, the fake and the simulated users) from `/proc/stat`,
//! as busy share and CPU time per update: comparable across runs on a host
//! whose speed varies, where latencies alone are not. The fleet setup ends
//! with the rows each PostgreSQL table gave to sequential scans over the
//! run: a statement whose plan reads a whole table on every update shows
//! there long before it shows in the latencies.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kiebot_bot::{BotDeps, run_polling};
use kiebot_domain::{GenerationType, Model, ModelId, Money, Pricing, UserId};
use kiebot_jobs::Queues;
use kiebot_jobs::names::QueueNames;
use kiebot_store::{PoolSize, Store, now_ms};
use kiebot_testkit::TestDb;
use kiebot_testkit::telegram::{CallEvent, FakeTelegram};
use kiebot_tg::callback::{Cb, DraftId};
use kiebot_tg::texts::Lang;
use serde_json::Value;
use teloxide::prelude::*;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

// The allocator the shipped binaries use.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The model whose card and wizard the users go through (no free quota, so
/// every confirm holds money).
const MODEL: &str = "flux-2/pro-text-to-image";
/// First simulated user id; chats are the users' ids.
const FIRST_USER: i64 = 5_000_000_000;
/// How long one reply may take before the run is declared broken.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Routes the fake's call events: a reply to a chat goes to whoever waits
/// for it; callback answers are collected for the `answered` figure.
#[derive(Clone, Default)]
struct Router {
    waiting: Arc<Mutex<HashMap<i64, oneshot::Sender<CallEvent>>>>,
    answers: Arc<Mutex<HashMap<String, Instant>>>,
    unexpected: Arc<Mutex<Vec<CallEvent>>>,
}

impl Router {
    fn spawn(tg: &FakeTelegram) -> Router {
        let router = Router::default();
        let mut rx = tg.call_events();
        let r = router.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if ev.method == "answerCallbackQuery" {
                    if let Some(id) = ev.callback_query_id.clone() {
                        r.answers.lock().unwrap().insert(id, ev.at);
                    }
                    continue;
                }
                let waiter = ev
                    .chat_id
                    .and_then(|c| r.waiting.lock().unwrap().remove(&c));
                match waiter {
                    Some(tx) if ev.ok => {
                        let _ = tx.send(ev);
                    }
                    Some(tx) => {
                        r.unexpected.lock().unwrap().push(ev.clone());
                        let _ = tx.send(ev);
                    }
                    None => r.unexpected.lock().unwrap().push(ev),
                }
            }
        });
        router
    }

    /// Injects an update for `chat` and waits for the bot's next call to that
    /// chat. Returns the update id, when it was injected and the reply.
    async fn act(&self, chat: i64, inject: impl FnOnce() -> i64) -> (i64, Instant, CallEvent) {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(chat, tx);
        let t0 = Instant::now();
        let id = inject();
        let reply = tokio::time::timeout(REPLY_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| {
                panic!("no reply to chat {chat} (update {id}) within {REPLY_TIMEOUT:?}")
            })
            .expect("router alive");
        (id, t0, reply)
    }
}

/// One running bot against one setup.
struct Env {
    name: &'static str,
    tg: FakeTelegram,
    deps: BotDeps,
    /// The bench's own store handle (setup and checks), apart from the bot's.
    store: Store,
    router: Router,
    stop: Option<oneshot::Sender<()>>,
    poller: Option<tokio::task::JoinHandle<()>>,
    db: Option<TestDb>,
    redis: Option<(String, String)>,
    /// Fleet: empties the submit queue as workers would (see [`drain_submits`]).
    drainer: Option<tokio::task::JoinHandle<()>>,
    next_user: i64,
}

impl Env {
    /// Starts the fake Bot API on the current (load) runtime and the bot on
    /// `bot_rt`, so the bot's tasks never queue behind the fake's or the
    /// simulated users', and each side's CPU shows under its own thread
    /// names.
    async fn start(fleet: bool, bot_rt: &Handle) -> Env {
        let tg = FakeTelegram::start().await;
        let ns = format!("bench{:x}", rand::random::<u32>());
        let (db, redis) = if fleet {
            let db = TestDb::postgres().await;
            let url = env_str("TEST_REDIS_URL", "redis://127.0.0.1:6379");
            (db, Some((url, ns.clone())))
        } else {
            (TestDb::sqlite(), None)
        };
        let api_url = tg.api_url().parse().unwrap();
        let token = tg.token().to_owned();
        let db_url = db.url().to_owned();
        let redis_url = redis.as_ref().map(|(url, _)| url.clone());
        // Everything the bot holds (pool, queue connection, HTTP client) is
        // made on its own runtime, so its I/O is driven there.
        let deps = bot_rt
            .spawn(async move {
                let queues = match redis_url {
                    Some(url) => Queues::redis(&url, QueueNames::new(&ns)).await,
                    None => Queues::sqlite(&db_url, QueueNames::new(&ns)).await,
                }
                .expect("queue");
                // The front's pool, kept warm as `kiebot_app` keeps it.
                let pool = PoolSize::new(kiebot_store::DEFAULT_MAX_CONNECTIONS)
                    .warm(kiebot_bot::WARM_CONNECTIONS);
                let store = Store::connect_with(&db_url, pool).await.expect("connect");
                store.migrate().await.expect("migrate");
                let catalog = Arc::new(kiebot_catalog::load_default().expect("catalog"));
                let bot = Bot::new(token).set_api_url(api_url);
                BotDeps {
                    store,
                    queues,
                    catalog,
                    pricing: Pricing::default(),
                    admin_ids: vec![UserId(1)],
                    max_active: 5,
                    dry_run: false,
                    kie: std::sync::Arc::new(kiebot_kie::DryRunKie::new()),
                    bot,
                    stars_rate: Money::from_minor(150),
                    limiter: Arc::new(kiebot_tg::InProcessLimiter::new(kiebot_tg::LimiterConfig {
                        global_per_second: 1000,
                        per_chat_interval: Duration::from_millis(1),
                        per_chat_burst: 100,
                    })),
                    broadcasts: kiebot_bot::BroadcastRunners::default(),
                    referral: kiebot_bot::ReferralPolicy::default(),
                    admin_limits: kiebot_bot::AdminPolicy::default(),
                    // Simulated users press faster than people.
                    flood: Arc::new(kiebot_bot::FloodGate::new(kiebot_bot::FloodConfig::off())),
                }
            })
            .await
            .expect("bot setup");
        // The bench's own connections, for preparing users and checking.
        let store = Store::connect(db.url()).await.expect("connect");
        let router = Router::spawn(&tg);
        let (stop, stopped) = oneshot::channel::<()>();
        let poller = bot_rt.spawn(run_polling(deps.clone(), async {
            let _ = stopped.await;
        }));
        let drainer = redis
            .as_ref()
            .map(|(url, ns)| tokio::spawn(drain_submits(url.clone(), QueueNames::new(ns).submit)));
        Env {
            name: if fleet {
                "fleet (PostgreSQL + Redis)"
            } else {
                "embedded (SQLite + SQLite queue)"
            },
            tg,
            deps,
            store,
            router,
            stop: Some(stop),
            poller: Some(poller),
            db: Some(db),
            redis,
            drainer,
            next_user: FIRST_USER,
        }
    }

    fn new_users(&mut self, n: usize) -> Vec<i64> {
        let first = self.next_user;
        self.next_user += i64::try_from(n).unwrap();
        (first..self.next_user).collect()
    }

    async fn press(&self, user: i64, message_id: i32, cb: &Cb) -> (i64, Instant, CallEvent) {
        let data = cb.encode();
        self.router
            .act(user, || self.tg.press_button(user, message_id, &data))
            .await
    }

    async fn text(&self, user: i64, text: &str) -> CallEvent {
        self.router
            .act(user, || self.tg.send_text(user, text))
            .await
            .2
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(poller) = self.poller.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), poller).await;
        }
        if let Some(drainer) = self.drainer.take() {
            drainer.abort();
        }
        if let Some((url, ns)) = self.redis.take() {
            delete_redis_namespace(&url, &ns).await;
        }
        self.deps.store.close().await;
        drop(self.deps);
        self.store.close().await;
        if let Some(db) = self.db.take().filter(TestDb::is_postgres) {
            // Closed connections report their statistics as their backends
            // end, a moment after the close.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let scans: Vec<String> = db
                .rows_read_by_scans()
                .await
                .iter()
                .map(|(table, rows)| format!("{table} {rows}"))
                .collect();
            // A hot statement whose kept plan scans a table shows here as
            // rows in the millions (a dialogue join did, reading 13 million
            // in one run). Thousands are expected: the benchmark counts
            // pending generations by a scan twice per confirm phase, and
            // for a batch holding a good share of a table this small
            // PostgreSQL rightly locks the batch's users by a scan.
            println!(
                "  rows read by table scans over the run: {}",
                if scans.is_empty() {
                    "none".to_owned()
                } else {
                    scans.join(", ")
                }
            );
        }
    }
}

/// Stands in for the fleet's workers: empties the submit queue ten times a
/// second. Without it the queue reaches its backlog bound after 2,000
/// confirmations and every later push is skipped (left to the reconciler),
/// so the benchmark would stop measuring the enqueue.
async fn drain_submits(url: String, queue: String) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    // apalis-redis's keys of one queue.
    let keys: Vec<String> = ["active", "scheduled", "data", "meta", "signal"]
        .iter()
        .map(|k| format!("{queue}:{k}"))
        .collect();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
}

/// Deletes every Redis key of the namespace (the queues).
async fn delete_redis_namespace(url: &str, namespace: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut deleted = 0usize;
    for pattern in [format!("{namespace}:*"), format!("*{{{namespace}:*")] {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            if !keys.is_empty() {
                deleted += keys.len();
                let () = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .expect("DEL");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    println!("  redis: deleted {deleted} keys of namespace {namespace}");
}

/// What a simulated user does for ticket `n`: press `cb` under `message_id`
/// in `chat`.
struct Press {
    chat: i64,
    message_id: i32,
    cb: Cb,
}

struct Measured {
    updates: usize,
    elapsed: Duration,
    reply: Vec<Duration>,
    answered: Vec<Duration>,
    /// How late the last paced press started against its schedule.
    max_late: Duration,
    /// The whole machine's CPU over the phase (all processes: bot,
    /// database, Redis, the fake and the simulated users).
    cpu: Option<CpuUse>,
}

/// Busy and total CPU time of the whole machine from `/proc/stat` (Linux),
/// in clock ticks: since boot as read, or between two readings.
#[derive(Clone, Copy)]
struct CpuUse {
    busy: u64,
    total: u64,
}

impl CpuUse {
    /// The machine's counters so far.
    fn read() -> Option<CpuUse> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let total: u64 = ticks.iter().sum();
        // idle and iowait
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Some(CpuUse {
            busy: total - idle,
            total,
        })
    }

    /// What the machine used since `before`.
    fn since(before: Option<CpuUse>) -> Option<CpuUse> {
        let (before, now) = (before?, Self::read()?);
        Some(CpuUse {
            busy: now.busy.saturating_sub(before.busy),
            total: now.total.saturating_sub(before.total),
        })
    }
}

/// Runs `total` presses over `tasks` concurrent users; paced at `rate` per
/// second when given.
async fn run_phase<F>(env: &Env, tasks: Vec<F>, total: usize, rate: Option<f64>) -> Measured
where
    F: FnMut(usize) -> Press + Send + 'static,
{
    let tickets = Arc::new(AtomicUsize::new(0));
    let cpu_before = CpuUse::read();
    let start = Instant::now();
    let tokio_start = tokio::time::Instant::now();
    let results = futures::future::join_all(tasks.into_iter().map(|mut next| {
        let tickets = Arc::clone(&tickets);
        async move {
            let mut out: Vec<(i64, Instant, Instant)> = vec![];
            let mut max_late = Duration::ZERO;
            loop {
                let n = tickets.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                if let Some(rate) = rate {
                    let due = tokio_start + Duration::from_secs_f64(n as f64 / rate);
                    let now = tokio::time::Instant::now();
                    if due > now {
                        tokio::time::sleep_until(due).await;
                    } else {
                        max_late = max_late.max(now - due);
                    }
                }
                let p = next(n);
                let (id, t0, reply) = env.press(p.chat, p.message_id, &p.cb).await;
                assert!(
                    reply.ok,
                    "the bot's reply to update {id} was refused: {reply:?}"
                );
                out.push((id, t0, reply.at));
            }
            (out, max_late)
        }
    }))
    .await;
    let cpu = CpuUse::since(cpu_before);
    let mut last = start;
    let mut reply = vec![];
    let mut sent = vec![];
    let mut max_late = Duration::ZERO;
    let mut series = vec![];
    for (out, late) in results {
        max_late = max_late.max(late);
        for (id, t0, at) in out {
            last = last.max(at);
            reply.push(at.saturating_duration_since(t0));
            sent.push((id, t0));
            series.push((
                t0.saturating_duration_since(start),
                at.saturating_duration_since(t0),
            ));
        }
    }
    // In start order, the latencies show what percentiles hide: a stall, a
    // slow start, a drift as the run goes on.
    if let Ok(path) = std::env::var("BENCH_SERIES") {
        series.sort_unstable();
        let lines: String = series
            .iter()
            .map(|(t, l)| {
                format!(
                    "{:.3} {:.3}\n",
                    t.as_secs_f64() * 1e3,
                    l.as_secs_f64() * 1e3
                )
            })
            .collect();
        std::fs::write(path, lines).expect("write BENCH_SERIES");
    }
    // The answer follows the reply within microseconds; give stragglers a
    // moment before reading them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answered = {
        let answers = env.router.answers.lock().unwrap();
        sent.iter()
            .filter_map(|(id, t0)| {
                answers
                    .get(&id.to_string())
                    .map(|at| at.saturating_duration_since(*t0))
            })
            .collect()
    };
    Measured {
        updates: reply.len(),
        elapsed: last.saturating_duration_since(start),
        reply,
        answered,
        max_late,
        cpu,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Clone, Copy)]
enum Phase {
    Saturated,
    Paced,
    HalfLoad,
}

const PHASES: [Phase; 3] = [Phase::Saturated, Phase::Paced, Phase::HalfLoad];

/// The phases `BENCH_PHASE` asks for (a comma list of `saturated`, `paced`,
/// `half`; all by default). Without `saturated`, half load is half of
/// `BENCH_RATE`.
fn phases() -> Vec<Phase> {
    let wanted = env_str("BENCH_PHASE", "saturated,paced,half");
    PHASES
        .into_iter()
        .filter(|p| wanted.split(',').any(|w| p.name().starts_with(w.trim())))
        .collect()
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Saturated => "saturated",
            Phase::Paced => "paced",
            Phase::HalfLoad => "half load",
        }
    }

    /// The pace (none: as fast as replies come) and the number of updates.
    fn plan(self, rate: f64, capacity: f64, total: usize) -> (Option<f64>, usize) {
        match self {
            Phase::Saturated => (None, total),
            Phase::Paced => (Some(rate), total),
            Phase::HalfLoad => (Some((capacity / 2.0).max(1.0)), total / 2),
        }
    }
}

/// Prints one line; returns the achieved updates per second.
fn report(setup: &str, case: &str, phase: &str, m: &mut Measured, rate: Option<f64>) -> f64 {
    m.reply.sort_unstable();
    m.answered.sort_unstable();
    let per_s = m.updates as f64 / m.elapsed.as_secs_f64().max(1e-9);
    let offered = rate.map_or(String::new(), |r| format!(" (offered {r:.0}/s)"));
    println!(
        "{setup} | {case} | {phase}: {} updates in {:.2} s = {per_s:.0} updates/s{offered}; \
         reply p50 {} p99 {} max {}; answered p50 {} p99 {} ({} of {})",
        m.updates,
        m.elapsed.as_secs_f64(),
        ms(pct(&m.reply, 0.50)),
        ms(pct(&m.reply, 0.99)),
        ms(m.reply.last().copied().unwrap_or_default()),
        ms(pct(&m.answered, 0.50)),
        ms(pct(&m.answered, 0.99)),
        m.answered.len(),
        m.updates,
    );
    if let Some(cpu) = m.cpu.filter(|c| c.total > 0) {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let busy = cpu.busy as f64 / cpu.total as f64;
        // Ticks are 1/100 s (USER_HZ) on every Linux the benchmark runs on.
        let per_update_us = cpu.busy as f64 * 10_000.0 / m.updates.max(1) as f64;
        println!(
            "  machine: {:.0} % busy ({:.2} of {cores:.0} cores), {per_update_us:.0} µs of CPU per update",
            busy * 100.0,
            busy * cores,
        );
    }
    if rate.is_some() && m.max_late > Duration::from_millis(5) {
        println!(
            "  note: presses started up to {} behind schedule (the bot did not keep up)",
            ms(m.max_late)
        );
    }
    per_s
}

fn nav_model(env: &Env) -> (GenerationType, ModelId) {
    let model: &Model = env.deps.catalog.get(MODEL).expect("benchmark model");
    (model.types[0], model.id.clone())
}

/// Users who chose English and sit at the main menu; returns (user, the menu
/// message id).
async fn onboard(env: &Env, users: &[i64]) -> Vec<(i64, i32)> {
    futures::stream::iter(users.iter().copied())
        .map(|u| async move {
            let picker = env.text(u, "/start").await;
            let mid = picker.message_id.expect("the language picker is a message");
            let (_, _, menu) = env.press(u, mid, &Cb::Lang(Lang::En)).await;
            assert_eq!(menu.method, "editMessageText");
            (u, mid)
        })
        .buffer_unordered(50)
        .collect()
        .await
}

async fn bench_nav(env: &mut Env, users: usize, total: usize, rate: f64) {
    let (t, model) = nav_model(env);
    let cycle = [Cb::Type(t), Cb::Model(model), Cb::Type(t), Cb::Menu];
    let mut capacity = rate;
    for phase in phases() {
        let (rate, total) = phase.plan(rate, capacity, total);
        let phase = phase.name();
        let ids = env.new_users(users);
        let at_menu = onboard(env, &ids).await;
        let before = env.tg.answered_callbacks().len();
        let tasks: Vec<_> = at_menu
            .into_iter()
            .map(|(chat, message_id)| {
                let cycle = cycle.clone();
                let mut step = 0usize;
                move |_n: usize| {
                    let cb = cycle[step % cycle.len()].clone();
                    step += 1;
                    Press {
                        chat,
                        message_id,
                        cb,
                    }
                }
            })
            .collect();
        let mut m = run_phase(env, tasks, total, rate).await;
        capacity = capacity.min(report(env.name, "navigation", phase, &mut m, rate));
        let notes = env.tg.answered_callbacks()[before..]
            .iter()
            .filter(|a| a.text.is_some())
            .count();
        assert_eq!(notes, 0, "{notes} presses were answered as stale or failed");
    }
}

/// Walks one user through the wizard to the confirm screen and returns the
/// saved dialogue, the template for every benchmark user's draft.
async fn confirm_template(env: &mut Env) -> Value {
    let user = env.new_users(1)[0];
    let (_, model) = nav_model(env);
    env.press(user, 1, &Cb::Start(model)).await;
    let mut last = env.text(user, "a lighthouse at dusk").await;
    for _ in 0..8 {
        let mid = last.message_id.expect("a screen");
        let msg = env
            .tg
            .messages_to(user)
            .into_iter()
            .find(|m| m.message_id == mid)
            .expect("the screen exists");
        if msg
            .text
            .as_deref()
            .is_some_and(|t| t.contains("Check the parameters"))
        {
            let raw = env
                .store
                .dialogues()
                .load(UserId(user), now_ms())
                .await
                .unwrap()
                .expect("a wizard dialogue");
            return serde_json::from_str(&raw).unwrap();
        }
        let keep = msg.reply_markup.as_ref().and_then(|kb| {
            kb["inline_keyboard"]
                .as_array()?
                .iter()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .find(|b| {
                    b["text"]
                        .as_str()
                        .is_some_and(|l| l.contains("Keep the default"))
                })?["callback_data"]
                .as_str()
                .map(str::to_owned)
        });
        let data = keep.unwrap_or_else(|| panic!("no way on from {:?}", msg.text));
        let cb = Cb::parse(&data).expect("the bot's own button");
        last = env.press(user, mid, &cb).await.2;
    }
    panic!("no confirm screen");
}

/// `n` users with money and a wizard at its confirm screen; returns (user,
/// draft id).
async fn prepare_confirms(env: &Env, template: &Value, users: Vec<i64>) -> Vec<(i64, DraftId)> {
    let store = &env.store;
    futures::stream::iter(users)
        .map(|u| async move {
            let draft = DraftId(rand::random::<u64>() >> 1);
            let mut d = template.clone();
            d["id"] = serde_json::to_value(draft).unwrap();
            store.users().ensure(UserId(u)).await.unwrap();
            store
                .ledger()
                .topup(
                    UserId(u),
                    Money::from_minor(1_000_000),
                    &format!("bench-topup:{u}"),
                    None,
                )
                .await
                .unwrap();
            store
                .dialogues()
                .save(
                    UserId(u),
                    &d.to_string(),
                    now_ms(),
                    kiebot_bot::DIALOGUE_TTL,
                )
                .await
                .unwrap();
            (u, draft)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

async fn bench_confirm(env: &mut Env, users: usize, total: usize, rate: f64) {
    let template = confirm_template(env).await;
    let warmup = env_usize("BENCH_WARMUP", 1000);
    let mut capacity = rate;
    for phase in phases() {
        let (rate, total) = phase.plan(rate, capacity, total);
        let phase = phase.name();
        let ids = env.new_users(warmup + total);
        let t = Instant::now();
        let mut prepared = prepare_confirms(env, &template, ids).await;
        println!(
            "  ({} users with a draft at its confirm screen prepared in {:.1} s)",
            prepared.len(),
            t.elapsed().as_secs_f64()
        );
        let presses = |prepared: Arc<Vec<(i64, DraftId)>>| -> Vec<_> {
            (0..users)
                .map(|_| {
                    let prepared = Arc::clone(&prepared);
                    move |n: usize| {
                        let (chat, draft) = prepared[n];
                        // A message id the bot never sent in that chat: the
                        // press arrives without its message, so the bot
                        // answers with a new message instead of an edit.
                        Press {
                            chat,
                            message_id: 1,
                            cb: Cb::Confirm(draft),
                        }
                    }
                })
                .collect()
        };
        // Unmeasured presses at the phase's pace first: a process's first
        // confirmations meet cold connections, plans and caches, which a
        // running bot has long left behind.
        let measured = Arc::new(prepared.split_off(warmup.min(prepared.len())));
        if !prepared.is_empty() {
            let n = prepared.len();
            run_phase(env, presses(Arc::new(prepared)), n, rate).await;
        }
        let pending_before = pending(env).await;
        let before = env.tg.answered_callbacks().len();
        let tasks = presses(measured);
        let mut m = run_phase(env, tasks, total, rate).await;
        capacity = capacity.min(report(env.name, "confirm", phase, &mut m, rate));
        let notes = env.tg.answered_callbacks()[before..]
            .iter()
            .filter(|a| a.text.is_some())
            .count();
        // Generations, not queued jobs: the Redis queue holds a bounded
        // backlog and leaves the rest to the reconciler.
        let created = pending(env).await - pending_before;
        println!(
            "  check: {created} generations created with their hold, {notes} presses answered stale/failed"
        );
        assert_eq!(notes, 0);
        assert_eq!(created, m.updates as u64);
    }
}

async fn pending(env: &Env) -> u64 {
    env.store
        .generations()
        .count_by_status()
        .await
        .expect("count")
        .iter()
        .filter(|(s, _)| *s == kiebot_domain::GenerationStatus::Pending)
        .map(|(_, n)| *n)
        .sum()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let users = env_usize("BENCH_USERS", 200);
    let rate = env_usize("BENCH_RATE", 2000) as f64;
    let updates = std::env::var("BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let nav_total = updates.unwrap_or(20_000);
    let confirm_total = updates.unwrap_or(5_000);
    let setups = env_str("BENCH_SETUP", "all");
    let cases = env_str("BENCH_CASE", "all");
    // The bot's own warnings and errors, when asked for (`RUST_LOG=warn`).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    // Two runtimes: the load (fake Bot API, simulated users) and the bot,
    // each of as many threads as cores unless told otherwise.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .worker_threads(env_usize("BENCH_LOAD_THREADS", cores).max(1))
        .enable_all()
        .build()
        .expect("runtime");
    let bot_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bot")
        .worker_threads(env_usize("BENCH_BOT_THREADS", cores).max(1))
        .enable_all()
        .build()
        .expect("bot runtime");
    println!(
        "front bot benchmark: {users} users, {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load()
    );
    rt.block_on(async {
        for fleet in [false, true] {
            let wanted = match setups.as_str() {
                "embedded" => !fleet,
                "fleet" => fleet,
                _ => true,
            };
            if !wanted {
                continue;
            }
            let mut env = Env::start(fleet, bot_rt.handle()).await;
            if cases != "confirm" {
                bench_nav(&mut env, users, nav_total, rate).await;
            }
            if cases != "nav" {
                bench_confirm(&mut env, users, confirm_total, rate).await;
            }
            let unexpected = env.router.unexpected.lock().unwrap().len();
            if unexpected > 0 {
                println!("  note: {unexpected} calls nobody waited for");
            }
            env.stop().await;
            println!("  load average after {}: {}", env_name(fleet), load());
        }
    });
}

fn env_name(fleet: bool) -> &'static str {
    if fleet { "fleet" } else { "embedded" }
}
