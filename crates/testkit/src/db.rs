//! A database of its own for every test.
//!
//! ```no_run
//! # async fn example() {
//! let db = kiebot_testkit::TestDb::postgres().await;
//! // connect to db.url(), migrate, test...
//! # }
//! // dropping `db` drops the database (or deletes the SQLite directory)
//! ```
//!
//! PostgreSQL: `CREATE DATABASE kiebot_t_<random>` on the server named by
//! `TEST_POSTGRES_URL` (default [`DEFAULT_POSTGRES_URL`]), removed with
//! `DROP DATABASE ... WITH (FORCE)` on drop, which also ends connections a test
//! left open. SQLite: `kiebot.db` in a fresh temporary directory, deleted with
//! the directory.
//!
//! Setup failures panic with a message naming the server: this is test code,
//! and a test that cannot get its database has nothing better to do.

use std::path::PathBuf;

use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

/// The server used when `TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Prefix of every database a [`TestDb`] creates, so leftovers of a killed
/// test run are easy to find (`SELECT datname FROM pg_database WHERE datname
/// LIKE 'kiebot_t_%'`).
pub const DATABASE_PREFIX: &str = "kiebot_t_";

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Postgres { admin_url: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
}

impl TestDb {
    /// A fresh, empty PostgreSQL database on the server at `TEST_POSTGRES_URL`.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses `CREATE DATABASE`.
    pub async fn postgres() -> TestDb {
        let admin_url =
            std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("{DATABASE_PREFIX}{:016x}", rand::rng().random::<u64>());
        let mut conn = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot connect to the test PostgreSQL server {admin_url}: {e}")
        });
        // The name is ours (prefix + hex), so formatting it into SQL is safe.
        conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name} on {admin_url}: {e}"));
        let _ = conn.close().await;
        TestDb {
            url: with_database(&admin_url, &name),
            kind: Kind::Postgres { admin_url, name },
        }
    }

    /// A fresh SQLite file (`kiebot.db`, not yet created) in a new temporary
    /// directory.
    ///
    /// # Panics
    /// When the temporary directory cannot be created.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("kiebot-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let path = dir.path().join("kiebot.db");
        TestDb {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    /// The sqlx connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The SQLite file, or `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.kind {
            Kind::Sqlite { _dir } => Some(_dir.path().join("kiebot.db")),
            Kind::Postgres { .. } => None,
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }
}

impl TestDb {
    /// Runs `setup` (statements separated by `;`), then returns PostgreSQL's
    /// plan of `statement` (its parameters typed by `param_types`, e.g.
    /// `"BIGINT, TEXT"`) run with `args` (e.g. `"777, '[1]'"`), in the
    /// generic plan a connection settles on for a statement it runs often:
    /// what a plan test must hold, since a custom plan can hide a bad
    /// generic one. One line per plan node.
    ///
    /// # Panics
    /// On a SQLite database, or when a statement fails.
    pub async fn generic_plan(
        &self,
        setup: &str,
        statement: &str,
        param_types: &str,
        args: &str,
    ) -> String {
        let mut conn = self.generic_plans_after(setup).await;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "PREPARE planned({param_types}) AS {statement}"
        )))
        .await
        .unwrap_or_else(|e| panic!("cannot prepare: {e}\n{statement}"));
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE planned({args})"
        )))
        .fetch_all(&mut conn)
        .await
        .expect("EXPLAIN");
        let _ = conn.close().await;
        lines.join("\n")
    }

    /// Runs `setup` (statements separated by `;`), then `statement` in a
    /// transaction that is rolled back, with every plan generic, made for
    /// the tables as `setup` left them (PL/pgSQL's statements included).
    /// Returns each table `statement` read by a sequential scan, with how
    /// many scans, in name order: a statement whose plan made on small
    /// tables scans one goes on scanning it, whole, as the table grows.
    ///
    /// # Panics
    /// On a SQLite database, or when a statement fails.
    pub async fn seq_scans(&self, setup: &str, statement: &str) -> Vec<(String, i64)> {
        let mut conn = self.generic_plans_after(setup).await;
        let mut tx = conn.begin().await.expect("BEGIN");
        tx.execute(sqlx::AssertSqlSafe(statement.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("statement failed: {e}\n{statement}"));
        // This transaction's own counts, before any are reported.
        let scans: Vec<(String, i64)> = sqlx::query_as(
            "SELECT relname::TEXT, seq_scan FROM pg_stat_xact_user_tables \
             WHERE seq_scan > 0 ORDER BY relname",
        )
        .fetch_all(&mut *tx)
        .await
        .expect("pg_stat_xact_user_tables");
        tx.rollback().await.expect("ROLLBACK");
        let _ = conn.close().await;
        scans
    }

    /// Per table, the rows sequential scans have read in this database so
    /// far (tables with none left out), in name order. A backend reports its
    /// counts when it ends or sits idle, so close the pools whose work
    /// should count first.
    ///
    /// # Panics
    /// On a SQLite database, or when the statistics cannot be read.
    pub async fn rows_read_by_scans(&self) -> Vec<(String, i64)> {
        assert!(self.is_postgres(), "statistics are PostgreSQL's");
        let mut conn = PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url));
        let rows = sqlx::query_as(
            "SELECT relname::TEXT, seq_tup_read FROM pg_stat_user_tables \
             WHERE seq_tup_read > 0 ORDER BY relname",
        )
        .fetch_all(&mut conn)
        .await
        .expect("pg_stat_user_tables");
        let _ = conn.close().await;
        rows
    }

    /// A connection that ran `setup` and then makes every plan generic.
    async fn generic_plans_after(&self, setup: &str) -> PgConnection {
        assert!(self.is_postgres(), "plans are PostgreSQL's");
        let mut conn = PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url));
        for sql in setup.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
                .await
                .unwrap_or_else(|e| panic!("setup statement failed: {e}\n{sql}"));
        }
        conn.execute("SET plan_cache_mode = force_generic_plan")
            .await
            .expect("plan_cache_mode");
        conn
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The SQLite directory removes itself (TempDir's own Drop).
        let Kind::Postgres { admin_url, name } = &self.kind else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, where blocking on a future is
        // not allowed; a plain thread with a runtime of its own can.
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .await
                .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test database {} was not dropped: {e}", self.url),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.url),
        }
    }
}

/// `url` with its database (the path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[tokio::test]
    async fn a_postgres_test_database_is_created_and_dropped() {
        let db = TestDb::postgres().await;
        let Kind::Postgres { admin_url, name } = &db.kind else {
            unreachable!()
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(current, name);
        // An open connection must not keep the database alive.
        drop(db);
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_sqlite_test_database_lives_in_a_directory_that_is_removed() {
        let db = TestDb::sqlite();
        let path = db.sqlite_path().unwrap();
        assert!(db.url().starts_with("sqlite://") && db.url().ends_with("?mode=rwc"));
        std::fs::write(&path, b"x").unwrap();
        let dir = path.parent().unwrap().to_path_buf();
        drop(db);
        assert!(!dir.exists());
    }
}
