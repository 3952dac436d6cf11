//! Building a pipeline context from settings: the one place where the store,
//! the queue, KIE, the Bot API client and the rate limiter are chosen for a
//! mode. Binaries, the demo, tests and benchmarks all assemble here, so they
//! run the same parts.
//!
//! This is the composition root: the worker crate knows neither the settings
//! nor the catalog file, only the values and parts built here (its
//! [`PipelineConfig`], an `Arc<dyn Kie>`, a loaded [`kiebot_domain::Catalog`]).

use std::sync::Arc;

use anyhow::Context as _;
use kiebot_config::{KieLimits, Mode, Settings};
use kiebot_jobs::Queues;
use kiebot_jobs::names::QueueNames;
use kiebot_kie::{ApiKey, DryRunKie, Kie, KieClient, KieConfig};
use kiebot_kie_gate::{GateConfig, KieGate, LocalGate, RedisGate};
use kiebot_store::{PoolSize, Store};
use kiebot_tg::delivery::{DeliveryOptions, FreshLinkFuture, FreshLinks, LinkError};
use kiebot_tg::egress::EgressPolicy;
use kiebot_tg::rate_limit::{DeliveryLimiter, InProcessLimiter, LimiterConfig, RedisLimiter};
use kiebot_worker::{CallbackUrl, Ctx, PipelineConfig};
use rand::Rng;

/// Settings key of the secret in the KIE callback path, shared by every
/// process through the database.
const CALLBACK_SECRET_KEY: &str = "kie_callback_secret";

/// Everything [`assemble`] needs beyond the settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Queue and rate-limit key namespace; empty means the settings'
    /// `QUEUE_NAMESPACE` (tests and benchmarks isolate themselves with a
    /// random one).
    pub namespace: String,
    /// Pipeline timings; `None` for production defaults.
    pub pipeline: Option<PipelineConfig>,
    /// Database connections kept open while idle (see
    /// [`kiebot_store::PoolSize`]); 0 opens them on demand. A process that
    /// runs the front bot keeps its pool warm (`kiebot_app` asks for
    /// `kiebot_bot::WARM_CONNECTIONS`).
    pub warm_connections: u32,
}

/// Connects to everything the settings name and builds the shared context.
/// Applies migrations (they are idempotent and safe to race).
pub async fn assemble(settings: &Settings, options: Options) -> anyhow::Result<Arc<Ctx>> {
    let mode = settings.mode()?;
    // Every queue's handlers may hold a connection at once; SQLite has one
    // writer anyway, so its pool stays small.
    let pool_size = match mode {
        Mode::Fleet => u32::try_from(settings.worker_concurrency.clamp(10, 40)).unwrap_or(40),
        Mode::Embedded => 10,
    };
    let pool = PoolSize::new(pool_size).warm(options.warm_connections);
    let store = Store::connect_with(&settings.database_url, pool)
        .await
        .context("connecting to DATABASE_URL")?;
    store.migrate().await.context("applying migrations")?;
    let namespace = if options.namespace.is_empty() {
        settings.queue_namespace.clone()
    } else {
        options.namespace.clone()
    };
    let names = QueueNames::new(&namespace);
    let limits = LimiterConfig {
        global_per_second: settings.delivery_rate,
        ..LimiterConfig::default()
    };
    let gate_config = gate_config(&settings.kie_limits);
    let (queues, limiter, gate): (Queues, Arc<dyn DeliveryLimiter>, Arc<dyn KieGate>) = match mode {
        Mode::Fleet => {
            let url = settings
                .redis_url
                .as_deref()
                .context("REDIS_URL: required in fleet mode")?;
            let queues = Queues::redis(url, names)
                .await
                .context("connecting to REDIS_URL")?;
            let limiter =
                RedisLimiter::connect(url, &format!("{}kiebot:tg", prefix(&namespace)), limits)
                    .await
                    .context("connecting the delivery rate limiter to REDIS_URL")?;
            let gate = RedisGate::connect(
                url,
                &format!("{}kiebot:kie", prefix(&namespace)),
                gate_config,
            )
            .await
            .context("connecting the KIE rate gate to REDIS_URL")?;
            (queues, Arc::new(limiter), Arc::new(gate))
        }
        Mode::Embedded => {
            let queues = Queues::sqlite(&settings.database_url, names)
                .await
                .context("opening the embedded queue")?;
            (
                queues,
                Arc::new(InProcessLimiter::new(limits)),
                Arc::new(LocalGate::new(gate_config)),
            )
        }
    };
    let kie = kie(settings)?;
    let catalog = Arc::new(kiebot_catalog::load(settings.catalog_path.as_deref())?);
    let token = settings.require_telegram_token()?;
    let bot = teloxide::Bot::new(token.expose()).set_api_url(
        settings
            .telegram_api_url
            .parse()
            .context("TELEGRAM_API_URL")?,
    );
    let mut config = options.pipeline.unwrap_or_else(|| PipelineConfig {
        lease: settings.job_lease,
        poll_first: settings.poll_initial,
        ..PipelineConfig::default()
    });
    config.max_in_flight = settings.kie_limits.max_in_flight;
    config.catalog_check_every = (settings.catalog_check_hours > 0)
        .then(|| std::time::Duration::from_secs(u64::from(settings.catalog_check_hours) * 3600));
    if let Some(public) = &settings.public_url {
        let secret = callback_secret(&store).await?;
        config.callback_url = Some(CallbackUrl::new(format!("{public}/kie/callback/{secret}")));
    }
    let delivery = delivery_options(settings, &kie)?;
    Ok(Arc::new(Ctx {
        store,
        queues,
        kie,
        catalog,
        bot,
        limiter,
        delivery,
        gate,
        run_times: Default::default(),
        config,
        last_vacuum_minute: Default::default(),
    }))
}

/// KIE as the settings name it: the HTTP client, or with `DRY_RUN` a dry
/// run that calls nothing.
pub fn kie(settings: &Settings) -> anyhow::Result<Arc<dyn Kie>> {
    if settings.dry_run {
        tracing::warn!("DRY_RUN: no KIE endpoint will be called and nothing will be charged");
        return Ok(Arc::new(DryRunKie::new()));
    }
    let key = settings
        .require_kie_key()?
        .context("KIE_API_KEY: required unless DRY_RUN=true")?;
    let mut cfg = KieConfig::new(ApiKey::new(key.expose()));
    cfg.api_base = settings.kie_api_url.parse().context("KIE_API_URL")?;
    cfg.upload_base = settings.kie_upload_url.parse().context("KIE_UPLOAD_URL")?;
    Ok(Arc::new(
        KieClient::new(cfg).context("building the KIE client")?,
    ))
}

/// Delivery held to `RESULT_HOSTS` (and the test switches), with KIE's
/// download-url endpoint as the source of fresh links.
pub fn delivery_options(
    settings: &Settings,
    kie: &Arc<dyn Kie>,
) -> anyhow::Result<DeliveryOptions> {
    let egress = &settings.result_egress;
    let policy = EgressPolicy::new(&egress.hosts)
        .allow_http(egress.allow_http)
        .allow_loopback(egress.allow_loopback);
    if egress.allow_loopback {
        tracing::warn!("RESULT_ALLOW_LOOPBACK: result downloads may reach loopback addresses");
    }
    let mut options =
        DeliveryOptions::with_egress(policy).context("building the result download client")?;
    // A dry run's results hold no KIE file to ask a fresh link for.
    if kie.generates() {
        options.fresh_links = Some(Arc::new(KieLinks(Arc::clone(kie))));
    }
    Ok(options)
}

/// Fresh links from KIE's download-url endpoint.
struct KieLinks(Arc<dyn Kie>);

impl FreshLinks for KieLinks {
    fn fresh_link<'a>(&'a self, url: &'a str) -> FreshLinkFuture<'a> {
        Box::pin(async move {
            self.0.download_url(url).await.map_err(|e| LinkError {
                retryable: e.is_retryable(),
                message: e.to_string(),
            })
        })
    }
}

/// The secret in the callback path: made once, kept in the database, so every
/// process of a fleet agrees on it and a restart keeps it.
pub async fn callback_secret(store: &Store) -> anyhow::Result<String> {
    let fresh: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:x}", rng.random_range(0..16u8)))
            .collect()
    };
    Ok(store.setting_or_init(CALLBACK_SECRET_KEY, &fresh).await?)
}

/// KIE's limits as a gate keeps them: the per-second poll limit is split
/// into a steady rate and a burst (a fifth) that together never exceed it.
pub fn gate_config(limits: &KieLimits) -> GateConfig {
    // A burst of one in ten keeps any second at the limit while nearly all
    // of the budget refills steadily: at KIE's 10/s, 9 polls/s plus 1.
    let burst = (limits.polls_per_second / 10).max(1);
    GateConfig {
        creates_per_window: limits.creates_per_window,
        window: limits.create_window,
        polls_per_second: limits.polls_per_second.saturating_sub(burst).max(1),
        poll_burst: burst,
        ..GateConfig::default()
    }
}

fn prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}:")
    }
}
