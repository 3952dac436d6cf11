//! `kiebot catalog ...` as an operator runs it, against a fake KIE serving
//! KIE's catalogue as recorded (crates/testkit/fixtures/kie-catalog).

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kiebot_testkit::TestDb;
use kiebot_testkit::kie::FakeKie;
use serde_json::{Value, json};

fn kiebot(kie: Option<&FakeKie>, db: Option<&TestDb>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiebot"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error");
    if let Some(kie) = kie {
        cmd.env("KIE_API_URL", kie.base_url())
            .env("KIE_UPLOAD_URL", kie.upload_base())
            .env("KIE_API_KEY", kie.api_key());
    }
    if let Some(db) = db {
        cmd.env("DATABASE_URL", db.url());
    }
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("kiebot runs"))
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn at_least_ninety_models_are_sold_each_priced_veo_and_suno_among_them() {
    let out = kiebot(None, None, &["catalog"]).output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 90, "{} models", lines.len());
    for m in &lines {
        let priced = m["price"].as_i64().is_some_and(|p| p > 0);
        assert!(priced || m["free"] == json!(true), "{m}");
    }
    let families: Vec<&str> = lines.iter().filter_map(|m| m["family"].as_str()).collect();
    assert!(families.contains(&"veo"));
    assert!(families.contains(&"suno"));
}

#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    let mut child = kiebot(None, None, &["catalog"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then hang up, as `head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let _ = stdout.read(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_kie_refuses_for_its_rate_are_asked_again_not_reported() {
    let kie = FakeKie::start().await;
    let clean = run(kiebot(
        Some(&kie),
        None,
        &["catalog", "check", "--pace-ms", "0"],
    ))
    .await;
    assert!(clean.status.success(), "{}", stdout(&clean));
    let asked = kie.catalogue_request_times().len();
    // The model list is refused three times (as often as it is asked
    // again), then answered.
    kie.refuse_next_catalogue_requests(3);
    let out = run(kiebot(
        Some(&kie),
        None,
        &["catalog", "check", "--pace-ms", "1"],
    ))
    .await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().last().unwrap().contains(" 0 errors"), "{text}");
    assert_eq!(kie.catalogue_request_times().len(), 2 * asked + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_catalog_checks_clean_against_kie_s_catalogue() {
    let kie = FakeKie::start().await;
    // As real KIE: one catalogue request a second (scaled down here).
    kie.set_catalogue_min_interval(Some(Duration::from_millis(15)));
    let out = run(kiebot(
        Some(&kie),
        None,
        &["catalog", "check", "--pace-ms", "20"],
    ))
    .await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text.lines().last().unwrap();
    assert!(summary.contains(" 0 errors"), "{summary}");
    assert!(summary.contains("0 to take off sale"), "{summary}");
    assert!(!text.contains("\nerror "), "{text}");
    // Paced: sent 20 ms apart, so over the run the requests arrive no denser
    // than the fake's 15 ms on average (one request's arrival can lag its
    // send on a busy machine, so single gaps prove nothing, and a request
    // refused for that is asked again, as the clean result shows).
    let times = kie.catalogue_request_times();
    assert!(times.len() > 50, "{} requests", times.len());
    let span = *times.last().unwrap() - times[0];
    let gaps = u32::try_from(times.len() - 1).unwrap();
    assert!(
        span >= Duration::from_millis(15) * gaps,
        "{} requests in {span:?}",
        times.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_drift_is_an_error_naming_model_and_field() {
    let kie = FakeKie::start().await;
    kie.edit_catalogue(|models| {
        let find = |models: &mut Vec<kiebot_testkit::kie_catalog::RecordedModel>, id: &str| {
            models.iter().position(|m| m.model == id).unwrap()
        };
        // A renamed field.
        let i = find(models, "kling-2.6/image-to-video");
        let urls = models[i].input.remove("image_urls").unwrap();
        models[i].input.insert("image_list".into(), urls);
        models[i].required.retain(|r| r != "image_urls");
        // A removed enum value we offer.
        let i = find(models, "google/nano-banana");
        models[i].input["aspect_ratio"]["enum"] = json!(["1:1", "16:9", "9:16"]);
        // A field turned from a list into one URL.
        let i = find(models, "seedream/4.5-edit");
        models[i].input["image_urls"] = json!({"type": "string", "format": "uri"});
        // A model KIE no longer sells.
        let i = find(models, "z-image");
        models.remove(i);
    });
    let out = run(kiebot(
        Some(&kie),
        None,
        &["catalog", "check", "--pace-ms", "0"],
    ))
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error ")).collect();
    let has = |model: &str, field: &str| {
        errors
            .iter()
            .any(|l| l.contains(&format!(" {model} {field}: ")))
    };
    assert!(has("kling-2.6/image-to-video", "images"), "{text}");
    assert!(has("google/nano-banana", "aspect_ratio"), "{text}");
    assert!(has("seedream/4.5-edit", "images"), "{text}");
    assert!(has("z-image", "-"), "{text}");
    // Nothing else is wrong.
    let broken = [
        "kling-2.6/image-to-video",
        "google/nano-banana",
        "seedream/4.5-edit",
        "z-image",
    ];
    for line in &errors {
        assert!(
            broken.iter().any(|m| line.contains(&format!(" {m} "))),
            "{line}"
        );
    }

    // The same as JSON, for machines.
    let out = run(kiebot(
        Some(&kie),
        None,
        &["catalog", "check", "--pace-ms", "0", "--json"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["errors"], json!(errors.len()));
    let off: Vec<&str> = doc["off_sale"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Every request of these would fail; a removed enum value only fails the
    // requests that use it, so that model stays on sale (and alerts).
    assert_eq!(
        off,
        ["kling-2.6/image-to-video", "seedream/4.5-edit", "z-image"]
    );
    let f = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["model"] == json!("google/nano-banana") && f["severity"] == json!("error"))
        .unwrap();
    assert_eq!(f["code"], json!("enum_value_removed"));
    assert_eq!(f["field"], json!("aspect_ratio"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_hold_takes_broken_models_off_sale_until_an_operator_releases_them() {
    let kie = FakeKie::start().await;
    kie.edit_catalogue(|models| models.retain(|m| m.model != "z-image"));
    let db = TestDb::sqlite();
    let out = run(kiebot(
        Some(&kie),
        Some(&db),
        &["catalog", "check", "--pace-ms", "0", "--hold"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("held z-image"), "{}", stdout(&out));
    let held = run(kiebot(None, Some(&db), &["catalog", "held"])).await;
    assert!(
        stdout(&held).starts_with("z-image (check"),
        "{}",
        stdout(&held)
    );
    let released = run(kiebot(None, Some(&db), &["catalog", "release", "z-image"])).await;
    assert!(stdout(&released).contains("on sale again"));
    let held = run(kiebot(None, Some(&db), &["catalog", "held"])).await;
    assert!(stdout(&held).contains("no model is off sale"));
    // An operator's own hold, with a reason.
    let hold = run(kiebot(
        None,
        Some(&db),
        &[
            "catalog",
            "hold",
            "google/imagen4",
            "--reason",
            "quality complaints",
        ],
    ))
    .await;
    assert!(stdout(&hold).contains("off sale: quality complaints"));
    let unknown = run(kiebot(
        None,
        Some(&db),
        &["catalog", "hold", "no/such-model"],
    ))
    .await;
    assert!(!unknown.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_drafts_an_entry_from_kie_s_schema() {
    let kie = FakeKie::start().await;
    let out = run(kiebot(
        Some(&kie),
        None,
        &["catalog", "import", "nano-banana-2"],
    ))
    .await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("[[model]]\nid = \"nano-banana-2\""),
        "{text}"
    );
    for field in [
        "name = \"prompt\"",
        "kie = \"image_input\"",
        "name = \"resolution\"",
    ] {
        assert!(text.contains(field), "{field} missing:\n{text}");
    }
    assert!(
        text.contains("# KIE: "),
        "the price text for a human:\n{text}"
    );
}
