//! The `kiebot` binary's operator commands, run as a real process against a
//! real database (SQLite in a temp dir and PostgreSQL).

use std::process::{Command, Output};

use kiebot_testkit::db::TestDb;

fn kiebot(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiebot"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "error")
        .output()
        .expect("kiebot runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn grant_and_check(db: TestDb) {
    let migrate = kiebot(&db, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let grant = kiebot(&db, &["admin", "grant", "42", "150.50", "--key", "welcome"]);
    assert!(
        grant.status.success(),
        "{}",
        String::from_utf8_lossy(&grant.stderr)
    );
    assert!(
        stdout(&grant).contains("balance 150.50"),
        "{}",
        stdout(&grant)
    );

    // Same key: credited once.
    let again = kiebot(&db, &["admin", "grant", "42", "150.50", "--key", "welcome"]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("already granted"),
        "{}",
        stdout(&again)
    );
    assert!(stdout(&again).contains("balance 150.50"));

    let check = kiebot(&db, &["admin", "ledger-check"]);
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(stdout(&check).contains("ok"));
}

#[tokio::test]
async fn a_grant_is_credited_once_per_key_and_the_ledger_checks_out_on_sqlite() {
    grant_and_check(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_grant_is_credited_once_per_key_and_the_ledger_checks_out_on_postgres() {
    grant_and_check(TestDb::postgres().await).await;
}

#[tokio::test]
async fn bad_grants_are_refused_and_change_nothing() {
    let db = TestDb::sqlite();
    for args in [
        &["admin", "grant", "42", "-5"][..],
        &["admin", "grant", "42", "abc"][..],
        &["admin", "grant", "42", "1.234"][..],
        &["admin", "grant", "-1", "10"][..],
        &["admin", "grant", "42", "0"][..],
    ] {
        let out = kiebot(&db, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?} gave no message");
    }
    let check = kiebot(&db, &["admin", "ledger-check"]);
    assert!(check.status.success());
}

#[test]
fn the_catalog_lists_every_sold_model_with_a_price() {
    let db = TestDb::sqlite();
    let out = kiebot(&db, &["catalog"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(lines.len() >= 56, "{} models", lines.len());
    for m in &lines {
        let price = m["price"].as_i64().expect("a price");
        if m["free"].as_bool() == Some(true) {
            assert_eq!(price, 0, "{m}");
        } else {
            assert!(price > 0, "{m}");
        }
        assert!(!m["types"].as_array().unwrap().is_empty());
    }
    let all = kiebot(&db, &["catalog", "--all"]);
    assert!(
        stdout(&all).lines().count() > lines.len(),
        "coming-soon models are listed with --all"
    );
}

#[test]
fn a_bad_setting_stops_with_one_line_naming_the_variable() {
    let db = TestDb::sqlite();
    let out = Command::new(env!("CARGO_BIN_EXE_kiebot"))
        .args(["catalog"])
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("LOG_FORMAT"), "{err}");
}

#[test]
fn a_catalog_override_that_is_invalid_names_the_model_and_field() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[model]]
id = "x/broken"
category = "image"
types = ["text-to-image"]
name = { en = "X", ru = "X" }
description = { en = "x", ru = "x" }
output = "image"
deadline_secs = 600
[[model.fields]]
name = "ratio"
type = "enum"
values = ["1:1"]
default = "2:1"
[model.price]
credits = 1
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiebot"))
        .args(["catalog"])
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("CATALOG_PATH", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x/broken") && err.contains("ratio"), "{err}");
}

/// A default build leaves the demo's fake servers out, and says how to get
/// them instead of failing obscurely.
#[cfg(not(feature = "demo"))]
#[test]
fn the_demo_in_a_build_without_it_says_how_to_get_it() {
    let db = TestDb::sqlite();
    let demo = kiebot(&db, &["demo"]);
    assert_eq!(demo.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(stderr.contains("built without the demo"), "{stderr}");
    assert!(
        stderr.contains("cargo run -p kiebot --features demo -- demo"),
        "{stderr}"
    );
}
