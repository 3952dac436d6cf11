//! The KIE client against the fake KIE server from `kiebot-testkit`: real HTTP
//! on loopback, scripted outcomes and faults.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes as UploadBytes;
use kiebot_domain::{Credits, Family};
use kiebot_kie::{
    ApiKey, KieClient, KieConfig, KieError, RetryPolicy, TaskId, TaskRecord, TaskState,
    parse_callback, retrying,
};
use kiebot_testkit::kie::{BadReply, CallbackMode, Endpoint, FakeKie, Finish, Outcome, TINY_PNG};
use serde_json::{Value, json};
use url::Url;

fn config_for(fake: &FakeKie, key: &str) -> KieConfig {
    let mut config = KieConfig::with_base(
        Url::parse(&fake.base_url()).expect("fake base URL"),
        ApiKey::new(key.to_owned()),
    );
    config.upload_base = Url::parse(&fake.upload_base()).expect("fake upload URL");
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(1);
    config.upload_timeout = Duration::from_secs(5);
    config
}

fn client_for(fake: &FakeKie) -> KieClient {
    KieClient::new(config_for(fake, fake.api_key())).expect("client")
}

fn cat_request() -> Value {
    json!({"model": "google/nano-banana", "input": {"prompt": "a cat in a hat", "output_format": "png"}})
}

fn quick_policy(max_attempts: usize) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_attempts,
        jitter: true,
    }
}

/// Polls until the task is final, collecting every state seen.
async fn poll_to_end(client: &KieClient, id: &TaskId) -> (TaskRecord, Vec<&'static str>) {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let record = client
            .record_info(Family::Market, id)
            .await
            .expect("recordInfo");
        seen.push(record.state.name());
        if record.state.is_final() {
            return (record, seen);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("task {id} never finished; states seen: {seen:?}");
}

/// A small HTTP server standing in for the bot's callback endpoint.
async fn callback_receiver() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let app = Router::new()
        .route(
            "/kie/callback/s3cret",
            post(
                |State(store): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    store.lock().expect("lock").push(body);
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let url = format!("http://{addr}/kie/callback/s3cret");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn wait_for_bodies(received: &Arc<Mutex<Vec<Bytes>>>, n: usize) -> Vec<Bytes> {
    for _ in 0..500 {
        let bodies = received.lock().expect("lock").clone();
        if bodies.len() >= n {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} callbacks");
}

#[tokio::test]
async fn a_task_polled_to_success_returns_result_urls_whose_files_download() {
    let fake = FakeKie::start().await;
    fake.set_model_outcome("google/nano-banana", Outcome::succeed_after_polls(4, 2));
    let client = client_for(&fake);

    let id = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap();
    assert_eq!(id.as_str(), "task_1");
    let (record, seen) = poll_to_end(&client, &id).await;

    assert_eq!(seen, ["waiting", "queuing", "generating", "success"]);
    assert_eq!(record.model.as_deref(), Some("google/nano-banana"));
    let TaskState::Success(result) = record.state else {
        panic!("not a success: {:?}", record.state)
    };
    assert_eq!(result.result_urls.len(), 2);
    for url in &result.result_urls {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.headers()["content-type"], "image/png");
        assert_eq!(&response.bytes().await.unwrap()[..], TINY_PNG);
    }
    let task = fake.task("task_1").unwrap();
    assert_eq!(task.input["prompt"], "a cat in a hat");
    assert_eq!(task.polls, 4);
}

#[tokio::test]
async fn a_video_task_finished_by_time_has_watermarked_variants() {
    let fake = FakeKie::start().await;
    fake.set_default_outcome(Outcome::succeed_after(Duration::from_millis(30), 1));
    let client = client_for(&fake);
    let request = json!({"model": "sora-2-text-to-video", "input": {"prompt": "waves"}});

    let id = client
        .create_task(Family::Market, &request, None)
        .await
        .unwrap();
    let (record, _) = poll_to_end(&client, &id).await;

    let TaskState::Success(result) = record.state else {
        panic!("not a success")
    };
    assert_eq!(result.watermark_urls.len(), 1);
    let response = reqwest::get(&result.result_urls[0]).await.unwrap();
    assert_eq!(response.headers()["content-type"], "video/mp4");
}

#[tokio::test]
async fn a_speech_to_text_task_returns_its_transcript() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    let request =
        json!({"model": "elevenlabs/speech-to-text", "input": {"audio_url": "http://x/a.mp3"}});

    let id = client
        .create_task(Family::Market, &request, None)
        .await
        .unwrap();
    let record = client.record_info(Family::Market, &id).await.unwrap();

    let TaskState::Success(result) = record.state else {
        panic!("not a success")
    };
    assert!(result.result_urls.is_empty());
    assert_eq!(result.text.as_deref(), Some("Fake transcript of task_1."));
}

#[tokio::test]
async fn a_failed_task_reports_its_code_and_message() {
    let fake = FakeKie::start().await;
    fake.set_default_outcome(Outcome::Fail {
        when: Finish::Polls(2),
        code: "500".into(),
        msg: "content policy violation".into(),
    });
    let client = client_for(&fake);

    let id = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap();
    let (record, _) = poll_to_end(&client, &id).await;

    assert_eq!(
        record.state,
        TaskState::Fail {
            code: "500".into(),
            message: "content policy violation".into()
        }
    );
}

#[tokio::test]
async fn a_429_burst_is_ridden_out_by_retrying() {
    let fake = FakeKie::start().await;
    fake.fail_next_creates(2, 429);
    let client = client_for(&fake);
    let request = cat_request();

    let id = retrying(quick_policy(4), || {
        client.create_task(Family::Market, &request, None)
    })
    .await
    .unwrap();

    assert_eq!(fake.calls(Endpoint::CreateTask), 3);
    assert_eq!(fake.created_count(), 1);
    assert!(fake.task(id.as_str()).is_some());
}

#[tokio::test]
async fn server_errors_and_maintenance_are_retryable_and_bounded() {
    for code in [500, 455] {
        let fake = FakeKie::start().await;
        fake.fail_next_creates(10, code);
        let client = client_for(&fake);
        let request = cat_request();

        let err = retrying(quick_policy(3), || {
            client.create_task(Family::Market, &request, None)
        })
        .await
        .unwrap_err();

        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.code(), Some(i64::from(code)));
        assert_eq!(fake.calls(Endpoint::CreateTask), 3);
        assert_eq!(fake.created_count(), 0);
    }
}

#[tokio::test]
async fn a_422_is_final_and_not_retried() {
    let fake = FakeKie::start().await;
    fake.reject_creates_with(422, "prompt is required");
    let client = client_for(&fake);
    let request = cat_request();

    let err = retrying(quick_policy(5), || {
        client.create_task(Family::Market, &request, None)
    })
    .await
    .unwrap_err();

    match &err {
        KieError::Validation(msg) => assert_eq!(msg, "prompt is required"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(fake.calls(Endpoint::CreateTask), 1);
    assert_eq!(fake.created_count(), 0);
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_final() {
    let fake = FakeKie::start().await;
    let client = KieClient::new(config_for(&fake, "not-the-key")).unwrap();

    let err = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, KieError::Unauthorized), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some(401));
    assert!(matches!(
        client.credits().await,
        Err(KieError::Unauthorized)
    ));
    assert_eq!(fake.created_count(), 0);
}

#[tokio::test]
async fn an_account_out_of_credits_is_a_final_402() {
    let fake = FakeKie::start().await;
    fake.reject_creates_with(402, "The current credits are insufficient. Please top up.");
    let client = client_for(&fake);

    let err = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap_err();

    assert!(matches!(err, KieError::InsufficientCredits(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some(402));
}

#[tokio::test]
async fn every_bad_reply_kind_is_a_final_bad_response() {
    // Create-side kinds.
    for kind in [
        BadReply::HtmlPage,
        BadReply::TruncatedJson,
        BadReply::MissingTaskId,
    ] {
        let fake = FakeKie::start().await;
        fake.bad_replies(kind);
        let err = client_for(&fake)
            .create_task(Family::Market, &cat_request(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, KieError::BadResponse(_)), "{kind:?}: {err:?}");
        assert!(!err.is_retryable(), "{kind:?}");
    }
    // Poll-side kinds, on a task that exists.
    for kind in [
        BadReply::HtmlPage,
        BadReply::TruncatedJson,
        BadReply::MissingTaskId,
        BadReply::UnknownState,
        BadReply::ResultJsonNotJson,
    ] {
        let fake = FakeKie::start().await;
        fake.set_default_outcome(Outcome::Never);
        let client = client_for(&fake);
        let id = client
            .create_task(Family::Market, &cat_request(), None)
            .await
            .unwrap();
        fake.bad_replies(kind);
        let err = client.record_info(Family::Market, &id).await.unwrap_err();
        assert!(matches!(err, KieError::BadResponse(_)), "{kind:?}: {err:?}");
        assert!(!err.is_retryable(), "{kind:?}");
        fake.good_replies();
        assert!(
            !client
                .record_info(Family::Market, &id)
                .await
                .unwrap()
                .state
                .is_final()
        );
    }
    // Credits too.
    let fake = FakeKie::start().await;
    fake.bad_replies(BadReply::TruncatedJson);
    let err = client_for(&fake).credits().await.unwrap_err();
    assert!(matches!(err, KieError::BadResponse(_)), "{err:?}");
}

#[tokio::test]
async fn a_gateway_error_page_is_retryable_by_its_status() {
    let fake = FakeKie::start().await;
    fake.bad_replies(BadReply::HtmlErrorPage(502));

    let err = client_for(&fake)
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap_err();

    assert!(matches!(err, KieError::Server { code: 502, .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_failing_poll_is_retryable() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    let id = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap();
    fake.fail_next_polls(1, 500);

    let err = client.record_info(Family::Market, &id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        client
            .record_info(Family::Market, &id)
            .await
            .unwrap()
            .state
            .is_final()
    );
}

#[tokio::test]
async fn an_unknown_task_is_not_found() {
    let fake = FakeKie::start().await;
    let err = client_for(&fake)
        .record_info(Family::Market, &TaskId::parse("task_999").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, KieError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_dropped_create_reply_times_out_retryably_though_the_task_was_created() {
    let fake = FakeKie::start().await;
    fake.drop_next_create_replies(1);
    let mut config = config_for(&fake, fake.api_key());
    config.timeout = Duration::from_millis(300);
    let client = KieClient::new(config).unwrap();

    let err = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap_err();

    assert!(matches!(err, KieError::Timeout), "{err:?}");
    assert!(err.is_retryable());
    // The lost-reply case: KIE made (and will bill) the task all the same.
    assert_eq!(fake.created_count(), 1);
    assert_eq!(fake.tasks()[0].id, "task_1");
    // The next create is answered.
    let id = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap();
    assert_eq!(id.as_str(), "task_2");
}

#[tokio::test]
async fn a_finished_task_is_posted_once_to_its_callback_url() {
    let fake = FakeKie::start().await;
    fake.set_default_outcome(Outcome::succeed_after(Duration::from_millis(20), 1));
    let (url, received) = callback_receiver().await;
    let client = client_for(&fake);

    let id = client
        .create_task(Family::Market, &cat_request(), Some(&url))
        .await
        .unwrap();
    let bodies = wait_for_bodies(&received, 1).await;

    let record = parse_callback(&bodies[0]).unwrap();
    assert_eq!(record.task_id, id);
    assert!(matches!(record.state, TaskState::Success(ref r) if r.result_urls.len() == 1));
    assert_eq!(
        fake.task(id.as_str()).unwrap().callback_url.as_deref(),
        Some(url.as_str())
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.lock().unwrap().len(), 1);
    assert_eq!(fake.callbacks_delivered(), 1);
}

#[tokio::test]
async fn a_duplicated_callback_arrives_twice_with_the_same_record() {
    let fake = FakeKie::start().await;
    fake.set_callbacks(CallbackMode::Twice);
    fake.set_default_outcome(Outcome::fail("422", "nsfw"));
    let (url, received) = callback_receiver().await;
    let client = client_for(&fake);

    let id = client
        .create_task(Family::Market, &cat_request(), Some(&url))
        .await
        .unwrap();
    let bodies = wait_for_bodies(&received, 2).await;

    let first = parse_callback(&bodies[0]).unwrap();
    let second = parse_callback(&bodies[1]).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.task_id, id);
    assert!(matches!(first.state, TaskState::Fail { ref message, .. } if message == "nsfw"));
}

#[tokio::test]
async fn a_forged_callback_parses_but_record_info_tells_the_truth() {
    let fake = FakeKie::start().await;
    fake.set_default_outcome(Outcome::Never);
    let (url, received) = callback_receiver().await;
    let client = client_for(&fake);
    let id = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap();

    let status = fake.send_forged_callback(&url, id.as_str()).await.unwrap();
    assert_eq!(status, 200);
    let forged = parse_callback(&wait_for_bodies(&received, 1).await[0]).unwrap();

    assert!(forged.state.is_final());
    assert!(
        !client
            .record_info(Family::Market, &id)
            .await
            .unwrap()
            .state
            .is_final()
    );
}

#[tokio::test]
async fn uploads_by_stream_and_by_url_return_urls_that_serve_the_bytes() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    let bytes = UploadBytes::from_static(b"\x89PNG not really, but bytes all the same");

    let streamed = client
        .upload_stream(bytes.clone(), "photo 1.png", "image/png", "images/user-42")
        .await
        .unwrap();
    assert_eq!(streamed.size, bytes.len() as u64);
    assert_eq!(streamed.mime, "image/png");
    let served = reqwest::get(&streamed.download_url).await.unwrap();
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap(), bytes);

    let copied = client
        .upload_url(&streamed.download_url, "images/user-42", "copy.png")
        .await
        .unwrap();
    assert_ne!(copied.download_url, streamed.download_url);
    assert_eq!(copied.file_name, "copy.png");
    let served = reqwest::get(&copied.download_url).await.unwrap();
    assert_eq!(served.bytes().await.unwrap(), bytes);
    assert_eq!(fake.calls(Endpoint::StreamUpload), 1);
    assert_eq!(fake.calls(Endpoint::UrlUpload), 1);
}

#[tokio::test]
async fn an_upload_from_an_unreachable_url_is_rejected() {
    let fake = FakeKie::start().await;
    let missing = format!("{}/files/uploads/nothing/here.png", fake.base_url());
    let err = client_for(&fake)
        .upload_url(&missing, "images", "x.png")
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn credits_are_parsed_exactly() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    for (balance, milli) in [(1234.5, 1_234_500), (0.0, 0), (87.125, 87_125)] {
        fake.set_credits(balance);
        assert_eq!(client.credits().await.unwrap(), Credits::from_milli(milli));
    }
}

#[tokio::test]
async fn the_api_key_never_appears_in_debug_output() {
    let fake = FakeKie::start().await;
    let key = fake.api_key();
    let client = client_for(&fake);
    let config = config_for(&fake, key);

    let unauthorized = KieClient::new(config_for(&fake, "sk-live-wrong-key-98765"))
        .unwrap()
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap_err();
    // A port nobody listens on: a real transport error.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable = config_for(&fake, key);
    unreachable.api_base = Url::parse(&closed_url).unwrap();
    let network = KieClient::new(unreachable)
        .unwrap()
        .credits()
        .await
        .unwrap_err();
    assert!(matches!(network, KieError::Network(_)), "{network:?}");
    assert!(network.is_retryable());

    let outputs = [
        format!("{client:?}"),
        format!("{config:?}"),
        format!("{}", config.api_key),
        format!("{unauthorized:?}"),
        format!("{unauthorized}"),
        format!("{network:?}"),
        format!("{network}"),
    ];
    for output in &outputs {
        assert!(!output.contains(key), "the key leaked: {output}");
        assert!(
            !output.contains("sk-live-wrong-key-98765"),
            "a key leaked: {output}"
        );
    }
    assert!(outputs[0].contains("[redacted]"), "{}", outputs[0]);
}

#[tokio::test]
async fn a_request_without_a_model_is_refused_before_sending() {
    let fake = FakeKie::start().await;
    let err = client_for(&fake)
        .create_task(Family::Market, &json!({"input": {}}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, KieError::Validation(_)), "{err:?}");
    assert_eq!(fake.calls(Endpoint::CreateTask), 0);
}

#[tokio::test]
async fn every_request_says_it_is_json_even_without_a_body() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    let id = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap();
    client.record_info(Family::Market, &id).await.unwrap();
    client.credits().await.unwrap();
    client.list_models().await.unwrap();
    client.model_schema("google/nano-banana").await.unwrap();
    assert_eq!(fake.requests_without_json_content_type(), 0);
}

#[tokio::test]
async fn an_error_s_text_is_read_from_msg_or_message() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    fake.set_error_text_key("message");
    fake.reject_creates_with(422, "prompt is too long");
    let err = client
        .create_task(Family::Market, &cat_request(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KieError::Validation(ref m) if m == "prompt is too long"),
        "{err}"
    );
}

#[tokio::test]
async fn veo_and_suno_tasks_are_created_and_read_through_their_own_endpoints() {
    let fake = FakeKie::start().await;
    let client = client_for(&fake);
    let veo = json!({"model": "veo3_fast", "prompt": "a dog", "generationType": "TEXT_2_VIDEO",
        "aspectRatio": "16:9", "resolution": "720p", "duration": 8});
    let id = client.create_task(Family::Veo, &veo, None).await.unwrap();
    assert_eq!(fake.calls(Endpoint::VeoGenerate), 1);
    // Another family's status endpoint does not know the task.
    assert!(client.record_info(Family::Market, &id).await.is_err());
    let record = client.record_info(Family::Veo, &id).await.unwrap();
    let TaskState::Success(result) = record.state else {
        panic!("not finished: {:?}", record.state)
    };
    assert_eq!(result.result_urls.len(), 1);

    let suno = json!({"model": "V5", "prompt": "a calm piano piece", "customMode": false,
        "instrumental": false});
    // Suno requires a callback URL: without one configured, a placeholder
    // that never resolves is sent and the task is polled.
    let id = client.create_task(Family::Suno, &suno, None).await.unwrap();
    let task = fake.task(id.as_str()).unwrap();
    assert_eq!(task.callback_url.as_deref(), Some(kiebot_kie::NO_CALLBACK));
    let record = client.record_info(Family::Suno, &id).await.unwrap();
    let TaskState::Success(result) = record.state else {
        panic!("not finished: {:?}", record.state)
    };
    assert_eq!(result.tracks.len(), 2);
    assert!(
        result
            .tracks
            .iter()
            .all(|t| t.title.is_some() && t.image_url.is_some())
    );
}
