//! Everything the kiebot user sees in Telegram, in one typed place.
//!
//! Map of the crate:
//!
//! - [`delivery`]: sending a finished generation to its user ([`deliver`]):
//!   by URL, else downloaded and uploaded, else as a link; albums, long texts,
//!   429 handling, blocked users, and the file ids for cheap re-sends
//!   ([`resend_files`], under the same limiter).
//! - [`rate_limit`]: the outgoing-message budget ([`DeliveryLimiter`]) every
//!   sender shares: token buckets in process ([`InProcessLimiter`]), or
//!   fixed-window counters in Redis for the fleet ([`RedisLimiter`]).
//! - [`texts`]: every user-visible string, Russian and English side by side.
//! - [`keyboards`]: every inline keyboard of the front bot, built from texts
//!   and callback payloads only.
//! - [`callback`]: the versioned callback-data codec ([`callback::Cb`], `1:`
//!   prefix, at most 64 bytes, parsed defensively: forged data yields `None`).
//!
//! Handlers and workers build what the user sees only through these modules,
//! so tests can assert on texts and press buttons by their labels.
//!
//! The life of a delivery: a worker holds a `teloxide::Bot` and an
//! `Arc<dyn DeliveryLimiter>` (Redis-backed when `REDIS_URL` is set), builds a
//! [`DeliveryRequest`] from the generation's result URLs, its localised caption
//! and result keyboard, calls [`deliver`], stores [`Delivered::file_ids`], and
//! marks the generation delivered; a retryable [`DeliveryError`] leaves it for
//! the reconciler to retry.
//!
//! teloxide is used without its storage features: dialogue state lives in our
//! own store, and the limiter uses the same `redis` crate as the job queue.

pub mod callback;
pub mod delivery;
pub mod egress;
pub mod keyboards;
pub mod rate_limit;
pub mod texts;

pub use delivery::{
    Delivered, DeliveryError, DeliveryKind, DeliveryOptions, DeliveryRequest, Route, deliver,
    deliver_with, resend_files,
};
pub use rate_limit::{
    Admission, DeliveryLimiter, InProcessLimiter, LimiterConfig, RedisLimiter, RedisLimiterError,
};
