//! Test infrastructure for kiebot.
//!
//! Tests run against real infrastructure, each in isolation, and leave nothing
//! behind:
//!
//! - [`db`]: [`TestDb`], a database of its own for every test: a fresh
//!   PostgreSQL database on the server at `TEST_POSTGRES_URL`, or a SQLite
//!   file in a temporary directory. Both are removed when the value is dropped.

pub mod db;
pub mod kie;
pub mod kie_catalog;
pub mod telegram;

pub use db::TestDb;
