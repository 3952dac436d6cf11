//! Typed async client for the KIE AI HTTP API.
//!
//! KIE generates asynchronously: [`KieClient::create_task`] returns a
//! [`TaskId`], then [`KieClient::record_info`] (or a callback, parsed with
//! [`parse_callback`]) tells how the task ends. This crate speaks only HTTP and
//! JSON; what a generation means for a user's money lives elsewhere.
//!
//! Three task families share that abstraction ([`kiebot_domain::Family`]):
//! the market (`/api/v1/jobs/createTask`, `recordInfo` with `state` and a
//! JSON-inside-JSON `resultJson`), Veo 3.1 (`/api/v1/veo/generate`,
//! `record-info` with `successFlag`) and Suno (`/api/v1/generate`,
//! `record-info` with `status` and two tracks). Each method takes the family
//! and returns the same [`TaskRecord`], so callers stay one path. The
//! catalogue endpoints (`/api/v1/models`, each model's schema and price) feed
//! the catalog check.
//!
//! # Map
//! - [`api`]: the [`Kie`] trait the bot and the pipeline call, implemented by
//!   [`KieClient`] and by [`DryRunKie`] (`DRY_RUN`: nothing is called).
//! - [`config`]: [`KieConfig`] (hosts, timeouts) and the [`ApiKey`] that never
//!   prints.
//! - [`client`]: [`KieClient`], one method per endpoint, each with a timeout and
//!   a tracing span (`kie.create_task`, `kie.record_info`, `kie.credits`,
//!   `kie.upload_stream`, `kie.upload_url`, `kie.download_url`,
//!   `kie.catalogue`). Every request says `Content-Type: application/json`;
//!   an error's text is read from `msg` or `message`.
//! - [`task`]: [`TaskRecord`], [`TaskState`], [`TaskResult`] (with Suno's
//!   [`Track`]s) and the parsing of each family's status replies and
//!   callbacks, with KIE's own run time and `creditsConsumed`.
//! - [`error`]: [`KieError`], split into retryable and final classes (and those
//!   an operator must act on: 401, 402, 433).
//! - [`retry`]: [`retrying`], bounded exponential backoff with jitter over the
//!   retryable class only.
//! - [`webhook`]: the callback signature (`X-Webhook-Signature`), checked when
//!   the account's HMAC key is configured.
//!
//! # The life of a call
//! 1. The request goes out with `Authorization: Bearer <key>`; the key is held
//!    by [`ApiKey`] and by a header value marked sensitive, so neither Debug
//!    output nor errors can show it.
//! 2. The whole exchange (connect, send, read the body) is bounded by the
//!    configured timeout; running out of time is [`KieError::Timeout`].
//! 3. The reply is checked twice: the HTTP status and the envelope
//!    `{"code", "msg", "data"}`, because KIE reports errors with HTTP 200 and a
//!    non-200 `code` as often as with an error status.
//! 4. `data` is parsed into typed values. Anything unexpected (an HTML page,
//!    truncated JSON, an unknown state, a missing task id) is
//!    [`KieError::BadResponse`]: one generation fails cleanly, nothing panics.
//!
//! # Retry and the lost-reply hazard
//! createTask has no idempotency key. A timeout or a dropped connection after
//! KIE accepted the request still created (and will bill) a task; retrying it
//! creates another. [`KieError::is_retryable`] says whether *trying again can
//! help*, not whether it is free: callers record each attempt before making it
//! and keep the number of attempts small ([`RetryPolicy::max_attempts`]).
//!
//! # Logging
//! Spans carry `endpoint`, `model`, `task_id`, `outcome` and `latency_ms`.
//! They never carry the key, a callback URL (its path holds a secret) or a
//! request body (task inputs hold URLs of users' files).

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod retry;
pub mod task;
pub mod upload;
pub mod webhook;

pub use api::{ByteStream, DryRunKie, Kie, KieFuture};
pub use client::KieClient;
pub use client::NO_CALLBACK;
pub use config::{ApiKey, KieConfig};
pub use error::KieError;
pub use retry::{RetryPolicy, retrying, retrying_if};
pub use task::{TaskId, TaskRecord, TaskResult, TaskState, Track, parse_callback};
pub use upload::UploadedFile;
