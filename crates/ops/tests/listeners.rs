//! The two listeners: what each serves, and the guards both run behind
//! (body limit, request timeout).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::post;
use common::{Backend, SECRET, TOKEN, infrastructure};
use kiebot_ops::{HttpLimits, OpsState};
use kiebot_store::{PoolSize, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The limits of these tests: a small body limit and a short timeout.
const LIMITS: HttpLimits = HttpLimits {
    request_timeout: Duration::from_millis(500),
    body_limit: 4 * 1024,
    max_connections: 64,
};

struct Listeners {
    public: SocketAddr,
    ops: SocketAddr,
    client: reqwest::Client,
    store: Store,
    _stop: Vec<oneshot::Sender<()>>,
    _db: kiebot_testkit::TestDb,
    redis_namespace: Option<String>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if let Some(ns) = self.redis_namespace.take() {
            common::delete_redis_namespace(&ns);
        }
    }
}

async fn spawn(router: axum::Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(kiebot_ops::serve_limited(listener, router, LIMITS, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Both listeners over `store`; the webhook never answers (a slow handler).
async fn start(backend: Backend, pool: Option<u32>) -> Listeners {
    let (db, store, queues, redis_namespace) = infrastructure(backend).await;
    let store = match pool {
        Some(n) => {
            let s = Store::connect_with(db.url(), PoolSize::new(n))
                .await
                .unwrap();
            s.migrate().await.unwrap();
            s
        }
        None => store,
    };
    let webhook = axum::Router::new()
        .route(
            "/telegram/webhook",
            post(|body: axum::body::Bytes| async move { format!("got {}", body.len()) }),
        )
        .route("/telegram/slow", post(std::future::pending::<&'static str>));
    let state = OpsState {
        store: store.clone(),
        queues,
        dashboard_token: Some(TOKEN.into()),
        callback_secret: Some(SECRET.into()),
        callback_hmac_key: None,
        metrics: Some(kiebot_ops::install_metrics_recorder()),
        webhook: Some(webhook),
    };
    let (public, a) = spawn(kiebot_ops::public_router(state.clone())).await;
    let (ops, b) = spawn(kiebot_ops::ops_router(state)).await;
    Listeners {
        public,
        ops,
        client: reqwest::Client::new(),
        store,
        _stop: vec![a, b],
        _db: db,
        redis_namespace,
    }
}

impl Listeners {
    async fn get(&self, addr: SocketAddr, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, addr: SocketAddr, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("http://{addr}{path}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

async fn each_listener_serves_only_its_routes(backend: Backend) {
    let l = start(backend, None).await;
    // The public listener: health, the webhook and the KIE callback only.
    for path in [
        "/metrics",
        "/readyz",
        "/dashboard",
        "/dashboard/summary",
        "/dashboard/api/v1/queues",
    ] {
        assert_eq!(
            l.get(l.public, path).await.status(),
            404,
            "{path} on the public listener"
        );
    }
    assert_eq!(l.get(l.public, "/healthz").await.status(), 200);
    let hook = l.post(l.public, "/telegram/webhook", b"{}".to_vec()).await;
    assert_eq!(hook.status(), 200);
    // The callback route exists there (an unknown task is still 200: a
    // hint, see the callback tests); with a wrong secret it is refused.
    let cb = l
        .post(
            l.public,
            &format!("/kie/callback/{SECRET}"),
            common::callback_body("no-such-task", "success").into_bytes(),
        )
        .await;
    assert_ne!(cb.status(), 404, "the callback is public");

    // The ops listener: health, readiness, metrics, the dashboard; neither
    // the webhook nor the callback.
    assert_eq!(l.get(l.ops, "/healthz").await.status(), 200);
    assert_eq!(l.get(l.ops, "/readyz").await.status(), 200);
    let metrics = l.get(l.ops, "/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.text().await.unwrap().contains("# TYPE"),
        "metrics render"
    );
    assert_eq!(l.get(l.ops, "/dashboard/summary").await.status(), 200);
    assert_eq!(
        l.post(l.ops, "/telegram/webhook", b"{}".to_vec())
            .await
            .status(),
        404
    );
    assert_eq!(
        l.post(
            l.ops,
            &format!("/kie/callback/{SECRET}"),
            common::callback_body("no-such-task", "success").into_bytes()
        )
        .await
        .status(),
        404
    );
}

#[tokio::test]
async fn each_listener_serves_only_its_routes_on_sqlite() {
    each_listener_serves_only_its_routes(Backend::Embedded).await;
}

#[tokio::test]
async fn each_listener_serves_only_its_routes_on_postgres_and_redis() {
    each_listener_serves_only_its_routes(Backend::Fleet).await;
}

#[tokio::test]
async fn an_oversize_body_is_refused_on_both_listeners() {
    let l = start(Backend::Embedded, None).await;
    let big = vec![b'x'; LIMITS.body_limit + 1];
    // Public: the webhook and the callback.
    let res = l.post(l.public, "/telegram/webhook", big.clone()).await;
    assert_eq!(res.status(), 413);
    let res = l
        .post(l.public, &format!("/kie/callback/{SECRET}"), big.clone())
        .await;
    assert_eq!(res.status(), 413);
    // Ops: a dashboard action.
    let res = l
        .post(l.ops, "/dashboard/generations/1/retry", big.clone())
        .await;
    assert_eq!(res.status(), 413);
    // Just under the limit passes.
    let ok = l
        .post(l.public, "/telegram/webhook", vec![b'x'; LIMITS.body_limit])
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.text().await.unwrap(),
        format!("got {}", LIMITS.body_limit)
    );

    // A body without Content-Length (chunked) is cut off as it streams in.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'y'; 1024])).collect();
    let res = l
        .client
        .post(format!("http://{}/telegram/webhook", l.public))
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(items)
}

/// Sends a request whose body never finishes and reads the status line.
async fn trickled_status(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         authorization: Bearer {TOKEN}\r\ncontent-length: 1000\r\n\r\n{{\"a\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_slow_request_is_timed_out_on_both_listeners() {
    // One database connection, held by the test: the ops listener's
    // readiness check then waits for the database (its own check timeout is
    // 3 s, the request timeout here 0.5 s).
    let l = start(Backend::Fleet, Some(1)).await;

    // Public: a KIE callback whose body never finishes, and a slow handler.
    assert_eq!(
        trickled_status(l.public, &format!("/kie/callback/{SECRET}")).await,
        "HTTP/1.1 408 Request Timeout"
    );
    assert_eq!(
        l.post(l.public, "/telegram/slow", b"{}".to_vec())
            .await
            .status(),
        408
    );

    let held = l.store.pool().acquire().await.unwrap();
    assert_eq!(l.get(l.ops, "/readyz").await.status(), 408);
    // `/metrics` does not wait on the database: it only renders.
    assert_eq!(l.get(l.ops, "/metrics").await.status(), 200);
    drop(held);
    // The database answers again: so does readiness.
    assert_eq!(l.get(l.ops, "/readyz").await.status(), 200);
}

#[tokio::test]
async fn one_listener_serves_everything_when_the_addresses_are_equal() {
    // What `OPS_ADDR` = `HTTP_ADDR` runs: the combined router.
    let (db, store, queues, _) = infrastructure(Backend::Embedded).await;
    let state = OpsState {
        store,
        queues,
        dashboard_token: Some(TOKEN.into()),
        callback_secret: Some(SECRET.into()),
        callback_hmac_key: None,
        metrics: Some(kiebot_ops::install_metrics_recorder()),
        webhook: Some(axum::Router::new().route("/telegram/webhook", post(|| async { "tg" }))),
    };
    let (addr, _stop) = spawn(kiebot_ops::router(state)).await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let res = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = client
        .post(format!("http://{addr}/telegram/webhook"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "tg");
    drop(db);
}
