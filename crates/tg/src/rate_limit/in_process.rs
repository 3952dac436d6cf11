//! Token buckets in memory: one global, one per chat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use teloxide::types::ChatId;
use tokio::time::Instant;

use super::{Admission, DeliveryLimiter, LimiterConfig};

/// Per-chat buckets kept before idle (full) ones are dropped.
const MAX_IDLE_CHATS: usize = 10_000;

/// A [`DeliveryLimiter`] for one process: a global token bucket refilled at
/// `global_per_second` (capacity one second's worth) and a bucket per chat
/// refilled every `per_chat_interval` (capacity `per_chat_burst`).
#[derive(Debug)]
pub struct InProcessLimiter {
    config: LimiterConfig,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, per_second: f64, capacity: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.updated = now;
    }

    /// How long until one token is there.
    fn wait(&self, per_second: f64) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / per_second)
        }
    }
}

#[derive(Debug)]
struct Buckets {
    global: Bucket,
    chats: HashMap<ChatId, Bucket>,
    paused_until: Option<Instant>,
    chat_paused_until: HashMap<ChatId, Instant>,
}

impl InProcessLimiter {
    /// A limiter enforcing `config`.
    pub fn new(config: LimiterConfig) -> Self {
        let config = config.sane();
        let now = Instant::now();
        Self {
            config,
            state: Mutex::new(Buckets {
                global: Bucket::full(f64::from(config.global_per_second), now),
                chats: HashMap::new(),
                paused_until: None,
                chat_paused_until: HashMap::new(),
            }),
        }
    }

    /// The budget it enforces.
    pub fn config(&self) -> LimiterConfig {
        self.config
    }

    fn rates(&self) -> (f64, f64, f64, f64) {
        let global = f64::from(self.config.global_per_second);
        let chat_rate = 1.0 / self.config.per_chat_interval.as_secs_f64();
        let chat_cap = f64::from(self.config.per_chat_burst);
        (global, global, chat_rate, chat_cap)
    }

    /// Takes a token from both buckets if both have one; otherwise says how
    /// long to wait and takes nothing.
    pub fn try_acquire(&self, chat: ChatId) -> Admission {
        let (g_rate, g_cap, c_rate, c_cap) = self.rates();
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        let paused = st
            .paused_until
            .into_iter()
            .chain(st.chat_paused_until.get(&chat).copied())
            .max()
            .filter(|until| *until > now);
        if let Some(until) = paused {
            return Admission::Wait(until - now);
        }
        st.chat_paused_until.remove(&chat);

        if st.chats.len() >= MAX_IDLE_CHATS && !st.chats.contains_key(&chat) {
            // Forget chats whose bucket has refilled: they behave like new.
            st.chats.retain(|_, b| {
                b.refill(now, c_rate, c_cap);
                b.tokens < c_cap
            });
            st.chat_paused_until.retain(|_, until| *until > now);
        }
        st.global.refill(now, g_rate, g_cap);
        let global_wait = st.global.wait(g_rate);
        let bucket = st
            .chats
            .entry(chat)
            .or_insert_with(|| Bucket::full(c_cap, now));
        bucket.refill(now, c_rate, c_cap);
        let chat_wait = bucket.wait(c_rate);
        if global_wait.is_zero() && chat_wait.is_zero() {
            bucket.tokens -= 1.0;
            st.global.tokens -= 1.0;
            Admission::Admitted
        } else {
            Admission::Wait(global_wait.max(chat_wait))
        }
    }

    fn pause(&self, chat: Option<ChatId>, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match chat {
            Some(chat) => st.chat_paused_until.entry(chat).or_insert(until),
            None => st.paused_until.get_or_insert(until),
        };
        *slot = (*slot).max(until);
    }
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new(LimiterConfig::default())
    }
}

impl DeliveryLimiter for InProcessLimiter {
    fn acquire(&self, chat: ChatId) -> BoxFuture<'_, ()> {
        async move {
            loop {
                match self.try_acquire(chat) {
                    Admission::Admitted => return,
                    Admission::Wait(wait) => tokio::time::sleep(wait).await,
                }
            }
        }
        .boxed()
    }

    fn note_retry_after(&self, chat: Option<ChatId>, retry_after: Duration) -> BoxFuture<'_, ()> {
        self.pause(chat, retry_after);
        futures::future::ready(()).boxed()
    }
}
