//! The dashboard: token, read-only board API, and the operator actions.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Backend, Options, TOKEN, TestApp, funded_user, pending_generation, submitted_generation,
};
use kiebot_jobs::Job;
use kiebot_store::{GenerationStatus, Money};
use serde_json::Value;

#[tokio::test]
async fn the_dashboard_does_not_exist_without_a_configured_token() {
    let mut opts = Options::new(Backend::Embedded);
    opts.token = None;
    let app = TestApp::start(opts).await;
    for path in [
        "/dashboard",
        "/dashboard/api/v1/queues",
        "/dashboard/generations/1",
    ] {
        let res = app
            .client
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = app.post_authed("/dashboard/generations/1/cancel").await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let path = "/dashboard/api/v1/queues";

    let res = app.get(path).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");

    let res = app
        .client
        .get(app.url(path))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = app.get(&format!("{path}?token=wrong")).await;
    assert_eq!(res.status(), 401);

    // A prefix of the token is not the token.
    let res = app.get(&format!("{path}?token={}", &TOKEN[..4])).await;
    assert_eq!(res.status(), 401);

    let res = app.post_authed("/dashboard/generations/1/cancel").await;
    assert_ne!(res.status(), 401, "the right token opens the actions too");
    let res = app
        .client
        .post(app.url("/dashboard/generations/1/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn the_right_token_opens_the_dashboard(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let user = funded_user(&app.store, 9, 10_000).await;
    let id = pending_generation(&app.store, user, 100).await;
    app.queues.push(Job::Submit(id)).await.unwrap();
    let submit = app.queues.names().submit.clone();

    // Bearer header.
    let res = app.get_authed("/dashboard/api/v1/overview").await;
    let status = res.status();
    let overview: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{overview}");
    assert!(overview.is_array(), "{overview}");

    // Token in the query (a browser); the board sees its own query only.
    let res = app
        .get(&format!("/dashboard/api/v1/tasks?token={TOKEN}&page=1"))
        .await;
    let status = res.status();
    let tasks: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{tasks}");
    assert!(!tasks.as_array().unwrap().is_empty(), "{tasks}");

    // Our own numbers, on every backend.
    let res = app.get_authed("/dashboard/summary").await;
    assert_eq!(res.status(), 200);
    let summary: Value = res.json().await.unwrap();
    let queues = summary["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 4);
    assert_eq!(queues[0]["name"], submit.as_str());
    let pending = summary["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "pending")
        .unwrap();
    assert_eq!(pending["count"], 1);

    let res = app.get_authed("/dashboard").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains(&submit), "{page}");
    assert!(page.contains("pending"), "{page}");
}

#[tokio::test]
async fn the_board_shows_each_queue_of_the_embedded_backend() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let user = funded_user(&app.store, 10, 10_000).await;
    let id = pending_generation(&app.store, user, 100).await;
    app.queues.push(Job::Submit(id)).await.unwrap();
    let submit = app.queues.names().submit.clone();

    let res = app
        .get_authed(&format!("/dashboard/api/v1/queues/{submit}/tasks"))
        .await;
    assert_eq!(res.status(), 200);
    let tasks: Value = res.json().await.unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks[0]["args"]["generation"], id.0);

    let res = app
        .get_authed(&format!("/dashboard/api/v1/queues/{submit}/stats"))
        .await;
    assert_eq!(res.status(), 200);
    let res = app.get_authed("/dashboard/api/v1/queues").await;
    assert_eq!(res.status(), 200);
    let queues: Value = res.json().await.unwrap();
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == submit.as_str()),
        "{queues}"
    );
}

#[tokio::test]
async fn the_right_token_opens_the_dashboard_on_the_embedded_queue() {
    the_right_token_opens_the_dashboard(Backend::Embedded).await;
}

#[tokio::test]
async fn the_right_token_opens_the_dashboard_on_redis() {
    the_right_token_opens_the_dashboard(Backend::Fleet).await;
}

async fn the_board_api_refuses_writes_with_405(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let submit = app.queues.names().submit.clone();
    let path = format!("/dashboard/api/v1/queues/{submit}/tasks");

    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"generation": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);

    // PUT is the board's own "push a job": it must not get through either.
    let res = app
        .client
        .put(app.url(&path))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"generation": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

#[tokio::test]
async fn the_board_api_refuses_writes_with_405_on_the_embedded_queue() {
    the_board_api_refuses_writes_with_405(Backend::Embedded).await;
}

#[tokio::test]
async fn the_board_api_refuses_writes_with_405_on_redis() {
    the_board_api_refuses_writes_with_405(Backend::Fleet).await;
}

#[tokio::test]
async fn a_generation_is_shown_as_json() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let user = funded_user(&app.store, 7, 10_000).await;
    let id = submitted_generation(&app.store, user, 500, "task_show").await;

    let res = app
        .get_authed(&format!("/dashboard/generations/{}", id.0))
        .await;
    assert_eq!(res.status(), 200);
    let g: Value = res.json().await.unwrap();
    assert_eq!(g["id"], id.0);
    assert_eq!(g["status"], "submitted");
    assert_eq!(g["kie_task_id"], "task_show");
    assert_eq!(g["price_minor"], 500);
    assert_eq!(g["request"]["model"], "google/nano-banana");

    let res = app.get_authed("/dashboard/generations/999999").await;
    assert_eq!(res.status(), 404);
}

async fn cancel_releases_the_hold_and_queues_a_notice(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let user = funded_user(&app.store, 11, 10_000).await;
    let id = submitted_generation(&app.store, user, 700, "task_cancel").await;
    let wallet = app.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.held, Money::from_minor(700));

    let res = app
        .post_authed(&format!("/dashboard/generations/{}/cancel", id.0))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "canceled");
    assert_eq!(body["queued"], true);

    let g = app.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.status, GenerationStatus::Canceled);
    assert_eq!(g.fail_code.as_deref(), Some("canceled"));
    let wallet = app.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.held, Money::ZERO);
    assert_eq!(
        wallet.balance,
        Money::from_minor(10_000),
        "nothing was charged"
    );
    assert!(app.store.ledger().check().await.unwrap().is_empty());
    assert_eq!(app.depths().await, (0, 0, 0, 1), "the notice is on its way");

    // Canceling again changes nothing and charges nothing.
    let res = app
        .post_authed(&format!("/dashboard/generations/{}/cancel", id.0))
        .await;
    assert_eq!(res.status(), 200);
    let wallet = app.store.ledger().wallet(user).await.unwrap();
    assert_eq!(
        (wallet.balance, wallet.held),
        (Money::from_minor(10_000), Money::ZERO)
    );
    assert!(app.store.ledger().check().await.unwrap().is_empty());
}

#[tokio::test]
async fn cancel_releases_the_hold_and_queues_a_notice_on_sqlite() {
    cancel_releases_the_hold_and_queues_a_notice(Backend::Embedded).await;
}

#[tokio::test]
async fn cancel_releases_the_hold_and_queues_a_notice_on_postgres_and_redis() {
    cancel_releases_the_hold_and_queues_a_notice(Backend::Fleet).await;
}

async fn cancel_refuses_a_succeeded_generation_with_409(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let user = funded_user(&app.store, 12, 10_000).await;
    let id = submitted_generation(&app.store, user, 300, "task_done").await;
    common::succeed(&app.store, id).await;
    let before = app.store.ledger().wallet(user).await.unwrap();

    let res = app
        .post_authed(&format!("/dashboard/generations/{}/cancel", id.0))
        .await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "succeeded");

    let g = app.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.status, GenerationStatus::Succeeded);
    assert_eq!(app.store.ledger().wallet(user).await.unwrap(), before);
    assert!(app.store.ledger().check().await.unwrap().is_empty());
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

#[tokio::test]
async fn cancel_refuses_a_succeeded_generation_with_409_on_sqlite() {
    cancel_refuses_a_succeeded_generation_with_409(Backend::Embedded).await;
}

#[tokio::test]
async fn cancel_refuses_a_succeeded_generation_with_409_on_postgres_and_redis() {
    cancel_refuses_a_succeeded_generation_with_409(Backend::Fleet).await;
}

#[tokio::test]
async fn cancel_of_an_unknown_generation_is_404() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let res = app
        .post_authed("/dashboard/generations/424242/cancel")
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

async fn retry_queues_the_job_the_state_needs(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let user = funded_user(&app.store, 13, 10_000).await;
    let pending = pending_generation(&app.store, user, 100).await;
    let submitted = submitted_generation(&app.store, user, 100, "task_retry").await;

    let res = app
        .post_authed(&format!("/dashboard/generations/{}/retry", pending.0))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["job"], "submit");
    assert_eq!(body["queued"], true);
    assert_eq!(app.depths().await, (1, 0, 0, 0));

    let before = kiebot_store::now_ms();
    let res = app
        .post_authed(&format!("/dashboard/generations/{}/retry", submitted.0))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "submitted");
    assert_eq!(body["job"], "poll");
    assert_eq!(app.depths().await, (1, 1, 0, 0));
    let g = app
        .store
        .generations()
        .get(submitted)
        .await
        .unwrap()
        .unwrap();
    assert!(
        g.next_poll_at.unwrap() <= kiebot_store::now_ms(),
        "the poll is due now"
    );
    assert!(g.next_poll_at.unwrap() >= before - 1_000);

    // Nothing about the money changed.
    let wallet = app.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.held, Money::from_minor(200));
    assert!(app.store.ledger().check().await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_queues_the_job_the_state_needs_on_sqlite() {
    retry_queues_the_job_the_state_needs(Backend::Embedded).await;
}

#[tokio::test]
async fn retry_queues_the_job_the_state_needs_on_postgres_and_redis() {
    retry_queues_the_job_the_state_needs(Backend::Fleet).await;
}

#[tokio::test]
async fn retry_of_a_succeeded_generation_queues_its_delivery() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let user = funded_user(&app.store, 14, 10_000).await;
    let id = submitted_generation(&app.store, user, 100, "task_deliver").await;
    common::succeed(&app.store, id).await;

    let res = app
        .post_authed(&format!("/dashboard/generations/{}/retry", id.0))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["job"], "deliver");
    assert_eq!(app.depths().await, (0, 0, 0, 1));
}

#[tokio::test]
async fn retry_of_an_unknown_generation_is_404() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let res = app.post_authed("/dashboard/generations/424242/retry").await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}
