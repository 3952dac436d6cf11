//! Fixed-window counters in Redis, shared by every worker of the fleet.
//!
//! Per call, one Lua script (one round trip, atomic) checks the pause keys and
//! both counters, and only when both have room INCRs them and PEXPIREs them
//! past their window. Checking before incrementing means a full chat never
//! burns a global slot, and no counter overshoots. Windows are aligned on the
//! Unix clock (`now_ms / window_ms`), so workers agree as long as their clocks
//! are NTP-synchronised; a skew only shifts a window boundary.
//!
//! Every key shares one hash tag (`{prefix}`), so the script is valid on a
//! Redis Cluster too.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;
use teloxide::types::ChatId;

use super::{Admission, DeliveryLimiter, InProcessLimiter, LimiterConfig};

/// Length of the global window.
const GLOBAL_WINDOW_MS: u64 = 1000;
/// Counters outlive their window by this much, so a worker whose clock is a
/// little behind still sees them.
const EXPIRY_MARGIN_MS: u64 = 1000;
/// Random delay added to every wait so waiting workers do not all hit Redis
/// at the same instant when a window opens.
const MAX_JITTER_MS: u64 = 25;
/// At most one "Redis is down" warning per this many seconds.
const WARN_EVERY_SECS: u64 = 10;

/// KEYS: global pause, chat pause, chat counter, global counter.
/// ARGV: chat limit, chat expiry ms, global limit, global expiry ms.
/// Returns {0, 0} admitted, {1, ms} paused, {2, 0} chat full, {3, 0} global full.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pause = math.max(redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[2]))
if pause > 0 then return {1, pause} end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[1]) then return {2, 0} end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[3]) then return {3, 0} end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return {0, 0}
",
    )
});

/// KEYS: pause key. ARGV: pause ms. Extends, never shortens, a pause.
static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
",
    )
});

/// The Redis limiter failed to talk to Redis.
#[derive(Debug, thiserror::Error)]
#[error("Redis rate limiter: {0}")]
pub struct RedisLimiterError(#[from] redis::RedisError);

/// A [`DeliveryLimiter`] shared by every process using the same Redis and key
/// prefix. While Redis cannot be reached it degrades to an in-process budget
/// (logged), so deliveries slow down rather than stop.
pub struct RedisLimiter {
    conn: ConnectionManager,
    tag: String,
    config: LimiterConfig,
    fallback: InProcessLimiter,
    last_warning_secs: AtomicU64,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("tag", &self.tag)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..=MAX_JITTER_MS))
}

impl RedisLimiter {
    /// Connects to `redis_url` (a `redis://` URL) with a connection manager
    /// that reconnects by itself. `prefix` names the shared budget: processes
    /// with the same prefix share it.
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached now.
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        config: LimiterConfig,
    ) -> Result<Self, RedisLimiterError> {
        use redis::IntoConnectionInfo as _;
        // Each check is sent at once (`TCP_NODELAY`): redis-rs leaves Nagle's
        // algorithm on, which holds a command back behind another's
        // acknowledgement on the shared connection.
        let info = redis_url
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        // redis-rs's 500 ms reply timeout is shorter than a loaded Redis
        // sometimes needs; a limiter that errs on a slow reply would fail a
        // delivery that only had to wait.
        let conn = client
            .get_connection_manager_with_config(
                redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(std::time::Duration::from_secs(3)))
                    .set_connection_timeout(Some(std::time::Duration::from_secs(3))),
            )
            .await?;
        Ok(Self::new(conn, prefix, config))
    }

    /// A limiter on an existing connection.
    pub fn new(conn: ConnectionManager, prefix: &str, config: LimiterConfig) -> Self {
        let config = config.sane();
        Self {
            conn,
            tag: format!("{{{prefix}}}"),
            config,
            fallback: InProcessLimiter::new(config),
            last_warning_secs: AtomicU64::new(0),
        }
    }

    /// The start of every key this limiter writes (`{prefix}`), e.g. to clean
    /// up after a test.
    pub fn key_prefix(&self) -> &str {
        &self.tag
    }

    /// The budget it enforces.
    pub fn config(&self) -> LimiterConfig {
        self.config
    }

    fn chat_window_ms(&self) -> u64 {
        let interval = u64::try_from(self.config.per_chat_interval.as_millis()).unwrap_or(u64::MAX);
        interval
            .saturating_mul(u64::from(self.config.per_chat_burst))
            .max(1)
    }

    fn pause_key(&self, chat: Option<ChatId>) -> String {
        match chat {
            Some(chat) => format!("{}:pause:{}", self.tag, chat.0),
            None => format!("{}:pause", self.tag),
        }
    }

    /// Counts one call to `chat` if both the chat's window and the global
    /// window have room and no pause is in force; otherwise counts nothing and
    /// says how long to wait.
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn try_acquire(&self, chat: ChatId) -> Result<Admission, RedisLimiterError> {
        let now = now_ms();
        let chat_window = self.chat_window_ms();
        let chat_key = format!("{}:c:{}:{}", self.tag, chat.0, now / chat_window);
        let global_key = format!("{}:g:{}", self.tag, now / GLOBAL_WINDOW_MS);
        let mut conn = self.conn.clone();
        let mut call = ACQUIRE.prepare_invoke();
        call.key(self.pause_key(None))
            .key(self.pause_key(Some(chat)))
            .key(chat_key)
            .key(global_key)
            .arg(self.config.per_chat_burst)
            .arg(chat_window + EXPIRY_MARGIN_MS)
            .arg(self.config.global_per_second)
            .arg(GLOBAL_WINDOW_MS + EXPIRY_MARGIN_MS);
        let answer: (i64, i64) = call.invoke_async(&mut conn).await?;
        Ok(match answer {
            (0, _) => Admission::Admitted,
            (1, ms) => {
                Admission::Wait(Duration::from_millis(u64::try_from(ms).unwrap_or(0)) + jitter())
            }
            (2, _) => {
                Admission::Wait(Duration::from_millis(chat_window - now % chat_window) + jitter())
            }
            _ => Admission::Wait(
                Duration::from_millis(GLOBAL_WINDOW_MS - now % GLOBAL_WINDOW_MS) + jitter(),
            ),
        })
    }

    async fn pause(
        &self,
        chat: Option<ChatId>,
        retry_after: Duration,
    ) -> Result<(), RedisLimiterError> {
        let ms = u64::try_from(retry_after.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.conn.clone();
        let mut call = PAUSE.prepare_invoke();
        call.key(self.pause_key(chat)).arg(ms);
        let _: i64 = call.invoke_async(&mut conn).await?;
        Ok(())
    }

    fn warn_unavailable(&self, err: &RedisLimiterError) {
        let now = now_ms() / 1000;
        let last = self.last_warning_secs.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY_SECS
            && self
                .last_warning_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %err, "Redis rate limiter unavailable; limiting in-process until it is back");
        }
    }
}

impl DeliveryLimiter for RedisLimiter {
    fn acquire(&self, chat: ChatId) -> BoxFuture<'_, ()> {
        async move {
            loop {
                match self.try_acquire(chat).await {
                    Ok(Admission::Admitted) => return,
                    Ok(Admission::Wait(wait)) => tokio::time::sleep(wait).await,
                    Err(err) => {
                        self.warn_unavailable(&err);
                        self.fallback.acquire(chat).await;
                        return;
                    }
                }
            }
        }
        .boxed()
    }

    fn note_retry_after(&self, chat: Option<ChatId>, retry_after: Duration) -> BoxFuture<'_, ()> {
        async move {
            // Also locally, so the fallback honours it if Redis goes away.
            self.fallback.note_retry_after(chat, retry_after).await;
            if let Err(err) = self.pause(chat, retry_after).await {
                self.warn_unavailable(&err);
            }
        }
        .boxed()
    }
}
