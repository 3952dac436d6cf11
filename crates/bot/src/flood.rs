//! Per-user flood control: a token bucket per sender on incoming updates,
//! checked before an update costs anything (before its update id is
//! recorded, before it joins its chat's lane, before any database read).
//!
//! Each user's bucket holds up to `burst` updates and regains
//! `rate_per_min` a minute. An update that finds the bucket empty is
//! dropped; the first one dropped in a flood gets one polite notice (sent
//! in the background, so the check itself never waits), and the next notice
//! only after the bucket has filled up again, i.e. after the user calmed
//! down. Payments (`pre_checkout_query`, `successful_payment`) and updates
//! from admins (`ADMIN_IDS`) are never dropped: Telegram must see every
//! pre-checkout answered, and a paid top-up must always be credited.
//!
//! A dropped button press is not answered either (answering is a Bot API
//! call, which is what a flood must not cost); Telegram stops its spinner
//! on its own.
//!
//! The buckets live in this process's memory. A full bucket is the same as
//! no bucket, so buckets that have refilled are swept away, and the map
//! never holds more than `max_users` (under a flood of fresh senders the
//! fullest buckets go first). In a fleet each front keeps its own buckets:
//! with the webhook spread over N fronts a user gets up to N times the rate,
//! still bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiebot_tg::texts::{self, Lang};
use teloxide::prelude::*;
use teloxide::types::{ChatId, Update, UpdateKind};

use crate::BotDeps;

/// Counter: updates dropped by flood control.
pub const FLOOD_DROPPED: &str = "kiebot_flood_dropped_total";
/// Counter: flood notices sent.
pub const FLOOD_NOTICES: &str = "kiebot_flood_notices_total";

/// How often buckets that have refilled are swept away.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The flood control's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodConfig {
    /// Updates a bucket regains per minute; 0 turns flood control off.
    pub rate_per_min: u32,
    /// The bucket's size: updates a user may send at once.
    pub burst: u32,
    /// Refused promo codes a user may try per hour.
    pub promo_failures_per_hour: u32,
    /// Buckets kept at most (memory bound).
    pub max_users: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            rate_per_min: 60,
            burst: 20,
            promo_failures_per_hour: 5,
            max_users: 100_000,
        }
    }
}

impl FloodConfig {
    /// No flood control (tests and benchmarks that play thousands of
    /// updates of one user); promo attempts keep the default limit.
    pub fn off() -> Self {
        FloodConfig {
            rate_per_min: 0,
            ..FloodConfig::default()
        }
    }
}

/// What the bucket says about one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Admit,
    /// Drop it; `notice`: this is the first dropped in this flood, tell the
    /// user.
    Drop {
        /// Whether to send the notice.
        notice: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// A notice was sent in this flood.
    noticed: bool,
}

#[derive(Debug)]
struct Buckets {
    by_user: HashMap<i64, Bucket>,
    swept: Instant,
}

/// The per-user buckets of one front process. See the module docs.
#[derive(Debug)]
pub struct FloodGate {
    config: FloodConfig,
    buckets: Mutex<Buckets>,
}

impl FloodGate {
    /// A gate with these limits.
    pub fn new(config: FloodConfig) -> Self {
        FloodGate {
            config,
            buckets: Mutex::new(Buckets {
                by_user: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// The limits.
    pub fn config(&self) -> &FloodConfig {
        &self.config
    }

    /// Buckets held now (idle users have none).
    pub fn tracked(&self) -> usize {
        self.lock().by_user.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // A panic while holding the lock leaves plain numbers behind, valid
        // as they are.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.config.rate_per_min) / 60.0
    }

    /// Takes one token from `user`'s bucket at `now`.
    pub fn check(&self, user: i64, now: Instant) -> Verdict {
        if self.config.rate_per_min == 0 {
            return Verdict::Admit;
        }
        let burst = f64::from(self.config.burst.max(1));
        let per_sec = self.per_sec();
        let mut b = self.lock();
        if now.saturating_duration_since(b.swept) >= SWEEP_EVERY
            || b.by_user.len() >= self.config.max_users
        {
            b.swept = now;
            sweep(&mut b.by_user, now, burst, per_sec, self.config.max_users);
        }
        let bucket = b.by_user.entry(user).or_insert(Bucket {
            tokens: burst,
            at: now,
            noticed: false,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= burst {
            // The user calmed down since the last flood.
            bucket.noticed = false;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Admit
        } else {
            let notice = !bucket.noticed;
            bucket.noticed = true;
            Verdict::Drop { notice }
        }
    }

    /// Whether `update` may be handled: `false` drops it (and, once per
    /// flood, sends the notice in the background). Never `false` for a
    /// payment, an admin's update or an update without a sender.
    pub fn admit(&self, deps: &BotDeps, update: &Update) -> bool {
        if self.config.rate_per_min == 0 || is_payment(update) {
            return true;
        }
        let Some(from) = update.from() else {
            return true;
        };
        let Ok(user) = i64::try_from(from.id.0) else {
            return true;
        };
        if deps.admin_ids.iter().any(|a| a.0 == user) {
            return true;
        }
        match self.check(user, Instant::now()) {
            Verdict::Admit => true,
            Verdict::Drop { notice } => {
                metrics::counter!(FLOOD_DROPPED).increment(1);
                tracing::debug!(
                    user,
                    update_id = update.id.0,
                    "update dropped by flood control"
                );
                if notice {
                    let chat = update.chat().map_or(ChatId(user), |c| c.id);
                    let lang = Lang::parse(from.language_code.as_deref().unwrap_or(""));
                    let bot = deps.bot.clone();
                    tokio::spawn(async move {
                        metrics::counter!(FLOOD_NOTICES).increment(1);
                        if let Err(e) = bot.send_message(chat, texts::flood_notice(lang)).await {
                            tracing::warn!(user, error = %e, "flood notice not sent");
                        }
                    });
                }
                false
            }
        }
    }

    /// The updates of a batch that may be handled, in order.
    pub fn admit_batch(&self, deps: &BotDeps, updates: Vec<Update>) -> Vec<Update> {
        if self.config.rate_per_min == 0 {
            return updates;
        }
        updates
            .into_iter()
            .filter(|u| self.admit(deps, u))
            .collect()
    }
}

/// A payment update: never dropped.
pub fn is_payment(update: &Update) -> bool {
    match &update.kind {
        UpdateKind::PreCheckoutQuery(_) => true,
        UpdateKind::Message(m) => m.successful_payment().is_some(),
        _ => false,
    }
}

/// Drops buckets that have refilled (the same as no bucket), then, if still
/// more than `max` are left, the fullest ones.
fn sweep(by_user: &mut HashMap<i64, Bucket>, now: Instant, burst: f64, per_sec: f64, max: usize) {
    let level = |b: &Bucket| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
    by_user.retain(|_, b| level(b) < burst);
    if by_user.len() >= max {
        let mut levels: Vec<(f64, i64)> = by_user.iter().map(|(u, b)| (level(b), *u)).collect();
        levels.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Room for a tenth more, so the next sweep is not the next update.
        let excess = by_user.len() + max / 10 + 1 - max;
        for (_, u) in levels.into_iter().take(excess) {
            by_user.remove(&u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: u32, burst: u32, max: usize) -> FloodGate {
        FloodGate::new(FloodConfig {
            rate_per_min: rate,
            burst,
            max_users: max,
            ..FloodConfig::default()
        })
    }

    #[test]
    fn a_burst_passes_the_rest_is_dropped_with_one_notice() {
        let g = gate(60, 5, 1000);
        let t = Instant::now();
        for _ in 0..5 {
            assert_eq!(g.check(7, t), Verdict::Admit);
        }
        assert_eq!(g.check(7, t), Verdict::Drop { notice: true });
        for _ in 0..100 {
            assert_eq!(g.check(7, t), Verdict::Drop { notice: false });
        }
        // Another user is untouched.
        assert_eq!(g.check(8, t), Verdict::Admit);
        // One token a second comes back; still the same flood: no notice.
        let later = t + Duration::from_secs(1);
        assert_eq!(g.check(7, later), Verdict::Admit);
        assert_eq!(g.check(7, later), Verdict::Drop { notice: false });
        // Refilled: a new flood gets a new notice.
        let calm = later + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(g.check(7, calm), Verdict::Admit);
        }
        assert_eq!(g.check(7, calm), Verdict::Drop { notice: true });
    }

    #[test]
    fn off_admits_everything() {
        let g = FloodGate::new(FloodConfig::off());
        let t = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(g.check(1, t), Verdict::Admit);
        }
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded_and_idle_users_are_forgotten() {
        let g = gate(60, 3, 100);
        let t = Instant::now();
        for user in 0..10_000 {
            g.check(user, t);
            assert!(g.tracked() <= 100, "{} buckets", g.tracked());
        }
        // Everyone refilled: the next sweep forgets them all.
        let idle = t + Duration::from_secs(120);
        g.check(1, idle);
        assert_eq!(g.tracked(), 1);
    }

    #[test]
    fn a_flooding_user_survives_a_sweep() {
        let g = gate(60, 3, 1000);
        let t = Instant::now();
        for _ in 0..3 {
            g.check(5, t);
        }
        let after_sweep = t + SWEEP_EVERY;
        // Ten seconds give back three tokens at most (the burst): admitted
        // three, then dropped, with a notice (the bucket was full again).
        for _ in 0..3 {
            assert_eq!(g.check(5, after_sweep), Verdict::Admit);
        }
        assert!(matches!(g.check(5, after_sweep), Verdict::Drop { .. }));
        assert_eq!(g.check(5, after_sweep), Verdict::Drop { notice: false });
    }
}
