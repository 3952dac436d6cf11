//! The fleet's gate: one Lua script per decision, on Redis's clock.
//!
//! Keys (one hash tag, so the scripts run on a Redis Cluster too):
//! `{prefix}:creates` (a sorted set of counted creates, scored by Redis time
//! in ms), `{prefix}:pause`, `{prefix}:line` (flags that expire by
//! themselves), `{prefix}:polls` (the token bucket: tokens and refill time).
//! Redis's own clock (`TIME`) stamps everything, so workers with skewed
//! clocks still count one window.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::{Admission, GateConfig, GateError, Grant, KieGate, ms};

/// KEYS: creates, pause, line. ARGV: window ms, limit, n, fresh (0/1), member.
/// Returns {granted, ms until the next slot or the end of the pause}.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return {0, pause} end
if ARGV[4] == '1' then
  local line = redis.call('PTTL', KEYS[3])
  if line > 0 then return {0, math.min(line, 1000)} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local granted = math.max(0, math.min(limit - used, n))
for i = 1, granted do
  redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], window * 2)
local wait = 0
if granted < n then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + window - now) end
end
return {granted, wait}
",
    )
});

/// KEYS: creates, pause. ARGV: window ms, limit.
/// Returns {free slots, ms until one frees or the pause ends}.
static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return {0, pause} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local room = math.max(0, tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1]))
local wait = 0
if room == 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + window - now) end
end
return {room, wait}
",
    )
});

/// KEYS: creates. ARGV: n. Removes the n latest counted creates.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZPOPMAX', KEYS[1], tonumber(ARGV[1]))
return 0
",
    )
});

/// KEYS: flag. ARGV: ms. Sets a flag for ms, never shortening it.
static FLAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
",
    )
});

/// KEYS: bucket. ARGV: rate per s, burst, take (0/1).
/// Returns {taken (0/1), ms until a token, whole tokens left}.
static POLL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[2])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or now)
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local taken = 0
local wait = 0
if ARGV[3] == '1' then
  if tokens >= 1 then
    tokens = tokens - 1
    taken = 1
  else
    wait = math.max(1, math.ceil((1 - tokens) * 1000 / rate))
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return {taken, wait, math.floor(tokens)}
",
    )
});

/// A [`KieGate`] shared by every process using the same Redis and prefix.
pub struct RedisGate {
    conn: ConnectionManager,
    tag: String,
    config: GateConfig,
    /// Makes the members of the creates set unique across this process's
    /// calls (the process part comes from `process`).
    counter: AtomicU64,
    process: String,
}

impl std::fmt::Debug for RedisGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGate")
            .field("tag", &self.tag)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisGate {
    /// Connects to `redis_url`. `prefix` names the shared count: processes
    /// with the same prefix share KIE's limits (one KIE account per prefix).
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached now.
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        config: GateConfig,
    ) -> Result<Self, GateError> {
        use redis::IntoConnectionInfo as _;
        let info = redis_url
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let conn = client
            .get_connection_manager_with_config(
                redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(3)))
                    .set_connection_timeout(Some(Duration::from_secs(3))),
            )
            .await?;
        Ok(Self::new(conn, prefix, config))
    }

    /// A gate on an existing connection.
    pub fn new(conn: ConnectionManager, prefix: &str, config: GateConfig) -> Self {
        RedisGate {
            conn,
            tag: format!("{{{prefix}}}"),
            config,
            counter: AtomicU64::new(0),
            process: format!("{}-{:x}", std::process::id(), rand::random::<u32>()),
        }
    }

    /// The start of every key this gate writes.
    pub fn key_prefix(&self) -> &str {
        &self.tag
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }

    async fn take(&self, n: u32, fresh: bool) -> Result<Grant, GateError> {
        if n == 0 {
            return Ok(Grant {
                granted: 0,
                next_in: Duration::ZERO,
            });
        }
        let member = format!(
            "{}:{}",
            self.process,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let mut call = TAKE.prepare_invoke();
        call.key(self.key("creates"))
            .key(self.key("pause"))
            .key(self.key("line"))
            .arg(self.config.window_ms())
            .arg(self.config.creates_per_window)
            .arg(n)
            .arg(u8::from(fresh))
            .arg(member);
        let (granted, wait): (i64, i64) = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(Grant {
            granted: u32::try_from(granted).unwrap_or(0),
            next_in: Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
        })
    }

    async fn flag(&self, name: &str, for_: Duration) -> Result<(), GateError> {
        let mut call = FLAG.prepare_invoke();
        call.key(self.key(name)).arg(ms(for_).max(1));
        let _: i64 = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn poll(&self, take: bool) -> Result<(bool, Duration, u32), GateError> {
        let mut call = POLL.prepare_invoke();
        call.key(self.key("polls"))
            .arg(self.config.polls_per_second.max(1))
            .arg(self.config.poll_burst.max(1))
            .arg(u8::from(take));
        let (taken, wait, left): (i64, i64, i64) =
            call.invoke_async(&mut self.conn.clone()).await?;
        Ok((
            taken == 1,
            Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
            u32::try_from(left).unwrap_or(0),
        ))
    }
}

impl KieGate for RedisGate {
    fn take_creates(&self, n: u32) -> BoxFuture<'_, Result<Grant, GateError>> {
        self.take(n, false).boxed()
    }

    fn creates_available(&self) -> BoxFuture<'_, Result<Grant, GateError>> {
        async move {
            let mut call = PEEK.prepare_invoke();
            call.key(self.key("creates"))
                .key(self.key("pause"))
                .arg(self.config.window_ms())
                .arg(self.config.creates_per_window);
            let (room, wait): (i64, i64) = call.invoke_async(&mut self.conn.clone()).await?;
            Ok(Grant {
                granted: u32::try_from(room).unwrap_or(0),
                next_in: Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
            })
        }
        .boxed()
    }

    fn admit_fresh(&self) -> BoxFuture<'_, Result<Admission, GateError>> {
        async move {
            let grant = self.take(1, true).await?;
            Ok(if grant.granted == 1 {
                Admission::Go
            } else {
                Admission::Wait(grant.next_in)
            })
        }
        .boxed()
    }

    fn give_back(&self, n: u32) -> BoxFuture<'_, Result<(), GateError>> {
        async move {
            if n > 0 {
                let mut call = GIVE_BACK.prepare_invoke();
                call.key(self.key("creates")).arg(n);
                let _: i64 = call.invoke_async(&mut self.conn.clone()).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn mark_line(&self, for_: Duration) -> BoxFuture<'_, Result<(), GateError>> {
        self.flag("line", for_).boxed()
    }

    fn pause(&self, for_: Duration) -> BoxFuture<'_, Result<(), GateError>> {
        self.flag("pause", for_).boxed()
    }

    fn take_poll(&self) -> BoxFuture<'_, Result<Admission, GateError>> {
        async move {
            let (taken, wait, _) = self.poll(true).await?;
            Ok(if taken {
                Admission::Go
            } else {
                Admission::Wait(wait)
            })
        }
        .boxed()
    }

    fn polls_available(&self) -> BoxFuture<'_, Result<u32, GateError>> {
        async move { Ok(self.poll(false).await?.2) }.boxed()
    }

    fn config(&self) -> GateConfig {
        self.config
    }
}
