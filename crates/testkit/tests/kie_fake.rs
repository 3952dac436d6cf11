//! The fake KIE over real HTTP: the Veo and Suno families, the catalogue,
//! rate limits, run times, signed callbacks, uploads and download links.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use kiebot_testkit::kie::{
    CallbackMode, Endpoint, FakeKie, Finish, Outcome, SIGNATURE_HEADER, TIMESTAMP_HEADER, TINY_MP3,
    TINY_MP4, TINY_PNG,
};
use kiebot_testkit::kie_catalog::{RecordedModel, recorded};
use serde_json::{Value, json};
use sha2::Sha256;

/// Plain HTTP to the fake, as KIE's docs say to call it.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(fake: &FakeKie) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: fake.base_url(),
            key: format!("Bearer {}", fake.api_key()),
        }
    }

    async fn reply(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let body = response.json().await.expect("a JSON reply");
        (status, body)
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.key)
            .json(body)
            .send()
            .await
            .expect("POST");
        Self::reply(response).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.key)
            .header("Content-Type", "application/json")
            .send()
            .await
            .expect("GET");
        Self::reply(response).await
    }

    /// Creates a task and returns its id.
    async fn create(&self, path: &str, body: &Value) -> String {
        let (status, reply) = self.post(path, body).await;
        assert_eq!(
            (status, reply["code"].as_i64()),
            (200, Some(200)),
            "{reply}"
        );
        reply["data"]["taskId"].as_str().expect("taskId").to_owned()
    }
}

type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A small HTTP server standing in for the bot's callback endpoint.
async fn callback_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/cb",
            post(
                |State(store): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    store.lock().expect("lock").push((headers, value));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cb", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn wait_for(received: &Received, n: usize) -> Vec<(HeaderMap, Value)> {
    for _ in 0..500 {
        let got = received.lock().expect("lock").clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} callbacks");
}

async fn download(url: &str) -> (String, Bytes) {
    let response = reqwest::get(url).await.expect("download");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let mime = response.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_owned();
    (mime, response.bytes().await.expect("bytes"))
}

/// `YYYY-MM-DD HH:MM:SS`.
fn is_kie_datetime(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 19
            && s.char_indices().all(|(i, c)| match i {
                4 | 7 => c == '-',
                10 => c == ' ',
                13 | 16 => c == ':',
                _ => c.is_ascii_digit(),
            })
    })
}

fn suno_body(callback: &str) -> Value {
    json!({"customMode": true, "instrumental": false, "model": "V5", "callBackUrl": callback,
        "prompt": "[Verse] city lights", "style": "synthwave", "title": "Night Drive"})
}

#[tokio::test]
async fn a_veo_task_is_polled_to_success_and_posted_to_its_callback() {
    let fake = FakeKie::start().await;
    fake.set_model_outcome("veo3_fast", Outcome::succeed_after_polls(2, 1));
    let (url, received) = callback_receiver().await;
    let api = Api::new(&fake);

    let id = api
        .create(
            "/api/v1/veo/generate",
            &json!({"prompt": "a dog in a park", "model": "veo3_fast", "aspectRatio": "9:16",
                "resolution": "1080p", "duration": 8, "generationType": "TEXT_2_VIDEO",
                "callBackUrl": url}),
        )
        .await;
    assert_eq!(id, "task_1");

    let (_, running) = api
        .get(&format!("/api/v1/veo/record-info?taskId={id}"))
        .await;
    let data = &running["data"];
    assert_eq!(data["successFlag"], 0, "{running}");
    assert!(data["response"].is_null() && data["completeTime"].is_null());
    assert!(is_kie_datetime(&data["createTime"]), "{data}");
    let param: Value = serde_json::from_str(data["paramJson"].as_str().unwrap()).unwrap();
    assert_eq!(param["prompt"], "a dog in a park");

    let (_, done) = api
        .get(&format!("/api/v1/veo/record-info?taskId={id}"))
        .await;
    let data = &done["data"];
    assert_eq!(data["successFlag"], 1, "{done}");
    assert!(is_kie_datetime(&data["completeTime"]), "{data}");
    let response = &data["response"];
    assert_eq!(response["taskId"], id.as_str());
    assert_eq!(response["resolution"], "1080p");
    let video = response["resultUrls"][0].as_str().unwrap();
    assert!(video.ends_with("/task_1/0.mp4"), "{video}");
    // Not 16:9, so the uncropped originals come too.
    assert_eq!(response["originUrls"].as_array().unwrap().len(), 1);
    assert_eq!(
        download(video).await,
        ("video/mp4".into(), Bytes::from_static(TINY_MP4))
    );

    let callbacks = wait_for(&received, 1).await;
    let body = &callbacks[0].1;
    assert_eq!(body["code"], 200);
    assert_eq!(body["msg"], "Veo3.1 video generated successfully.");
    assert_eq!(body["data"]["taskId"], id.as_str());
    assert_eq!(body["data"]["info"]["resultUrls"][0], video);
    assert_eq!(body["data"]["info"]["resolution"], "1080p");
    assert_eq!(body["data"]["fallbackFlag"], false);

    let task = fake.task(&id).unwrap();
    assert_eq!(
        (task.family, task.model.as_str(), task.polls),
        ("veo", "veo3_fast", 2)
    );
    assert_eq!(task.input["callBackUrl"], url.as_str(), "the whole body");
    assert_eq!(fake.calls(Endpoint::VeoGenerate), 1);
    assert_eq!(fake.calls(Endpoint::VeoRecordInfo), 2);
    assert_eq!(fake.calls(Endpoint::RecordInfo), 0);
}

#[tokio::test]
async fn a_failed_veo_task_reports_its_error_code_in_the_record_and_the_callback() {
    let fake = FakeKie::start().await;
    fake.set_model_outcome("veo3", Outcome::fail("400", "Your prompt was flagged"));
    let (url, received) = callback_receiver().await;
    let api = Api::new(&fake);

    let id = api
        .create(
            "/api/v1/veo/generate",
            &json!({"prompt": "x", "model": "veo3", "callBackUrl": url}),
        )
        .await;
    let (_, record) = api
        .get(&format!("/api/v1/veo/record-info?taskId={id}"))
        .await;
    let data = &record["data"];
    assert_eq!(
        (
            &data["successFlag"],
            &data["errorCode"],
            &data["errorMessage"]
        ),
        (&json!(3), &json!(400), &json!("Your prompt was flagged"))
    );

    let body = wait_for(&received, 1).await[0].1.clone();
    assert_eq!(
        body,
        json!({"code": 400, "msg": "Your prompt was flagged",
            "data": {"taskId": id, "fallbackFlag": false}})
    );
}

#[tokio::test]
async fn veo_refuses_what_its_page_does_not_allow_naming_the_field() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let cases = [
        (json!({"model": "veo3_fast"}), "prompt"),
        (json!({"prompt": "x", "model": "veo2"}), "model"),
        (json!({"prompt": "x", "duration": 5}), "duration"),
        (json!({"prompt": "x", "duration": "8"}), "duration"),
        (json!({"prompt": "x", "aspectRatio": "4:3"}), "aspectRatio"),
        (json!({"prompt": "x", "resolution": "8k"}), "resolution"),
        (
            json!({"prompt": "x", "imageUrls": "http://x/a.png"}),
            "imageUrls",
        ),
        (
            json!({"prompt": "x", "generationType": "IMAGE_2_VIDEO"}),
            "generationType",
        ),
        (
            json!({"prompt": "x", "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO",
                "imageUrls": ["http://x/1.png", "http://x/2.png", "http://x/3.png"]}),
            "imageUrls",
        ),
        (
            json!({"prompt": "x", "model": "veo3", "generationType": "REFERENCE_2_VIDEO",
                "imageUrls": ["http://x/1.png"]}),
            "generationType",
        ),
        (
            json!({"prompt": "x", "model": "veo3_lite", "generationType": "REFERENCE_2_VIDEO",
                "imageUrls": ["http://x/1.png"], "duration": 6}),
            "duration",
        ),
    ];
    for (body, field) in cases {
        let (status, reply) = api.post("/api/v1/veo/generate", &body).await;
        assert_eq!(
            (status, reply["code"].as_i64()),
            (200, Some(422)),
            "{body}: {reply}"
        );
        let msg = reply["msg"].as_str().unwrap();
        assert!(msg.contains(field), "{body}: {msg:?} should name {field}");
    }
    assert_eq!(fake.created_count(), 0);

    // Without a model KIE uses veo3_fast.
    let id = api
        .create("/api/v1/veo/generate", &json!({"prompt": "x"}))
        .await;
    assert_eq!(fake.task(&id).unwrap().model, "veo3_fast");
}

#[tokio::test]
async fn a_suno_task_passes_its_stages_and_makes_two_tracks_with_covers() {
    let fake = FakeKie::start().await;
    fake.set_model_outcome("V5", Outcome::succeed_after_polls(4, 1));
    let (url, received) = callback_receiver().await;
    let api = Api::new(&fake);

    let id = api.create("/api/v1/generate", &suno_body(&url)).await;
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for _ in 0..4 {
        let (_, record) = api
            .get(&format!("/api/v1/generate/record-info?taskId={id}"))
            .await;
        statuses.push(record["data"]["status"].as_str().unwrap().to_owned());
        last = record["data"].clone();
    }
    assert_eq!(
        statuses,
        ["PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS", "SUCCESS"]
    );
    assert_eq!(
        (
            &last["type"],
            &last["operationType"],
            &last["parentMusicId"]
        ),
        (&json!("chirp-v4"), &json!("generate"), &json!(""))
    );
    let tracks = last["response"]["sunoData"].as_array().unwrap();
    assert_eq!(tracks.len(), 2);
    for (i, t) in tracks.iter().enumerate() {
        assert!(
            t["audioUrl"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{id}/{i}.mp3"))
        );
        assert!(
            t["imageUrl"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{id}/cover-{i}.png"))
        );
        assert_eq!(
            (&t["title"], &t["tags"]),
            (&json!("Night Drive"), &json!("synthwave"))
        );
        assert!(t["duration"].as_f64().unwrap() > 0.0);
        assert!(t["streamAudioUrl"].is_string() && t["modelName"].is_string());
        assert!(t["id"].is_string() && t["createTime"].is_string());
    }
    assert_eq!(
        download(tracks[1]["imageUrl"].as_str().unwrap()).await,
        ("image/png".into(), Bytes::from_static(TINY_PNG))
    );
    assert_eq!(
        download(tracks[0]["audioUrl"].as_str().unwrap()).await,
        ("audio/mpeg".into(), Bytes::from_static(TINY_MP3))
    );

    let callbacks = wait_for(&received, 3).await;
    let kinds: Vec<&str> = callbacks
        .iter()
        .map(|(_, b)| b["data"]["callbackType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "first", "complete"]);
    let complete = &callbacks[2].1;
    assert_eq!(complete["code"], 200);
    assert_eq!(complete["msg"], "All generated successfully.");
    assert_eq!(complete["data"]["task_id"], id.as_str());
    let tracks = complete["data"]["data"].as_array().unwrap();
    assert_eq!(tracks.len(), 2);
    assert!(tracks[0]["audio_url"].as_str().unwrap().ends_with("/0.mp3"));
    assert!(
        tracks[1]["image_url"]
            .as_str()
            .unwrap()
            .ends_with("/cover-1.png")
    );
    assert!(tracks[0]["stream_audio_url"].is_string() && tracks[0]["model_name"].is_string());
    // The first stage has only the first track's audio.
    let first = &callbacks[1].1["data"]["data"];
    assert!(first[0]["audio_url"].as_str().unwrap().ends_with(".mp3"));
    assert_eq!(first[1]["audio_url"], "");

    let task = fake.task(&id).unwrap();
    assert_eq!((task.family, task.state), ("suno", "success"));
    assert_eq!(task.result_urls.len(), 2);
}

#[tokio::test]
async fn a_timed_suno_task_posts_its_stages_in_order_without_being_polled() {
    let fake = FakeKie::start().await;
    fake.set_default_outcome(Outcome::succeed_after(Duration::from_millis(60), 1));
    let (url, received) = callback_receiver().await;
    let api = Api::new(&fake);

    let id = api.create("/api/v1/generate", &suno_body(&url)).await;
    let callbacks = wait_for(&received, 3).await;
    let kinds: Vec<&str> = callbacks
        .iter()
        .map(|(_, b)| b["data"]["callbackType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "first", "complete"]);
    assert_eq!(fake.task(&id).unwrap().polls, 0);
}

#[tokio::test]
async fn a_failed_suno_task_shows_its_status_and_posts_an_error() {
    let fake = FakeKie::start().await;
    fake.set_model_outcome("V4", Outcome::fail("SENSITIVE_WORD_ERROR", "bad words"));
    fake.set_model_outcome("V4_5", Outcome::fail("500", "boom"));
    let (url, received) = callback_receiver().await;
    let api = Api::new(&fake);
    let body = |model: &str| {
        json!({"customMode": false, "instrumental": false, "model": model,
            "callBackUrl": url, "prompt": "a song"})
    };

    let id = api.create("/api/v1/generate", &body("V4")).await;
    let (_, record) = api
        .get(&format!("/api/v1/generate/record-info?taskId={id}"))
        .await;
    assert_eq!(record["data"]["status"], "SENSITIVE_WORD_ERROR");
    assert_eq!(record["data"]["errorMessage"], "bad words");
    let callback = wait_for(&received, 1).await[0].1.clone();
    assert_eq!(
        callback,
        json!({"code": 501, "msg": "bad words",
            "data": {"callbackType": "error", "task_id": id, "data": null}})
    );

    let other = api.create("/api/v1/generate", &body("V4_5")).await;
    let (_, record) = api
        .get(&format!("/api/v1/generate/record-info?taskId={other}"))
        .await;
    assert_eq!(record["data"]["status"], "GENERATE_AUDIO_FAILED");
    assert_eq!(record["data"]["errorCode"], 500);
}

#[tokio::test]
async fn suno_refuses_what_its_page_does_not_allow_naming_the_field() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let base = json!({"customMode": false, "instrumental": false, "model": "V4",
        "callBackUrl": "http://127.0.0.1:9/cb", "prompt": "a song"});
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        if value.is_null() {
            b.as_object_mut().unwrap().remove(key);
        } else {
            b[key] = value;
        }
        b
    };
    let cases = [
        (with("callBackUrl", Value::Null), "callBackUrl"),
        (with("customMode", Value::Null), "customMode"),
        (with("instrumental", json!("no")), "instrumental"),
        (with("model", json!("V3_5")), "model"),
        (with("prompt", Value::Null), "prompt"),
        (with("prompt", json!("x".repeat(501))), "prompt"),
        (with("customMode", json!(true)), "style"),
        (with("vocalGender", json!("x")), "vocalGender"),
        (with("styleWeight", json!(1.5)), "styleWeight"),
    ];
    for (body, field) in cases {
        let (_, reply) = api.post("/api/v1/generate", &body).await;
        assert_eq!(reply["code"], 422, "{body}: {reply}");
        let msg = reply["msg"].as_str().unwrap();
        assert!(msg.contains(field), "{body}: {msg:?} should name {field}");
    }
    assert_eq!(fake.created_count(), 0);
    // Custom instrumental music needs a style and a title, not a prompt.
    api.create(
        "/api/v1/generate",
        &json!({"customMode": true, "instrumental": true, "model": "V5_5",
            "callBackUrl": "http://127.0.0.1:9/cb", "style": "Classical", "title": "Calm"}),
    )
    .await;
}

#[tokio::test]
async fn the_families_share_ids_but_each_sees_only_its_own_tasks() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let market = api
        .create(
            "/api/v1/jobs/createTask",
            &json!({"model": "google/nano-banana", "input": {"prompt": "a cat"}}),
        )
        .await;
    let veo = api
        .create("/api/v1/veo/generate", &json!({"prompt": "x"}))
        .await;
    let suno = api
        .create("/api/v1/generate", &suno_body("http://127.0.0.1:9/cb"))
        .await;
    assert_eq!([&market, &veo, &suno], ["task_1", "task_2", "task_3"]);

    for (path, id) in [
        ("/api/v1/jobs/recordInfo", &veo),
        ("/api/v1/veo/record-info", &market),
        ("/api/v1/generate/record-info", &veo),
        ("/api/v1/jobs/recordInfo", &suno),
    ] {
        let (_, reply) = api.get(&format!("{path}?taskId={id}")).await;
        assert_eq!(
            (&reply["code"], &reply["msg"]),
            (&json!(404), &json!("Task not found")),
            "{path} {id}"
        );
    }
    let families: Vec<&str> = fake.tasks().iter().map(|t| t.family).collect();
    assert_eq!(families, ["market", "veo", "suno"]);
    assert_eq!(fake.task(&veo).unwrap().polls, 0);
}

#[tokio::test]
async fn creates_beyond_the_limit_are_refused_with_429_and_create_nothing() {
    let fake = FakeKie::start().await;
    fake.set_create_limit(Some((20, Duration::from_secs(60))));
    let api = Api::new(&fake);
    let mut refused = 0;
    for i in 0..25 {
        let (path, body) = match i % 3 {
            0 => (
                "/api/v1/jobs/createTask",
                json!({"model": "google/nano-banana", "input": {"prompt": "p"}}),
            ),
            1 => ("/api/v1/veo/generate", json!({"prompt": "p"})),
            _ => ("/api/v1/generate", suno_body("http://127.0.0.1:9/cb")),
        };
        let (status, reply) = api.post(path, &body).await;
        if status == 429 {
            assert_eq!(reply["code"], 429, "{reply}");
            assert!(reply["data"].is_null());
            refused += 1;
        } else {
            assert_eq!(reply["code"], 200, "{reply}");
        }
    }
    assert_eq!(refused, 5);
    assert_eq!(fake.rate_limited_creates(), 5);
    assert_eq!(fake.created_count(), 20);
    assert_eq!(fake.tasks().len(), 20);
    assert_eq!(fake.accepted_create_times().len(), 20);
    assert_eq!(fake.max_creates_in_any_window(Duration::from_secs(60)), 20);
    assert_eq!(fake.max_creates_in_any_window(Duration::from_nanos(1)), 1);

    fake.set_create_limit(None);
    api.create("/api/v1/veo/generate", &json!({"prompt": "p"}))
        .await;
    assert_eq!(fake.created_count(), 21);
}

#[tokio::test]
async fn polls_beyond_the_limit_are_refused_with_429() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let id = api
        .create(
            "/api/v1/jobs/createTask",
            &json!({"model": "google/nano-banana", "input": {"prompt": "p"}}),
        )
        .await;
    fake.set_poll_limit(Some((3, Duration::from_secs(60))));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, reply) = api
            .get(&format!("/api/v1/jobs/recordInfo?taskId={id}"))
            .await;
        statuses.push((status, reply["code"].as_i64().unwrap()));
    }
    assert_eq!(
        statuses,
        [(200, 200), (200, 200), (200, 200), (429, 429), (429, 429)]
    );
    // The other families' status endpoints share the limit.
    let (status, _) = api.get("/api/v1/veo/record-info?taskId=task_1").await;
    assert_eq!(status, 429);
    assert_eq!(fake.poll_times().len(), 3);
    assert_eq!(fake.rate_limited_polls(), 3);
    assert_eq!(fake.max_polls_in_any_window(Duration::from_secs(60)), 3);
    assert_eq!(fake.task(&id).unwrap().polls, 3);
}

#[tokio::test]
async fn drawn_run_times_show_in_kie_s_own_times_and_in_finish_times() {
    let fake = FakeKie::start().await;
    let (lo, hi) = (Duration::from_millis(20), Duration::from_millis(40));
    fake.set_default_outcome(Outcome::succeed_between(lo, hi, 1));
    fake.set_credits_consumed("google/nano-banana", 12.5);
    let api = Api::new(&fake);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            api.create(
                "/api/v1/jobs/createTask",
                &json!({"model": "google/nano-banana", "input": {"prompt": "p"}}),
            )
            .await,
        );
    }
    // Nobody polls: the finish times still come from the draws.
    assert!(fake.finish_times().len() <= 5);
    tokio::time::sleep(hi * 2).await;
    let finished = fake.finish_times();
    assert_eq!(finished.len(), 5);
    let created = fake.accepted_create_times();
    for (id, at) in &finished {
        let n: usize = id.trim_start_matches("task_").parse().unwrap();
        let run = at.duration_since(created[n - 1]);
        assert!(run >= lo && run <= hi, "{id}: {run:?}");
    }

    for id in &ids {
        let (_, record) = api
            .get(&format!("/api/v1/jobs/recordInfo?taskId={id}"))
            .await;
        let data = &record["data"];
        assert_eq!(data["state"], "success", "{data}");
        assert_eq!(
            (&data["successFlag"], &data["creditsConsumed"]),
            (&json!(1), &json!(12.5))
        );
        let (create, complete) = (
            data["createTime"].as_u64().unwrap(),
            data["completeTime"].as_u64().unwrap(),
        );
        let run = complete - create;
        assert!((20..=40).contains(&run), "{id}: {run} ms");
        assert_eq!(data["costTime"].as_u64(), Some(run));
        assert_eq!(data["updateTime"].as_u64(), Some(complete));
    }
    // Polling did not move the finish times.
    assert_eq!(fake.finish_times(), finished);
}

#[tokio::test]
async fn a_running_and_a_failed_market_record_carry_their_flags() {
    let fake = FakeKie::start().await;
    fake.set_model_outcome("slow", Outcome::Never);
    fake.set_model_outcome(
        "bad",
        Outcome::Fail {
            when: Finish::Polls(1),
            code: "500".into(),
            msg: "nsfw".into(),
        },
    );
    let api = Api::new(&fake);
    for (model, flag, credits) in [("slow", 0, Value::Null), ("bad", 3, json!(0.0))] {
        let id = api
            .create(
                "/api/v1/jobs/createTask",
                &json!({"model": model, "input": {"prompt": "p"}}),
            )
            .await;
        let (_, record) = api
            .get(&format!("/api/v1/jobs/recordInfo?taskId={id}"))
            .await;
        assert_eq!(record["data"]["successFlag"], flag, "{record}");
        assert_eq!(record["data"]["creditsConsumed"], credits, "{record}");
    }
}

#[tokio::test]
async fn callbacks_are_signed_with_the_webhook_key() {
    let fake = FakeKie::start().await;
    let key = "whsec-test";
    fake.set_webhook_hmac_key(Some(key.to_owned()));
    let (url, received) = callback_receiver().await;
    let api = Api::new(&fake);

    let id = api
        .create(
            "/api/v1/jobs/createTask",
            &json!({"model": "google/nano-banana", "input": {"prompt": "p"}, "callBackUrl": url}),
        )
        .await;
    let (headers, body) = wait_for(&received, 1).await.remove(0);
    assert_eq!(body["data"]["taskId"], id.as_str());
    let timestamp = headers[TIMESTAMP_HEADER].to_str().unwrap();
    let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
    let seconds: u64 = timestamp.parse().unwrap();
    assert!(seconds > 1_600_000_000, "{timestamp}");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{id}.{timestamp}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, expected);
    assert_eq!(
        kiebot_testkit::kie::webhook_signature(key, &id, seconds),
        expected
    );

    // A forger picks the headers.
    let status = fake
        .send_callback_with_signature(&url, &id, 1_700_000_000, "bm90LWEtc2lnbmF0dXJl")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (headers, body) = wait_for(&received, 2).await.remove(1);
    assert_eq!(headers[TIMESTAMP_HEADER], "1700000000");
    assert_eq!(headers[SIGNATURE_HEADER], "bm90LWEtc2lnbmF0dXJl");
    assert_eq!(body["data"]["taskId"], id.as_str());

    // Without a key nothing is signed.
    fake.set_webhook_hmac_key(None);
    fake.set_callbacks(CallbackMode::Once);
    api.create(
        "/api/v1/veo/generate",
        &json!({"prompt": "p", "callBackUrl": url}),
    )
    .await;
    let (headers, _) = wait_for(&received, 3).await.remove(2);
    assert!(headers.get(SIGNATURE_HEADER).is_none());
}

#[tokio::test]
async fn an_upload_with_a_used_name_overwrites_and_one_without_a_name_gets_its_own() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let b64 = |bytes: &[u8]| {
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let upload = |data: String, name: Option<&str>| {
        let mut body = json!({"base64Data": data, "uploadPath": "images/user-1"});
        if let Some(name) = name {
            body["fileName"] = json!(name);
        }
        body
    };

    let (_, first) = api
        .post(
            "/api/file-base64-upload",
            &upload(b64(b"first"), Some("a.png")),
        )
        .await;
    let (_, second) = api
        .post(
            "/api/file-base64-upload",
            &upload(b64(b"second"), Some("a.png")),
        )
        .await;
    let url = first["data"]["downloadUrl"].as_str().unwrap();
    assert_eq!(second["data"]["downloadUrl"], url);
    assert_eq!(download(url).await.1, Bytes::from_static(b"second"));

    let (_, one) = api
        .post("/api/file-base64-upload", &upload(b64(b"one"), None))
        .await;
    let (_, two) = api
        .post("/api/file-base64-upload", &upload(b64(b"two"), None))
        .await;
    let (one, two) = (&one["data"], &two["data"]);
    assert_ne!(one["fileName"], two["fileName"]);
    assert!(one["fileName"].as_str().unwrap().ends_with(".png"), "{one}");
    assert_eq!(
        download(one["downloadUrl"].as_str().unwrap()).await.1,
        Bytes::from_static(b"one")
    );
    assert_eq!(
        download(two["downloadUrl"].as_str().unwrap()).await.1,
        Bytes::from_static(b"two")
    );

    // A multipart upload without fileName: the part's name is not used.
    let form = reqwest::multipart::Form::new()
        .text("uploadPath", "images/user-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"third".to_vec())
                .file_name("a.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let reply: Value = api
        .http
        .post(format!("{}/api/file-stream-upload", api.base))
        .header("Authorization", &api.key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(reply["data"]["downloadUrl"], url, "{reply}");
    assert_eq!(download(url).await.1, Bytes::from_static(b"second"));
    // Multipart uploads are not asked for a JSON content type.
    assert_eq!(fake.requests_without_json_content_type(), 0);
}

#[tokio::test]
async fn download_url_gives_a_fresh_link_to_files_the_fake_hosts_only() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let (_, uploaded) = api
        .post(
            "/api/file-base64-upload",
            &json!({"base64Data": base64::engine::general_purpose::STANDARD.encode(b"clip"),
                "uploadPath": "videos", "fileName": "clip.mp4"}),
        )
        .await;
    let original = uploaded["data"]["downloadUrl"].as_str().unwrap().to_owned();

    let (_, first) = api
        .post("/api/v1/common/download-url", &json!({"url": original}))
        .await;
    let (_, second) = api
        .post("/api/v1/common/download-url", &json!({"url": original}))
        .await;
    let link = first["data"].as_str().unwrap();
    assert_ne!(link, original);
    assert_ne!(
        second["data"], first["data"],
        "each call gives a fresh link"
    );
    assert!(link.starts_with(&fake.base_url()));
    assert_eq!(download(link).await.1, Bytes::from_static(b"clip"));

    let result = format!("{}/files/results/task_9/0.png", fake.base_url());
    let (_, reply) = api
        .post("/api/v1/common/download-url", &json!({"url": result}))
        .await;
    assert_eq!(
        download(reply["data"].as_str().unwrap()).await.1,
        Bytes::from_static(TINY_PNG)
    );

    for url in [
        json!("https://example.com/x.png"),
        json!(format!(
            "{}/files/uploads/videos/missing.mp4",
            fake.base_url()
        )),
        json!(null),
    ] {
        let (_, reply) = api
            .post("/api/v1/common/download-url", &json!({"url": url}))
            .await;
        assert_eq!(reply["code"], 422, "{url}: {reply}");
    }
    assert_eq!(fake.calls(Endpoint::DownloadUrl), 6);
}

/// The `input` object schema of a market model's OpenAPI document.
fn market_input_schema(openapi: &Value) -> &Value {
    let body = &openapi["paths"]["/api/v1/jobs/createTask"]["post"]["requestBody"];
    &body["content"]["application/json"]["schema"]["properties"]["input"]
}

fn model(id: &str, provider: &str, task: &str) -> RecordedModel {
    RecordedModel {
        model: id.to_owned(),
        provider: provider.to_owned(),
        task_types: vec![task.to_owned()],
        endpoint: "/api/v1/jobs/createTask".to_owned(),
        doc: "test".to_owned(),
        pricing_desc: format!("{id}: 10 credits per second"),
        input: json!({"prompt": {"type": "string"},
            "duration": {"type": "string", "enum": ["5", "10"]}})
        .as_object()
        .cloned()
        .expect("an object"),
        required: vec!["prompt".to_owned()],
    }
}

#[tokio::test]
async fn the_catalogue_serves_the_recorded_models_until_a_test_edits_it() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let (_, listed) = api.get("/api/v1/models").await;
    assert_eq!(listed["data"]["total"], recorded().len(), "{listed}");
    assert_eq!(fake.catalogue(), recorded());

    fake.edit_catalogue(|models| {
        models.clear();
        models.push(model("kling/v2-1-pro", "kling", "image-to-video"));
        models.push(model("z-image", "tongyi", "text-to-image"));
    });
    let (_, listed) = api.get("/api/v1/models").await;
    assert_eq!(listed["data"]["total"], 2);
    assert_eq!(listed["data"]["models"][0]["model"], "kling/v2-1-pro");
    assert_eq!(
        listed["data"]["models"][0]["taskType"],
        json!(["image-to-video"])
    );
    for (query, expected) in [
        ("provider=kling", vec!["kling/v2-1-pro"]),
        ("taskType=text-to-image", vec!["z-image"]),
        ("q=IMAGE", vec!["z-image"]),
        ("q=nothing-like-it", vec![]),
    ] {
        let (_, reply) = api.get(&format!("/api/v1/models?{query}")).await;
        let names: Vec<&str> = reply["data"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["model"].as_str().unwrap())
            .collect();
        assert_eq!(names, expected, "{query}");
        assert_eq!(reply["data"]["total"], expected.len());
    }

    // A slash inside the id, as KIE's catalogue takes it.
    let (_, schema) = api.get("/api/v1/models/kling/v2-1-pro/schema").await;
    assert_eq!(schema["data"]["model"], "kling/v2-1-pro");
    let input = market_input_schema(&schema["data"]["openapi"]);
    assert_eq!(input["properties"]["duration"]["enum"], json!(["5", "10"]));
    let (_, price) = api.get("/api/v1/models/kling/v2-1-pro/price").await;
    assert_eq!(
        price["data"],
        json!({"model": "kling/v2-1-pro", "pricingDesc": "kling/v2-1-pro: 10 credits per second"})
    );

    // A test drops an enum value, turns a list into a single, removes a model.
    fake.edit_catalogue(|models| {
        let m = &mut models[0];
        m.input
            .insert("duration".into(), json!({"type": "string", "enum": ["5"]}));
        m.input
            .insert("image_url".into(), json!({"type": "string"}));
        models.retain(|m| m.model != "z-image");
    });
    let (_, schema) = api.get("/api/v1/models/kling/v2-1-pro/schema").await;
    let input = market_input_schema(&schema["data"]["openapi"]);
    assert_eq!(input["properties"]["duration"]["enum"], json!(["5"]));
    for path in [
        "/api/v1/models/z-image/schema",
        "/api/v1/models/z-image/price",
        "/api/v1/models/kling/v2-1-pro/nonsense",
    ] {
        let (status, reply) = api.get(path).await;
        assert_eq!(
            (status, reply["code"].as_i64()),
            (200, Some(404)),
            "{path}: {reply}"
        );
    }
    assert_eq!(fake.calls(Endpoint::ModelSchema), 3);
    assert_eq!(fake.calls(Endpoint::ModelPrice), 2);
}

#[tokio::test]
async fn catalogue_requests_closer_than_the_interval_are_refused() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    fake.set_catalogue_min_interval(Some(Duration::from_secs(3600)));
    let (first, _) = api.get("/api/v1/models").await;
    let (second, reply) = api.get("/api/v1/models?provider=google").await;
    assert_eq!((first, second), (200, 429));
    assert_eq!(reply["code"], 429);
    assert_eq!(fake.catalogue_request_times().len(), 2);

    fake.set_catalogue_min_interval(Some(Duration::from_millis(20)));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (third, _) = api.get("/api/v1/models").await;
    assert_eq!(third, 200);
    let times = fake.catalogue_request_times();
    assert!(times[2].duration_since(times[1]) >= Duration::from_millis(20));
}

#[tokio::test]
async fn requests_without_a_json_content_type_are_counted() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    api.get("/api/v1/chat/credit").await;
    assert_eq!(fake.requests_without_json_content_type(), 0);
    let bare = api
        .http
        .get(format!("{}/api/v1/chat/credit", api.base))
        .header("Authorization", &api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    let charset = api
        .http
        .get(format!("{}/api/v1/models", api.base))
        .header("Authorization", &api.key)
        .header("Content-Type", "application/json; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(charset.status(), 200);
    // Files are not API requests.
    reqwest::get(format!("{}/files/results/task_1/0.png", api.base))
        .await
        .unwrap();
    assert_eq!(fake.requests_without_json_content_type(), 1);
}

#[tokio::test]
async fn error_envelopes_can_carry_their_text_under_message() {
    let fake = FakeKie::start().await;
    let api = Api::new(&fake);
    let (_, reply) = api.get("/api/v1/jobs/recordInfo?taskId=task_404").await;
    assert_eq!(reply["msg"], "Task not found");
    fake.set_error_text_key("message");
    let (_, reply) = api.get("/api/v1/jobs/recordInfo?taskId=task_404").await;
    assert_eq!(reply["message"], "Task not found", "{reply}");
    assert!(reply.get("msg").is_none(), "{reply}");
    let (_, reply) = api.post("/api/v1/veo/generate", &json!({})).await;
    assert_eq!(reply["message"], "prompt is required", "{reply}");
    // Successes keep `msg`.
    let (_, reply) = api.get("/api/v1/chat/credit").await;
    assert_eq!(reply["msg"], "success");
}
