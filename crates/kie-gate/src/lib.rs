//! KIE's account limits, kept by every process together.
//!
//! KIE accepts at most 20 new tasks per 10 seconds per account and rejects
//! the rest with 429 **without queueing them**; it answers at most 10 status
//! requests per second per key. A fleet of workers that each kept their own
//! count would overrun both. A [`KieGate`] is the shared count:
//!
//! - **Create slots** ([`KieGate::take_creates`]): a sliding window of the
//!   creates made by anyone, as long as KIE's window plus a margin (for clock
//!   skew and time on the wire), so that no 10-second window at KIE ever sees
//!   more than the limit.
//! - **The line** ([`KieGate::mark_line`], [`KieGate::admit_fresh`]): while
//!   generations wait for a slot, a confirmation that arrives now must not
//!   jump ahead of them. The dispatcher hands slots out in a fair order (each
//!   user's first waiting generation before anyone's second) and marks the
//!   line; a fresh create is admitted only when nobody waits.
//! - **The pause** ([`KieGate::pause`]): a 429 from KIE proves its window is
//!   full (our count can be off: another tool on the same account, a skewed
//!   clock), so every process stops creating until it passes.
//! - **Status polls** ([`KieGate::take_poll`]): a token bucket whose rate plus
//!   burst is the per-second limit, so no second ever holds more polls.
//!
//! Two implementations: [`RedisGate`] (the fleet; every decision is one Lua
//! script, atomic, on Redis's own clock) and [`LocalGate`] (one process).
//! When Redis cannot be reached, the Redis gate answers "wait": a create that
//! is not counted could be the one KIE refuses.

mod local;
mod redis_gate;

use std::time::Duration;

use futures::future::BoxFuture;

pub use local::LocalGate;
pub use redis_gate::RedisGate;

/// The limits a gate keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// Creates allowed in one window (KIE: 20).
    pub creates_per_window: u32,
    /// KIE's create window (10 s).
    pub window: Duration,
    /// Added to `window` when counting: a create counted at our clock lands at
    /// KIE's a little later, and clocks differ.
    pub margin: Duration,
    /// Status polls per second, refilled continuously.
    pub polls_per_second: u32,
    /// Polls that may be taken at once on top of the rate; rate + burst is the
    /// most any one second sees (KIE: 10).
    pub poll_burst: u32,
}

impl Default for GateConfig {
    /// KIE's documented limits: 20 creates per 10 s (counted over 10.3 s) and
    /// 9 polls per second with a burst of 1 (never more than 10 in a second).
    fn default() -> Self {
        GateConfig {
            creates_per_window: 20,
            window: Duration::from_secs(10),
            // Enough for a request's trip and the clocks' skew; every 100 ms
            // more costs 1 % of KIE's throughput, and a create that still
            // lands early costs only a 429 (counted as no attempt).
            margin: Duration::from_millis(300),
            polls_per_second: 9,
            poll_burst: 1,
        }
    }
}

impl GateConfig {
    /// No limit worth the name: for benchmarks of the pipeline itself and
    /// fakes that enforce nothing.
    pub fn unlimited() -> Self {
        GateConfig {
            creates_per_window: 1_000_000,
            window: Duration::from_secs(1),
            margin: Duration::ZERO,
            polls_per_second: 1_000_000,
            poll_burst: 1_000_000,
        }
    }

    /// Whether the window can never fill in practice (a fake or a private
    /// deployment with no limit): fairness between users then costs time
    /// for nothing.
    pub fn is_unlimited(&self) -> bool {
        self.creates_per_window >= 100_000
    }

    /// The window a create is counted in.
    pub fn counted_window(&self) -> Duration {
        self.window + self.margin
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.counted_window().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Slots handed out by [`KieGate::take_creates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// How many were granted (counted in the window already).
    pub granted: u32,
    /// When more were asked for than granted: how long until the next slot
    /// frees (or the pause ends).
    pub next_in: Duration,
}

/// Whether to go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go: the call is counted.
    Go,
    /// Not now; try again after this long.
    Wait(Duration),
}

/// The gate could not decide (Redis is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("KIE rate gate unavailable: {0}")]
pub struct GateError(#[from] redis::RedisError);

/// KIE's account limits, shared by every process that uses the same gate.
pub trait KieGate: Send + Sync + std::fmt::Debug {
    /// Up to `n` create slots now, for generations the caller picked in fair
    /// order. Paused or full: fewer (maybe none), with the wait for the next.
    fn take_creates(&self, n: u32) -> BoxFuture<'_, Result<Grant, GateError>>;

    /// How many create slots are free now (without taking them), and when
    /// none is: how long until one frees or the pause ends. The dispatcher
    /// picks that many generations; each takes its own slot when it calls
    /// KIE, so the count stays at the moment of the call.
    fn creates_available(&self) -> BoxFuture<'_, Result<Grant, GateError>>;

    /// One create slot for a generation nobody dispatched (straight from its
    /// confirmation): refused while the line is marked, so that it queues
    /// behind those already waiting.
    fn admit_fresh(&self) -> BoxFuture<'_, Result<Admission, GateError>>;

    /// Gives back `n` slots taken but not used (the rows were gone).
    fn give_back(&self, n: u32) -> BoxFuture<'_, Result<(), GateError>>;

    /// Marks that generations wait in line, for `for_`.
    fn mark_line(&self, for_: Duration) -> BoxFuture<'_, Result<(), GateError>>;

    /// KIE answered 429: no creates by anyone for `for_` (never shortened).
    fn pause(&self, for_: Duration) -> BoxFuture<'_, Result<(), GateError>>;

    /// One status poll now, or how long until one is allowed.
    fn take_poll(&self) -> BoxFuture<'_, Result<Admission, GateError>>;

    /// How many status polls could be taken now (without taking them), for
    /// deciding how many polls to enqueue.
    fn polls_available(&self) -> BoxFuture<'_, Result<u32, GateError>>;

    /// The limits it keeps.
    fn config(&self) -> GateConfig;
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
