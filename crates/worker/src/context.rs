//! What every handler needs, built once per process and shared.

use std::sync::Arc;
use std::time::Duration;

use kiebot_domain::{Catalog, Family};
use kiebot_jobs::Queues;
use kiebot_kie::Kie;
use kiebot_kie_gate::KieGate;
use kiebot_store::Store;
use kiebot_tg::delivery::DeliveryOptions;
use kiebot_tg::rate_limit::DeliveryLimiter;

use crate::plan::{PollPlan, RunEstimate, RunTimes};

/// How stale the list of held models may be when a Submit reads it.
const HOLDS_MAX_AGE: Duration = Duration::from_secs(10);

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The KIE callback URL (`PUBLIC_URL/kie/callback/<secret>`): its path is
/// the callback's password, so `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackUrl(String);

impl CallbackUrl {
    /// Wraps the full URL.
    pub fn new(url: impl Into<String>) -> CallbackUrl {
        CallbackUrl(url.into())
    }

    /// The URL, for the one place that sends it (createTask).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackUrl(***)")
    }
}

/// Timings and limits of the pipeline. Production values are the defaults;
/// tests and benchmarks shorten them.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Base of the KIE callback URL (`PUBLIC_URL/kie/callback/<secret>`), or
    /// `None` to rely on polling alone. A secret (the path is the
    /// callback's password), so `Debug` never prints it.
    pub callback_url: Option<CallbackUrl>,
    /// Delay before the first poll of a fresh task.
    pub poll_first: Duration,
    /// Longest delay between polls.
    pub poll_max: Duration,
    /// Between polls while a task is likely to finish (see [`crate::plan`]).
    pub poll_hot_gap: Duration,
    /// Plan polls around each model's expected run time. Off, every task is
    /// taken to be likely to finish at once (tests and benchmarks whose fake
    /// KIE answers at once).
    pub estimate_runs: bool,
    /// Submit attempts before a generation fails: calls that may have
    /// created a billed KIE task (a server error, a timeout, a lost reply).
    /// KIE's 429 and 455 prove nothing was made and are not counted.
    pub max_submit_attempts: i64,
    /// Tasks at KIE at once (0: no cap); creates wait beyond it.
    pub max_in_flight: u32,
    /// How long a claimed row is left alone before the reconciler may hand
    /// it to another worker (a worker died mid-job).
    pub lease: Duration,
    /// How long a fresh pending row waits for its Submit job before the
    /// reconciler re-enqueues it.
    pub pending_grace: Duration,
    /// Delivery attempts before giving up on a chat.
    pub max_delivery_attempts: i64,
    /// Rows the reconciler claims per kind and tick.
    pub reconcile_batch: i64,
    /// How often the reconciler ticks.
    pub reconcile_interval: Duration,
    /// Queue depth above which the reconciler adds no more jobs of that kind
    /// (the queue never holds an unbounded backlog; the database does). Keep
    /// it below `kiebot_jobs::REDIS_BACKLOG`.
    pub queue_high_water: u64,
    /// How often the fleet compares the catalog with KIE's catalogue and
    /// takes broken models off sale (`None`: never).
    pub catalog_check_every: Option<Duration>,
    /// How long after its deadline a submitted task is expired without a
    /// last word from KIE. The poll due at the deadline normally decides
    /// first (and expires a task KIE still runs); this bound ends tasks whose
    /// polls keep failing, or run late under load.
    pub expiry_grace: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            callback_url: None,
            poll_first: Duration::from_secs(3),
            poll_max: Duration::from_secs(30),
            poll_hot_gap: Duration::from_secs(2),
            estimate_runs: true,
            max_submit_attempts: 3,
            max_in_flight: 100,
            lease: Duration::from_secs(60),
            pending_grace: Duration::from_secs(20),
            max_delivery_attempts: 8,
            reconcile_batch: 1000,
            reconcile_interval: Duration::from_secs(1),
            queue_high_water: 1_500,
            expiry_grace: Duration::from_secs(300),
            catalog_check_every: None,
        }
    }
}

impl PipelineConfig {
    /// The delay before poll number `attempt` (0-based): grows by half each
    /// time from `poll_first`, capped at `poll_max`. KIE advises starting at
    /// 2-3 s and backing off.
    pub fn poll_delay(&self, attempt: i64) -> Duration {
        let mut d = self.poll_first;
        for _ in 0..attempt.clamp(0, 32) {
            d = d.mul_f64(1.5);
            if d >= self.poll_max {
                return self.poll_max;
            }
        }
        d.min(self.poll_max)
    }

    /// The wait before the next create after `attempts` that may have made a
    /// task (1-based): 2 s doubling, capped at a minute.
    pub fn submit_backoff(&self, attempts: i64) -> Duration {
        let secs = 2u64.saturating_pow(attempts.clamp(1, 10) as u32);
        Duration::from_secs(secs.min(60))
    }

    /// The shape of the poll schedule (see [`crate::plan`]).
    pub fn plan(&self) -> PollPlan {
        PollPlan {
            first: self.poll_first,
            hot_gap: self.poll_hot_gap,
            max_gap: self.poll_max,
            callbacks: self.callback_url.is_some(),
        }
    }

    /// The delay before delivery attempt `attempt` (1-based): 2 s doubling,
    /// capped at 10 minutes.
    pub fn delivery_delay(&self, attempt: i64) -> Duration {
        let secs = 2u64.saturating_pow(attempt.clamp(1, 20) as u32);
        Duration::from_secs(secs.min(600))
    }
}

/// The shared context of all handlers in a process.
pub struct Ctx {
    /// The database.
    pub store: Store,
    /// The enqueue side.
    pub queues: Queues,
    /// KIE over HTTP, or a dry run ([`kiebot_kie::DryRunKie`]).
    pub kie: Arc<dyn Kie>,
    /// The catalog (deadlines, output kinds).
    pub catalog: Arc<Catalog>,
    /// The Bot API client used for delivery.
    pub bot: teloxide::Bot,
    /// The delivery rate limiter shared by all workers.
    pub limiter: Arc<dyn DeliveryLimiter>,
    /// How results are delivered: what downloads may reach (`RESULT_HOSTS`),
    /// size caps, and KIE's fresh links for refused URLs.
    pub delivery: DeliveryOptions,
    /// KIE's account limits shared by all workers.
    pub gate: Arc<dyn KieGate>,
    /// Each model's recent run times at KIE.
    pub run_times: RunTimes,
    /// Timings and limits.
    pub config: PipelineConfig,
    /// The minute (since the epoch) of the last queue vacuum.
    pub last_vacuum_minute: std::sync::atomic::AtomicI64,
}

impl Ctx {
    /// A copy sharing every connection, for tests that swap one part (KIE,
    /// the timings).
    pub fn clone_for_test(&self) -> Ctx {
        Ctx {
            store: self.store.clone(),
            queues: self.queues.clone(),
            kie: self.kie.clone(),
            catalog: self.catalog.clone(),
            bot: self.bot.clone(),
            limiter: self.limiter.clone(),
            delivery: self.delivery.clone(),
            gate: self.gate.clone(),
            run_times: RunTimes::default(),
            config: self.config.clone(),
            last_vacuum_minute: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Enqueues the next job of a row whose due time the caller has moved a
    /// lease ahead (so the reconciler would not enqueue it a second time).
    /// When the queue is at its bound or unreachable, the row is made due at
    /// once instead, and the reconciler's next tick enqueues it.
    pub async fn enqueue(&self, job: kiebot_jobs::Job) -> Result<(), crate::JobError> {
        match self.queues.push(job).await {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::debug!(%job, "queue at its bound; left to the reconciler"),
            Err(e) => tracing::warn!(%job, error = %e, "not queued; left to the reconciler"),
        }
        self.store
            .generations()
            .due_again(&[job.generation()], now_ms())
            .await?;
        Ok(())
    }

    /// Why `model` is off sale, if it is (taken off sale by the catalog check
    /// or an operator). A failure to read counts as on sale: KIE refuses a
    /// truly broken request anyway, and the hold is released then.
    pub async fn off_sale(&self, model: &kiebot_domain::ModelId) -> Option<String> {
        match self.store.model_holds().recent(HOLDS_MAX_AGE).await {
            Ok(holds) => holds.get(model.as_str()).map(|h| h.reason.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "model holds unreadable; taken as none");
                None
            }
        }
    }

    /// How long `model`'s tasks take at KIE: its recent runs when there are
    /// enough, else the catalog's estimate.
    pub async fn run_estimate(&self, model: &kiebot_domain::ModelId) -> RunEstimate {
        if !self.config.estimate_runs {
            return RunEstimate::prior(Duration::ZERO);
        }
        let prior = || {
            RunEstimate::prior(
                self.catalog
                    .get(model.as_str())
                    .map_or(Duration::from_secs(60), kiebot_domain::Model::expected_run),
            )
        };
        if let Some(known) = self.run_times.cached(model.as_str()) {
            return known.unwrap_or_else(prior);
        }
        let read = self
            .store
            .generations()
            .recent_run_times(model.as_str(), crate::plan::SAMPLES)
            .await;
        let estimate = match read {
            Ok(samples) => RunEstimate::from_samples(&samples),
            Err(e) => {
                tracing::warn!(error = %e, "run times unreadable");
                None
            }
        };
        self.run_times.keep(model.as_str(), estimate);
        estimate.unwrap_or_else(prior)
    }

    /// The KIE API family of a generation: its model's, or, for a model the
    /// catalog no longer has, what the stored request's shape says (only the
    /// market nests its fields under `input`; only Suno sends `customMode`).
    pub fn family_of(&self, model: &kiebot_domain::ModelId, request: &serde_json::Value) -> Family {
        if let Some(m) = self.catalog.get(model.as_str()) {
            return m.family;
        }
        if request.get("input").is_some() {
            Family::Market
        } else if request.get("customMode").is_some() {
            Family::Suno
        } else {
            Family::Veo
        }
    }

    /// Milliseconds of a duration, for timestamp arithmetic.
    pub fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_from_three_to_thirty_seconds() {
        let c = PipelineConfig::default();
        assert_eq!(c.poll_delay(0), Duration::from_secs(3));
        assert!(c.poll_delay(1) > c.poll_delay(0));
        assert_eq!(c.poll_delay(10), Duration::from_secs(30));
        assert_eq!(c.poll_delay(1000), Duration::from_secs(30));
    }

    #[test]
    fn delivery_retries_back_off_and_cap() {
        let c = PipelineConfig::default();
        assert_eq!(c.delivery_delay(1), Duration::from_secs(2));
        assert_eq!(c.delivery_delay(3), Duration::from_secs(8));
        assert_eq!(c.delivery_delay(50), Duration::from_secs(600));
    }
}

#[cfg(test)]
mod debug_tests {
    /// The callback URL's path is the callback's password.
    #[test]
    fn the_pipeline_config_never_prints_the_callback_secret() {
        let cfg = super::PipelineConfig {
            callback_url: Some(super::CallbackUrl::new(
                "https://bot.example/kie/callback/cb-secret-in-path",
            )),
            ..super::PipelineConfig::default()
        };
        let dump = format!("{cfg:?}");
        assert!(!dump.contains("cb-secret-in-path"), "{dump}");
        assert!(dump.contains("callback_url"), "{dump}");
    }
}
