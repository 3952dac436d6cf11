//! The pipeline wired to fakes, for tests and benchmarks.
//!
//! A [`Harness`] owns a fresh database (SQLite or PostgreSQL), a queue
//! namespace of its own (a SQLite queue in the same file, or Redis keys under
//! a random prefix, deleted on [`Harness::cleanup`]), a fake KIE and a fake Bot
//! API, all real servers on loopback, and a context assembled by
//! [`crate::assemble::assemble`] exactly as a production process would be.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kiebot_config::Settings;
use kiebot_domain::{GenerationId, GenerationStatus, Money, UserId};
use kiebot_jobs::Job;
use kiebot_store::{Creation, NewGeneration};
use kiebot_testkit::TestDb;
use kiebot_testkit::kie::FakeKie;
use kiebot_testkit::telegram::FakeTelegram;
use rand::Rng;
use tokio::sync::oneshot;

use kiebot_worker::runtime::WorkerRuntime;
use kiebot_worker::{Ctx, PipelineConfig};

use crate::assemble::{Options, assemble};

/// Which deployment the harness imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// SQLite for state and queue.
    Embedded,
    /// PostgreSQL for state, Redis for the queue.
    Fleet,
}

/// Pipeline timings that keep tests quick while exercising the same paths.
pub fn quick_pipeline() -> PipelineConfig {
    PipelineConfig {
        poll_first: Duration::from_millis(50),
        poll_max: Duration::from_millis(200),
        poll_hot_gap: Duration::from_millis(50),
        estimate_runs: false,
        lease: Duration::from_secs(3),
        pending_grace: Duration::from_secs(2),
        ..PipelineConfig::default()
    }
}

/// A running pipeline against fakes.
pub struct Harness {
    /// The shared context.
    pub ctx: Arc<Ctx>,
    /// The fake KIE.
    pub kie: FakeKie,
    /// The fake Bot API.
    pub telegram: FakeTelegram,
    /// The settings the context was assembled from.
    pub settings: Settings,
    /// The queue and rate-limit namespace.
    pub namespace: String,
    flavor: Flavor,
    redis_url: String,
    db: Option<TestDb>,
    workers: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    next_user: i64,
}

/// The Redis server tests use.
pub fn test_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

impl Harness {
    /// A harness with quick timings.
    pub async fn start(flavor: Flavor) -> Harness {
        Self::with_config(flavor, quick_pipeline()).await
    }

    /// A harness with the given pipeline timings.
    pub async fn with_config(flavor: Flavor, pipeline: PipelineConfig) -> Harness {
        Self::with_redis(flavor, pipeline, test_redis_url()).await
    }

    /// A harness whose fleet queue lives on the Redis server at `redis_url`.
    pub async fn with_redis(
        flavor: Flavor,
        pipeline: PipelineConfig,
        redis_url: String,
    ) -> Harness {
        Self::with_settings(flavor, pipeline, redis_url, &[]).await
    }

    /// A harness with extra settings (`DELIVERY_RATE_PER_SECOND`, ...).
    pub async fn with_settings(
        flavor: Flavor,
        pipeline: PipelineConfig,
        redis_url: String,
        extra: &[(&str, &str)],
    ) -> Harness {
        let db = match flavor {
            Flavor::Embedded => TestDb::sqlite(),
            Flavor::Fleet => TestDb::postgres().await,
        };
        let kie = FakeKie::start().await;
        let telegram = FakeTelegram::start().await;
        let namespace = format!("t{:012x}", rand::rng().random::<u64>() >> 16);
        let mut vars = BTreeMap::new();
        vars.insert("DATABASE_URL".to_owned(), db.url().to_owned());
        if flavor == Flavor::Fleet {
            vars.insert("REDIS_URL".to_owned(), redis_url.clone());
        }
        vars.insert("TELEGRAM_BOT_TOKEN".to_owned(), telegram.token().to_owned());
        vars.insert("TELEGRAM_API_URL".to_owned(), telegram.api_url());
        vars.insert("KIE_API_KEY".to_owned(), kie.api_key().to_owned());
        vars.insert("KIE_API_URL".to_owned(), kie.base_url());
        vars.insert("KIE_UPLOAD_URL".to_owned(), kie.upload_base());
        // KIE's limits are off unless a test sets them: the fake enforces
        // none unless told to.
        for (k, v) in [
            ("KIE_CREATES_PER_WINDOW", "1000000"),
            ("KIE_CREATE_WINDOW_SECS", "1"),
            ("KIE_MAX_IN_FLIGHT", "0"),
            ("KIE_POLLS_PER_SECOND", "1000000"),
        ]
        .into_iter()
        .chain(kiebot_testkit::LOOPBACK_RESULT_SETTINGS)
        {
            vars.insert(k.to_owned(), v.to_owned());
        }
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let settings = Settings::from_map(&vars).expect("harness settings are valid");
        let ctx = assemble(
            &settings,
            Options {
                namespace: namespace.clone(),
                pipeline: Some(pipeline),
                ..Options::default()
            },
        )
        .await
        .expect("the pipeline assembles");
        Harness {
            ctx,
            kie,
            telegram,
            settings,
            namespace,
            flavor,
            redis_url,
            db: Some(db),
            workers: vec![],
            next_user: 1000,
        }
    }

    /// The environment a worker process needs to join this harness's
    /// deployment (same database, queue namespace and fakes).
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "DATABASE_URL".to_owned(),
                self.settings.database_url.expose().to_owned(),
            ),
            (
                "TELEGRAM_BOT_TOKEN".to_owned(),
                self.telegram.token().to_owned(),
            ),
            ("TELEGRAM_API_URL".to_owned(), self.telegram.api_url()),
            ("KIE_API_KEY".to_owned(), self.kie.api_key().to_owned()),
            ("KIE_API_URL".to_owned(), self.kie.base_url()),
            ("KIE_UPLOAD_URL".to_owned(), self.kie.upload_base()),
            ("QUEUE_NAMESPACE".to_owned(), self.namespace.clone()),
            ("HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            // Equal to HTTP_ADDR: one listener on a free port serves every
            // route, so processes started side by side never share a port.
            ("OPS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "DELIVERY_RATE_PER_SECOND".to_owned(),
                self.settings.delivery_rate.to_string(),
            ),
            (
                "RESULT_HOSTS".to_owned(),
                self.settings.result_egress.hosts.join(","),
            ),
            (
                "RESULT_ALLOW_HTTP".to_owned(),
                self.settings.result_egress.allow_http.to_string(),
            ),
            (
                "RESULT_ALLOW_LOOPBACK".to_owned(),
                self.settings.result_egress.allow_loopback.to_string(),
            ),
        ];
        // The same KIE limits as the harness's own context.
        let limits = &self.settings.kie_limits;
        env.extend([
            (
                "KIE_CREATES_PER_WINDOW".to_owned(),
                limits.creates_per_window.to_string(),
            ),
            (
                "KIE_CREATE_WINDOW_SECS".to_owned(),
                limits.create_window.as_secs().to_string(),
            ),
            (
                "KIE_MAX_IN_FLIGHT".to_owned(),
                limits.max_in_flight.to_string(),
            ),
            (
                "KIE_POLLS_PER_SECOND".to_owned(),
                limits.polls_per_second.to_string(),
            ),
        ]);
        if let Some(r) = &self.settings.redis_url {
            env.push(("REDIS_URL".to_owned(), r.expose().to_owned()));
        }
        env
    }

    /// Which deployment this imitates.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Starts a worker runtime (all queues and a reconciler) in this process.
    pub fn start_workers(&mut self, concurrency: usize) {
        let (tx, rx) = oneshot::channel::<()>();
        let runtime = WorkerRuntime::new(self.ctx.clone(), concurrency)
            .shutdown_timeout(Duration::from_secs(2));
        let handle = tokio::spawn(async move {
            let _ = runtime
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.workers.push((tx, handle));
    }

    /// Stops every worker runtime started here and waits for them to drain.
    pub async fn stop_workers(&mut self) {
        for (tx, handle) in self.workers.drain(..) {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
        }
    }

    /// A new user with `balance` on their wallet.
    pub async fn funded_user(&mut self, balance: Money) -> UserId {
        self.next_user += 1;
        let user = UserId(self.next_user);
        let store = &self.ctx.store;
        store.users().ensure(user).await.expect("user");
        if balance.is_positive() {
            store
                .ledger()
                .topup(user, balance, &format!("seed:{user}"), None)
                .await
                .expect("top-up");
        }
        user
    }

    /// Confirms a generation of `model` with its defaults (plus a prompt and
    /// sample uploads where required) at `price`, as the front bot does, and
    /// enqueues its Submit job.
    pub async fn confirm(&self, user: UserId, model: &str, price: Money) -> GenerationId {
        let id = self
            .create(
                user,
                model,
                price,
                &format!("draft:{user}:{}", rand::rng().random::<u64>()),
            )
            .await;
        self.ctx
            .queues
            .push(Job::Submit(id))
            .await
            .expect("enqueue");
        id
    }

    /// Creates the pending generation (and its hold) without enqueuing.
    pub async fn create(
        &self,
        user: UserId,
        model: &str,
        price: Money,
        draft: &str,
    ) -> GenerationId {
        let m = self
            .ctx
            .catalog
            .get(model)
            .unwrap_or_else(|| panic!("model {model} in the catalog"));
        let mut given = BTreeMap::new();
        for f in &m.fields {
            if f.required && f.default.is_none() {
                let v = match &f.kind {
                    kiebot_domain::FieldKind::String { .. } => {
                        kiebot_domain::ParamValue::Text("a cat in a hat".into())
                    }
                    kiebot_domain::FieldKind::Upload { .. } => kiebot_domain::ParamValue::Files(
                        vec![format!("{}/files/input.png", self.kie.base_url())],
                    ),
                    _ => continue,
                };
                given.insert(f.name.clone(), v);
            }
        }
        let params = kiebot_domain::Params::validate(m, &given).expect("valid defaults");
        let new = NewGeneration {
            user,
            draft_key: draft.to_owned(),
            model: m.id.clone(),
            params_json: serde_json::to_string(params.values()).expect("params"),
            request_json: params.kie_request(m).to_string(),
            price,
            chat_id: user.0,
            deadline_secs: m.deadline_secs,
            max_active: 1_000_000,
            traceparent: None,
        };
        match self
            .ctx
            .store
            .generations()
            .create_pending(&new)
            .await
            .expect("create")
        {
            Creation::Created(id) | Creation::AlreadyExists(id) => id,
        }
    }

    /// Waits until no generation is pending, submitted or undelivered-succeeded
    /// and every finished one has been told to its user.
    pub async fn wait_settled(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let unfinished = self
                .ctx
                .store
                .generations()
                .count_unfinished()
                .await
                .map_err(|e| e.to_string())?;
            let untold = self.untold().await?;
            if unfinished == 0 && untold == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let counts = self
                    .ctx
                    .store
                    .generations()
                    .count_by_status()
                    .await
                    .map_err(|e| e.to_string())?;
                return Err(format!(
                    "not settled: {unfinished} unfinished, {untold} untold; by status {counts:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn untold(&self) -> Result<u64, String> {
        let counts = self
            .ctx
            .store
            .generations()
            .count_untold()
            .await
            .map_err(|e| e.to_string())?;
        Ok(counts)
    }

    /// The money invariants every scenario ends with: the ledger recomputes
    /// to every wallet, nothing is still held, and exactly the prices of the
    /// generations that succeeded were captured.
    pub async fn assert_money_consistent(&self) {
        let store = &self.ctx.store;
        let drift = store.ledger().check().await.expect("ledger check");
        assert!(drift.is_empty(), "ledger drift: {drift:?}");
        let totals = store.money_totals().await.expect("money totals");
        let succeeded = store
            .generations()
            .succeeded_total()
            .await
            .expect("succeeded total");
        assert_eq!(
            totals.captured, succeeded,
            "captured money must equal the prices of succeeded generations"
        );
        assert_eq!(
            totals.held,
            Money::ZERO,
            "nothing may stay held once every generation is terminal"
        );
    }

    /// Statuses of the given generations.
    pub async fn statuses(&self, ids: &[GenerationId]) -> Vec<GenerationStatus> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(
                self.ctx
                    .store
                    .generations()
                    .get(*id)
                    .await
                    .expect("get")
                    .expect("exists")
                    .status,
            );
        }
        out
    }

    /// Stops workers and removes the queue namespace (Redis keys) and the
    /// database.
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        if self.flavor == Flavor::Fleet {
            delete_redis_namespace(&self.redis_url, &self.namespace).await;
        }
        drop(self.db.take());
    }
}

/// Deletes every Redis key under `namespace:` (queues and rate limits).
pub async fn delete_redis_namespace(url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    for pattern in [format!("{namespace}:*"), format!("*{{{namespace}:*")] {
        let mut cursor: u64 = 0;
        loop {
            let reply: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await;
            let Ok((next, keys)) = reply else { break };
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}
