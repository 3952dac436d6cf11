//! The PostgreSQL functions' source files (crates/store/sql/postgres) are
//! what a fully migrated database runs. Migrations are history; the source
//! file is where a function is read and changed, so the two must never drift
//! apart: each file is applied to a scratch schema of a migrated database and
//! its definition, as PostgreSQL prints it back, compared with the live one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use kiebot_testkit::TestDb;
use sqlx::{Connection, PgConnection, Row};

/// One function's definition as PostgreSQL prints it, keyed by its identity
/// arguments (overloads are different functions).
async fn definitions(conn: &mut PgConnection, schema: &str) -> Vec<(String, String, String)> {
    sqlx::query(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, \
                pg_get_functiondef(p.oid) AS def \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         JOIN pg_language l ON l.oid = p.prolang \
         WHERE n.nspname = $1 AND l.lanname = 'plpgsql' ORDER BY 1, 2",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get("proname"), r.get("args"), r.get("def")))
    .collect()
}

fn sources() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql/postgres");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Applies every source file in schema `src` of a migrated database and
/// returns what differs from the live functions in `public`, one line each.
async fn drift(sources: &[(String, String)]) -> Vec<String> {
    let db = TestDb::postgres().await;
    let store = kiebot_store::Store::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("CREATE SCHEMA src; SET search_path = src, public")
        .execute(&mut conn)
        .await
        .unwrap();
    for (name, text) in sources {
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(text.clone()))
            .execute(&mut conn)
            .await
        {
            return vec![format!("{name}.sql does not apply: {e}")];
        }
    }
    let live = definitions(&mut conn, "public").await;
    let from_files = definitions(&mut conn, "src").await;
    let mut problems = Vec::new();
    let files: BTreeSet<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
    for (name, args, def) in &from_files {
        if !files.contains(name.as_str()) {
            problems.push(format!(
                "{name}({args}) is defined by a file not named after it"
            ));
        }
        let as_live = def.replacen(&format!("src.{name}("), &format!("public.{name}("), 1);
        match live.iter().find(|(n, a, _)| n == name && a == args) {
            None => problems.push(format!(
                "{name}({args}): in its source file, not in the migrated database"
            )),
            Some((_, _, live_def)) if *live_def != as_live => problems.push(format!(
                "{name}({args}): the migrated database runs a different definition than its source file"
            )),
            Some(_) => {}
        }
    }
    for (name, args, _) in &live {
        if !from_files.iter().any(|(n, a, _)| n == name && a == args) {
            problems.push(format!(
                "{name}({args}): in the migrated database, not in crates/store/sql/postgres"
            ));
        }
    }
    conn.close().await.ok();
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_a_migrated_database_runs_is_its_source_file() {
    let problems = drift(&sources()).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_file_that_differs_from_the_migrations_is_caught() {
    let mut changed = sources();
    let (name, text) = changed
        .iter_mut()
        .find(|(n, _)| n == "kiebot_finish_generation")
        .unwrap();
    // One statement added to the body, as an edit made only in the source
    // file (or only in a migration) would.
    *text = text.replacen("BEGIN", "BEGIN\n    PERFORM 1;", 1);
    let name = name.clone();
    let problems = drift(&changed).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("{name}("))
            && problems[0].contains("runs a different definition"),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_without_a_source_file_is_caught() {
    let without: Vec<(String, String)> = sources()
        .into_iter()
        .filter(|(n, _)| n != "ledger_entries_append_only")
        .collect();
    let problems = drift(&without).await;
    assert_eq!(
        problems,
        vec!["ledger_entries_append_only(): in the migrated database, not in crates/store/sql/postgres".to_owned()]
    );
}
