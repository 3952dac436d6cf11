//! Test infrastructure for kiebot.
//!
//! Tests run against real infrastructure, each in isolation, and leave nothing
//! behind:
//!
//! - [`db`]: [`TestDb`], a database of its own for every test: a fresh
//!   PostgreSQL database on the server at `TEST_POSTGRES_URL`, or a SQLite
//!   file in a temporary directory. Both are removed when the value is dropped.
//! - [`kie`]: [`kie::FakeKie`], KIE over real HTTP on loopback: the market,
//!   Veo and Suno task families, uploads, the catalogue API, KIE's rate limits
//!   and scriptable faults.
//! - [`kie_catalog`]: KIE's catalogue as recorded from its per-model OpenAPI
//!   pages (fixtures), which the fake serves and the catalog's tests compare
//!   with.
//! - [`telegram`]: [`telegram::FakeTelegram`], the Bot API over real HTTP.

pub mod db;
pub mod kie;
pub mod kie_catalog;
pub mod telegram;

pub use db::TestDb;

/// Settings that let result downloads reach the loopback fakes (plain http,
/// loopback addresses); production allows neither (see `RESULT_HOSTS` in the
/// README).
pub const LOOPBACK_RESULT_SETTINGS: [(&str, &str); 3] = [
    ("RESULT_HOSTS", "127.0.0.1,localhost"),
    ("RESULT_ALLOW_HTTP", "true"),
    ("RESULT_ALLOW_LOOPBACK", "true"),
];
