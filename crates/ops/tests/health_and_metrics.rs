//! `/healthz`, `/readyz`, `/metrics` and the webhook mount.

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::post;
use common::{Backend, Options, TestApp, funded_user, infrastructure, pending_generation};
use kiebot_jobs::Queues;
use kiebot_jobs::names::QueueNames;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
}

async fn readyz_is_ok_when_the_database_and_the_queue_answer(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["failed"], serde_json::json!([]));
}

#[tokio::test]
async fn readyz_is_ok_when_sqlite_and_the_embedded_queue_answer() {
    readyz_is_ok_when_the_database_and_the_queue_answer(Backend::Embedded).await;
}

#[tokio::test]
async fn readyz_is_ok_when_postgres_and_redis_answer() {
    readyz_is_ok_when_the_database_and_the_queue_answer(Backend::Fleet).await;
}

#[tokio::test]
async fn readyz_is_503_naming_the_queue_when_the_queue_is_unreachable() {
    let (db, store, _, _) = infrastructure(Backend::Embedded).await;
    // A queue whose pool is closed answers nothing, like a lost connection.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/queue.db?mode=rwc", dir.path().display());
    let queues = Queues::sqlite(&url, QueueNames::new("closed"))
        .await
        .unwrap();
    if let Queues::Sqlite { pool, .. } = &queues {
        pool.close().await;
    }
    let app = TestApp::start_with(Options::new(Backend::Embedded), db, store, queues, None).await;

    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "ok");
    assert_eq!(body["queue"], "unavailable");
    assert_eq!(body["failed"], serde_json::json!(["queue"]));
    // The liveness probe does not care.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn readyz_is_503_naming_the_database_when_the_database_is_unreachable() {
    let app = TestApp::start(Options::new(Backend::Fleet)).await;
    app.store.close().await;

    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["database"], "unavailable");
    assert_eq!(body["queue"], "ok");
    assert_eq!(body["failed"], serde_json::json!(["database"]));
}

async fn metrics_show_generations_by_state_and_queue_depths(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let user = funded_user(&app.store, 41, 10_000).await;
    pending_generation(&app.store, user, 500).await;

    // The gauges come from the background refresher, not from the scrape.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kiebot_ops::metrics::refresh_gauges_every(
        app.store.clone(),
        app.queues.clone(),
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(5),
        async {
            let _ = stopped.await;
        },
    ));
    let submit_queue = app.queues.names().submit.clone();
    let wanted = format!("kiebot_queue_depth{{queue=\"{submit_queue}\"}} 0");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let res = app.get("/metrics").await;
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = res.text().await.unwrap();
        if text.contains(&wanted) || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let _ = stop.send(());
    assert!(
        text.contains("kiebot_generations_by_status{status=\"pending\"}"),
        "{text}"
    );
    assert!(
        text.contains("kiebot_generations_by_status{status=\"delivered\"}"),
        "{text}"
    );
    assert!(text.contains(&wanted), "{text}");
    assert!(
        text.contains("kiebot_db_gauges_refreshed_seconds"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_show_generations_by_state_and_queue_depths_on_sqlite() {
    metrics_show_generations_by_state_and_queue_depths(Backend::Embedded).await;
}

#[tokio::test]
async fn metrics_show_generations_by_state_and_queue_depths_on_postgres_and_redis() {
    metrics_show_generations_by_state_and_queue_depths(Backend::Fleet).await;
}

#[tokio::test]
async fn installing_the_metrics_recorder_twice_returns_the_same_recorder() {
    let first = kiebot_ops::install_metrics_recorder();
    let second = kiebot_ops::install_metrics_recorder();
    metrics::counter!("kiebot_ops_test_recorder_total").increment(1);
    assert!(first.render().contains("kiebot_ops_test_recorder_total"));
    assert!(second.render().contains("kiebot_ops_test_recorder_total"));
}

#[tokio::test]
async fn a_webhook_router_is_served_beside_the_ops_routes() {
    let mut opts = Options::new(Backend::Embedded);
    opts.webhook =
        Some(axum::Router::new().route("/telegram/webhook", post(|| async { "telegram" })));
    let app = TestApp::start(opts).await;

    let res = app
        .client
        .post(app.url("/telegram/webhook"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "telegram");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    assert_eq!(app.get("/nope").await.status(), 404);
}
