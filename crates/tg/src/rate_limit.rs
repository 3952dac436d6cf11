//! The outgoing-message budget every worker shares.
//!
//! Telegram allows a bot about 30 messages per second overall and about one
//! per second in a private chat (short bursts are tolerated); beyond that it
//! answers 429 with `retry_after`. Every sender asks a [`DeliveryLimiter`]
//! before each Bot API call, and reports each 429 to it so the whole fleet
//! backs off, not just the worker that was told.
//!
//! - [`InProcessLimiter`]: token buckets in memory, for the embedded mode (one
//!   process sends everything).
//! - [`RedisLimiter`]: fixed one-window counters in Redis, for the fleet (any
//!   number of workers share one budget). It falls back to an in-process
//!   limiter while Redis is unreachable rather than stopping deliveries.
//!
//! The defaults stay under Telegram's limits with a margin (25 messages per
//! second) because other processes (the front bot's answers and edits) spend
//! from the same real budget.

mod in_process;
mod redis_backed;

use std::time::Duration;

use futures::future::BoxFuture;
use teloxide::types::ChatId;

pub use in_process::InProcessLimiter;
pub use redis_backed::{RedisLimiter, RedisLimiterError};

/// Counter: 429 answers from the Bot API, by every sender (deliveries,
/// re-sends, broadcasts); the `KiebotTelegram429` alert watches it.
pub const TELEGRAM_429: &str = "kiebot_telegram_429_total";

/// Waits for permission to send, shared by every sender of a process (and,
/// with Redis, of the fleet). Object safe: workers hold an
/// `Arc<dyn DeliveryLimiter>`.
pub trait DeliveryLimiter: Send + Sync {
    /// Resolves when one more Bot API call aimed at `chat` may be made now,
    /// having counted it against the global and the per-chat budget.
    fn acquire(&self, chat: ChatId) -> BoxFuture<'_, ()>;

    /// Telegram answered 429 with `retry_after`: hold back `chat` (or every
    /// chat, when `None`) for that long, across every sender sharing this
    /// limiter. A shorter pause never shortens a longer one already in force.
    fn note_retry_after(&self, chat: Option<ChatId>, retry_after: Duration) -> BoxFuture<'_, ()>;
}

/// The budget a limiter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Calls per second across all chats.
    pub global_per_second: u32,
    /// Average spacing of calls to one chat.
    pub per_chat_interval: Duration,
    /// How many calls to one chat may go back to back (an album followed by
    /// its caption message, a result after a progress edit).
    pub per_chat_burst: u32,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            global_per_second: 25,
            per_chat_interval: Duration::from_secs(1),
            per_chat_burst: 3,
        }
    }
}

impl LimiterConfig {
    /// The same budget with every value at least 1 (a zero would block
    /// forever).
    pub(crate) fn sane(self) -> Self {
        Self {
            global_per_second: self.global_per_second.max(1),
            per_chat_interval: self.per_chat_interval.max(Duration::from_millis(1)),
            per_chat_burst: self.per_chat_burst.max(1),
        }
    }
}

/// The answer of a non-blocking `try_acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The call was counted; send it now.
    Admitted,
    /// Nothing was counted; ask again after this long.
    Wait(Duration),
}
