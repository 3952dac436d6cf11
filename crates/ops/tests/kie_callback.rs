//! `POST /kie/callback/{secret}`: a hint that makes a poll due now.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Options, SECRET, TestApp, callback_body, funded_user, submitted_generation};
use kiebot_store::{GenerationStatus, Money};
use serde_json::Value;

#[tokio::test]
async fn a_callback_with_a_wrong_secret_is_404_and_changes_nothing() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let user = funded_user(&app.store, 21, 10_000).await;
    let id = submitted_generation(&app.store, user, 500, "task_wrong").await;
    let before = app.store.generations().get(id).await.unwrap().unwrap();

    let res = app
        .callback("not-the-secret", &callback_body("task_wrong", "success"))
        .await;
    assert_eq!(res.status(), 404);
    let res = app
        .callback(
            &SECRET[..SECRET.len() - 1],
            &callback_body("task_wrong", "success"),
        )
        .await;
    assert_eq!(res.status(), 404);

    let after = app.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(after.next_poll_at, before.next_poll_at);
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

#[tokio::test]
async fn the_callback_does_not_exist_without_a_configured_secret() {
    let mut opts = Options::new(Backend::Embedded);
    opts.secret = None;
    let app = TestApp::start(opts).await;
    let res = app
        .callback(SECRET, &callback_body("task_x", "success"))
        .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_garbage_callback_body_is_400() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    for body in [
        "<html>",
        "",
        r#"{"code":200,"data":null}"#,
        r#"{"code":200,"data":{"state":"success"}}"#,
    ] {
        let res = app.callback(SECRET, body).await;
        assert_eq!(res.status(), 400, "{body:?}");
    }
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

#[tokio::test]
async fn a_callback_for_an_unknown_task_is_acknowledged_and_ignored() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let res = app
        .callback(SECRET, &callback_body("task_nobody_knows", "success"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"ok": true, "ignored": true}));
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

async fn a_callback_makes_the_poll_due_now_and_queues_it(backend: Backend) {
    let app = TestApp::start(Options::new(backend)).await;
    let user = funded_user(&app.store, 22, 10_000).await;
    let id = submitted_generation(&app.store, user, 500, "task_known").await;
    let before = app.store.generations().get(id).await.unwrap().unwrap();
    assert!(before.next_poll_at.unwrap() > kiebot_store::now_ms() + 60_000);

    let res = app
        .callback(SECRET, &callback_body("task_known", "success"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"ok": true}));

    let after = app.store.generations().get(id).await.unwrap().unwrap();
    assert!(
        after.next_poll_at.unwrap() <= kiebot_store::now_ms(),
        "the poll is due now"
    );
    // A hint only: nothing finalized, nothing captured.
    assert_eq!(after.status, GenerationStatus::Submitted);
    assert_eq!(after.result_json, None);
    let wallet = app.store.ledger().wallet(user).await.unwrap();
    assert_eq!(
        (wallet.balance, wallet.held),
        (Money::from_minor(10_000), Money::from_minor(500))
    );
    assert_eq!(app.depths().await, (0, 1, 0, 0));

    // The same callback again (KIE retries, or someone replays it) is
    // acknowledged and still decides nothing.
    let res = app
        .callback(SECRET, &callback_body("task_known", "success"))
        .await;
    assert_eq!(res.status(), 200);
    let again = app.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(again.status, GenerationStatus::Submitted);
    assert_eq!(again.result_json, None);
    let wallet = app.store.ledger().wallet(user).await.unwrap();
    assert_eq!(
        (wallet.balance, wallet.held),
        (Money::from_minor(10_000), Money::from_minor(500))
    );
    assert!(app.store.ledger().check().await.unwrap().is_empty());
    let (submit, polls, finalize, deliver) = app.depths().await;
    assert_eq!((submit, finalize, deliver), (0, 0, 0));
    assert!(
        (1..=2).contains(&polls),
        "at most one poll per callback, got {polls}"
    );
}

#[tokio::test]
async fn a_callback_makes_the_poll_due_now_and_queues_it_on_sqlite() {
    a_callback_makes_the_poll_due_now_and_queues_it(Backend::Embedded).await;
}

#[tokio::test]
async fn a_callback_makes_the_poll_due_now_and_queues_it_on_postgres_and_redis() {
    a_callback_makes_the_poll_due_now_and_queues_it(Backend::Fleet).await;
}

#[tokio::test]
async fn a_callback_for_a_generation_that_is_no_longer_waiting_is_ignored() {
    let app = TestApp::start(Options::new(Backend::Fleet)).await;
    let user = funded_user(&app.store, 23, 10_000).await;
    let id = submitted_generation(&app.store, user, 500, "task_finished").await;
    common::succeed(&app.store, id).await;

    let res = app
        .callback(SECRET, &callback_body("task_finished", "fail"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["ignored"], true);
    let g = app.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.status, GenerationStatus::Succeeded);
    assert_eq!(app.depths().await, (0, 0, 0, 0));
}

#[tokio::test]
async fn callbacks_are_counted_by_outcome() {
    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    app.callback("wrong", &callback_body("t", "success")).await;
    app.callback(SECRET, "garbage").await;
    app.callback(
        SECRET,
        &callback_body("task_unknown_for_metrics", "success"),
    )
    .await;

    let text = app.get("/metrics").await.text().await.unwrap();
    for outcome in ["bad_secret", "invalid", "unknown_task"] {
        let series = format!("kiebot_kie_callbacks_total{{outcome=\"{outcome}\"}}");
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }
}

#[tokio::test]
async fn with_an_hmac_key_only_callbacks_signed_by_kie_move_the_poll() {
    let mut opts = Options::new(Backend::Embedded);
    opts.hmac_key = Some("account-webhook-key".into());
    let app = TestApp::start(opts).await;
    let user = funded_user(&app.store, 23, 10_000).await;
    let id = submitted_generation(&app.store, user, 500, "task_signed").await;
    let body = callback_body("task_signed", "success");
    let now = (kiebot_store::now_ms() / 1000).to_string();

    // Unsigned, signed with another key, signed for another task, replayed
    // from long ago: refused, and the poll stays where it was.
    let unsigned = app.callback(SECRET, &body).await;
    assert_eq!(unsigned.status(), 401);
    let forged = kiebot_kie::webhook::sign("guessed-key", "task_signed", &now);
    assert_eq!(
        app.signed_callback(SECRET, &body, &now, &forged)
            .await
            .status(),
        401
    );
    let other_task = kiebot_kie::webhook::sign("account-webhook-key", "task_other", &now);
    assert_eq!(
        app.signed_callback(SECRET, &body, &now, &other_task)
            .await
            .status(),
        401
    );
    let old = "1700000000";
    let stale = kiebot_kie::webhook::sign("account-webhook-key", "task_signed", old);
    assert_eq!(
        app.signed_callback(SECRET, &body, old, &stale)
            .await
            .status(),
        401
    );
    let still = app.store.generations().get(id).await.unwrap().unwrap();
    assert!(still.next_poll_at.unwrap() > kiebot_store::now_ms() + 60_000);
    assert_eq!(app.depths().await, (0, 0, 0, 0));

    // KIE's own signature: the poll is due now.
    let good = kiebot_kie::webhook::sign("account-webhook-key", "task_signed", &now);
    let res = app.signed_callback(SECRET, &body, &now, &good).await;
    assert_eq!(res.status(), 200);
    let after = app.store.generations().get(id).await.unwrap().unwrap();
    assert!(after.next_poll_at.unwrap() <= kiebot_store::now_ms());
}
