//! The store runs one SQL text on both engines through sqlx's `Any` driver.
//! These cases pin down the driver behaviour that design relies on, so an
//! sqlx upgrade that changes it fails here first, with a clear name.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

use kiebot_testkit::TestDb;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

async fn pool(db: &TestDb) -> AnyPool {
    install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap()
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(kiebot_testkit::TestDb::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(kiebot_testkit::TestDb::postgres().await).await })*
        }
    };
}

on_both_engines!(
    numbered_placeholders_bind_by_number_and_can_repeat,
    booleans_read_back_as_bool_or_integer,
    a_cast_sum_decodes_as_i64,
    insert_or_ignore_returns_a_row_only_when_it_inserted,
);

async fn numbered_placeholders_bind_by_number_and_can_repeat(db: TestDb) {
    let pool = pool(&db).await;
    sqlx::query("CREATE TABLE t (a BIGINT, b TEXT, c BIGINT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (b, a, c) VALUES ($2, $1, $1)")
        .bind(7_i64)
        .bind("seven")
        .execute(&pool)
        .await
        .unwrap();
    let row = sqlx::query("SELECT a, b, c FROM t WHERE a = $1 AND c = $1")
        .bind(7_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("a"), 7);
    assert_eq!(row.get::<String, _>("b"), "seven");
    assert_eq!(row.get::<i64, _>("c"), 7);
    let none: Option<i64> = sqlx::query_scalar("SELECT a FROM t WHERE b = $1")
        .bind(Option::<String>::None)
        .fetch_optional(&pool)
        .await
        .unwrap();
    assert_eq!(none, None);
}

async fn booleans_read_back_as_bool_or_integer(db: TestDb) {
    let pool = pool(&db).await;
    // SQLite columns declared BOOLEAN are typed `Bool` by sqlx-sqlite, which
    // Any refuses to decode; the SQLite schema therefore says INTEGER 0/1.
    if !db.is_postgres() {
        sqlx::query("CREATE TABLE b (flag BOOLEAN NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO b (flag) VALUES (1)")
            .execute(&pool)
            .await
            .unwrap();
        let read = sqlx::query("SELECT flag FROM b").fetch_one(&pool).await;
        assert!(read.is_err(), "Any now decodes SQLite BOOLEAN columns");
    }
    let ddl = if db.is_postgres() {
        "CREATE TABLE t (id BIGINT, flag BOOLEAN NOT NULL)"
    } else {
        "CREATE TABLE t (id BIGINT, flag INTEGER NOT NULL CHECK (flag IN (0, 1)))"
    };
    sqlx::query(ddl).execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO t (id, flag) VALUES (1, $1), (2, $2)")
        .bind(true)
        .bind(false)
        .execute(&pool)
        .await
        .unwrap();
    let rows = sqlx::query("SELECT flag FROM t WHERE flag = $1 OR NOT flag ORDER BY id")
        .bind(true)
        .fetch_all(&pool)
        .await
        .unwrap();
    let flags: Vec<bool> = rows
        .iter()
        .map(|r| {
            r.try_get::<bool, _>("flag")
                .or_else(|_| r.try_get::<i64, _>("flag").map(|v| v != 0))
                .unwrap()
        })
        .collect();
    assert_eq!(flags, [true, false]);
    // SQLite has no boolean: Any sees an integer there, a bool on Postgres.
    let as_bool = rows[0].try_get::<bool, _>("flag").is_ok();
    assert_eq!(as_bool, db.is_postgres());
}

async fn a_cast_sum_decodes_as_i64(db: TestDb) {
    let pool = pool(&db).await;
    sqlx::query("CREATE TABLE t (v BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (v) VALUES (5), (-2), (40)")
        .execute(&pool)
        .await
        .unwrap();
    let sum: i64 = sqlx::query_scalar("SELECT CAST(SUM(v) AS BIGINT) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sum, 43);
    let empty: i64 =
        sqlx::query_scalar("SELECT COALESCE(CAST(SUM(v) AS BIGINT), 0) FROM t WHERE v > 100")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(empty, 0);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
    if db.is_postgres() {
        // Why every SUM is cast: Postgres sums BIGINT into NUMERIC.
        let raw = sqlx::query_scalar::<_, i64>("SELECT SUM(v) FROM t")
            .fetch_one(&pool)
            .await;
        assert!(raw.is_err());
    }
}

async fn insert_or_ignore_returns_a_row_only_when_it_inserted(db: TestDb) {
    let pool = pool(&db).await;
    sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let insert = "INSERT INTO t (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING RETURNING v";
    let first: Option<i64> = sqlx::query_scalar(insert)
        .bind("a")
        .bind(1_i64)
        .fetch_optional(&pool)
        .await
        .unwrap();
    let second: Option<i64> = sqlx::query_scalar(insert)
        .bind("a")
        .bind(2_i64)
        .fetch_optional(&pool)
        .await
        .unwrap();
    assert_eq!((first, second), (Some(1), None));
}
