//! A test app: the real ops router on a random loopback port, over a fresh
//! database and an isolated queue.

#![allow(dead_code)]

use std::net::SocketAddr;

use kiebot_domain::ModelId;
use kiebot_jobs::Queues;
use kiebot_jobs::names::QueueNames;
use kiebot_ops::OpsState;
use kiebot_store::{GenerationId, Money, NewGeneration, Store, UserId};
use kiebot_testkit::TestDb;
use rand::Rng;
use tokio::sync::oneshot;

/// The token the tests configure.
pub const TOKEN: &str = "t0ken-for-tests";
/// The callback secret the tests configure.
pub const SECRET: &str = "s3cret-for-tests";

/// Where the data and the jobs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded: SQLite file, apalis-sqlite in the same file.
    Embedded,
    /// Fleet: PostgreSQL and Redis.
    Fleet,
}

/// What the app is configured with.
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    pub token: Option<String>,
    pub secret: Option<String>,
    pub hmac_key: Option<String>,
    pub webhook: Option<axum::Router>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Options {
            backend,
            token: Some(TOKEN.into()),
            secret: Some(SECRET.into()),
            hmac_key: None,
            webhook: None,
        }
    }
}

/// A running app. Dropping it stops the server, drops the database and
/// deletes the queue's Redis keys.
pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub queues: Queues,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    redis_namespace: Option<String>,
    _db: TestDb,
}

/// The Redis server of the tests.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh, migrated store and an isolated queue for `backend`.
pub async fn infrastructure(backend: Backend) -> (TestDb, Store, Queues, Option<String>) {
    let namespace = format!("kiebot-ops-test-{:016x}", rand::rng().random::<u64>());
    let names = QueueNames::new(&namespace);
    match backend {
        Backend::Embedded => {
            let db = TestDb::sqlite();
            let store = Store::connect(db.url()).await.unwrap();
            store.migrate().await.unwrap();
            let queues = Queues::sqlite(db.url(), names).await.unwrap();
            (db, store, queues, None)
        }
        Backend::Fleet => {
            let db = TestDb::postgres().await;
            let store = Store::connect(db.url()).await.unwrap();
            store.migrate().await.unwrap();
            let queues = Queues::redis(&redis_url(), names).await.unwrap();
            (db, store, queues, Some(namespace))
        }
    }
}

impl TestApp {
    /// Starts the app.
    pub async fn start(opts: Options) -> TestApp {
        let (db, store, queues, redis_namespace) = infrastructure(opts.backend).await;
        Self::start_with(opts, db, store, queues, redis_namespace).await
    }

    /// Starts the app over infrastructure the test prepared.
    pub async fn start_with(
        opts: Options,
        db: TestDb,
        store: Store,
        queues: Queues,
        redis_namespace: Option<String>,
    ) -> TestApp {
        let state = OpsState {
            store: store.clone(),
            queues: queues.clone(),
            dashboard_token: opts.token,
            callback_secret: opts.secret,
            callback_hmac_key: opts.hmac_key,
            metrics: Some(kiebot_ops::install_metrics_recorder()),
            webhook: opts.webhook,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let router = kiebot_ops::router(state);
        tokio::spawn(async move {
            kiebot_ops::serve_listener(listener, router, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestApp {
            addr,
            store,
            queues,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            redis_namespace,
            _db: db,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET with the dashboard token as a bearer header.
    pub async fn get_authed(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// POST with the dashboard token as a bearer header.
    pub async fn post_authed(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` to the KIE callback with `secret`.
    pub async fn callback(&self, secret: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/kie/callback/{secret}")))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` to the KIE callback with `secret` and signature headers.
    pub async fn signed_callback(
        &self,
        secret: &str,
        body: &str,
        timestamp: &str,
        signature: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/kie/callback/{secret}")))
            .header("content-type", "application/json")
            .header(kiebot_kie::webhook::TIMESTAMP_HEADER, timestamp)
            .header(kiebot_kie::webhook::SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Jobs waiting in the named queue.
    ///
    /// On SQLite this is [`Queues::depths`]. apalis-redis 1.0 parks every
    /// pushed job in the queue's `scheduled` set (due at once) until a
    /// worker moves it to `active`, and `depths()` counts `active` only, so
    /// on Redis the tests count both (no worker runs here).
    pub async fn depth(&self, queue: &str) -> u64 {
        let listed = self
            .queues
            .depths()
            .await
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == queue)
            .map(|(_, n)| n)
            .unwrap();
        match &self.queues {
            Queues::Sqlite { .. } => listed,
            Queues::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let active: u64 = redis::cmd("LLEN")
                    .arg(format!("{queue}:active"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let scheduled: u64 = redis::cmd("ZCARD")
                    .arg(format!("{queue}:scheduled"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                active + scheduled
            }
        }
    }

    /// Jobs waiting, per kind: (submit, poll, finalize, deliver).
    pub async fn depths(&self) -> (u64, u64, u64, u64) {
        let names = self.queues.names().clone();
        (
            self.depth(&names.submit).await,
            self.depth(&names.poll).await,
            self.depth(&names.finalize).await,
            self.depth(&names.deliver).await,
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(ns) = self.redis_namespace.take() {
            delete_redis_namespace(&ns);
        }
    }
}

/// Deletes every Redis key of a test namespace (a blocking client: this runs
/// in `Drop`).
pub fn delete_redis_namespace(namespace: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = match redis::Commands::scan_match(&mut conn, format!("{namespace}:*")) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
    }
}

/// A user with `balance` (minor units) on their wallet.
pub async fn funded_user(store: &Store, id: i64, balance: i64) -> UserId {
    let user = UserId(id);
    store.users().ensure(user).await.unwrap();
    store
        .ledger()
        .topup(
            user,
            Money::from_minor(balance),
            &format!("test-topup-{id}"),
            None,
        )
        .await
        .unwrap();
    user
}

/// A pending generation of `user` costing `price` (minor units).
pub async fn pending_generation(store: &Store, user: UserId, price: i64) -> GenerationId {
    let draft = format!("draft-{}-{:08x}", user.0, rand::rng().random::<u32>());
    store
        .generations()
        .create_pending(&NewGeneration {
            user,
            draft_key: draft,
            model: ModelId::parse("google/nano-banana").unwrap(),
            params_json: r#"{"prompt":"a cat in a hat"}"#.into(),
            request_json: r#"{"model":"google/nano-banana","input":{"prompt":"a cat in a hat"}}"#
                .into(),
            price: Money::from_minor(price),
            chat_id: user.0,
            deadline_secs: 600,
            max_active: 5,
            traceparent: None,
        })
        .await
        .unwrap()
        .id()
}

/// A submitted generation (KIE task `task_id`) whose next poll is far away.
pub async fn submitted_generation(
    store: &Store,
    user: UserId,
    price: i64,
    task_id: &str,
) -> GenerationId {
    let id = pending_generation(store, user, price).await;
    let later = kiebot_store::now_ms() + 3_600_000;
    assert!(
        store
            .generations()
            .mark_submitted(id, task_id, later, later + 600_000)
            .await
            .unwrap()
    );
    id
}

/// A KIE callback body for `task_id` in `state`.
pub fn callback_body(task_id: &str, state: &str) -> String {
    serde_json::json!({
        "code": 200,
        "msg": "success",
        "data": {
            "taskId": task_id,
            "state": state,
            "resultJson": "{\"resultUrls\":[\"https://example.com/1.png\"]}",
            "failCode": "",
            "failMsg": ""
        }
    })
    .to_string()
}

/// Records a successful KIE result for a submitted generation as the
/// finalizer does (the hold is captured; the delivery claim it takes has
/// already run out).
pub async fn succeed(store: &Store, id: GenerationId) {
    assert!(
        store
            .generations()
            .finish_and_claim(
                id,
                kiebot_domain::GenerationStatus::Succeeded,
                &kiebot_domain::TaskOutcome::Success {
                    result: r#"{"resultUrls":["https://example.com/1.png"]}"#.into(),
                },
                0,
            )
            .await
            .unwrap()
            .is_some()
    );
}
