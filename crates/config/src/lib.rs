//! kiebot's configuration contract (design.md section 9).
//!
//! Settings come from environment variables. `KIEBOT_CONFIG` may name a TOML
//! file whose top-level keys mirror the variable names
//! (`DATABASE_URL = "postgres://..."`); a variable set in the environment wins
//! over the file. Everything is parsed once, here, into [`Settings`]: a missing
//! or malformed value stops start-up with one [`ConfigError`] line naming the
//! variable. Secrets are wrapped in [`Secret`], whose `Debug` and `Display`
//! never show the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use kiebot_domain::{Money, Pricing, Rate, UserId};

/// A configuration value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A connection URL (`DATABASE_URL`, `REDIS_URL`) whose password must not
/// reach a log line: `Debug` and `Display` show it with the password
/// replaced by `***`. Dereferences to the whole URL for the code that
/// connects.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnUrl(String);

impl ConnUrl {
    /// Wraps a URL.
    pub fn new(value: impl Into<String>) -> Self {
        ConnUrl(value.into())
    }

    /// The whole URL, password included, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let rest = &url[scheme_end..];
        // The user-info ends at the last '@' before the path: a password
        // may itself hold '@' or '/' only percent-encoded, but be generous.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@')) else {
            return url.clone();
        };
        let userinfo = &rest[..at];
        let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
        let masked = if userinfo.contains(':') || user.is_empty() {
            format!("{user}:***")
        } else {
            // `redis://secret@host`: a lone user-info is Redis's password.
            "***".to_owned()
        };
        format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
    }
}

impl std::ops::Deref for ConnUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A variable that is missing or malformed. Displayed as one line that names
/// the variable and says what was expected, never its value when it is secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong and what was expected.
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            var,
            reason: reason.into(),
        }
    }
}

/// How the bot receives updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotMode {
    /// getUpdates long polling (default; needs no public address).
    Polling,
    /// Telegram posts updates to `PUBLIC_URL`.
    Webhook,
}

pub use kiebot_telemetry::LogFormat;

/// How the processes are laid out, which follows from the storage settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process, SQLite for state and queue.
    Embedded,
    /// Front bot and N workers, PostgreSQL for state, Redis for the queue.
    Fleet,
}

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Every setting, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `TELEGRAM_BOT_TOKEN`: needed only by commands that talk to Telegram.
    pub telegram_token: Option<Secret>,
    /// `TELEGRAM_API_URL`.
    pub telegram_api_url: String,
    /// `BOT_MODE`.
    pub bot_mode: BotMode,
    /// `KIE_API_KEY`: needed only by commands that call KIE (unless `DRY_RUN`).
    pub kie_api_key: Option<Secret>,
    /// `KIE_API_URL`.
    pub kie_api_url: String,
    /// `KIE_UPLOAD_URL`.
    pub kie_upload_url: String,
    /// `DATABASE_URL` (its password never printed).
    pub database_url: ConnUrl,
    /// `REDIS_URL`; unset means the embedded queue (its password never
    /// printed).
    pub redis_url: Option<ConnUrl>,
    /// `HTTP_ADDR`: the public listener: the Telegram webhook, KIE
    /// callbacks and `/healthz` only.
    pub http_addr: SocketAddr,
    /// `OPS_ADDR`: the private listener: metrics, readiness, health and the
    /// dashboard (loopback by default). Equal to `HTTP_ADDR`, one listener
    /// serves everything, as before the split.
    pub ops_addr: SocketAddr,
    /// Request timeout, body limit and connection cap of both listeners.
    pub http_limits: HttpLimits,
    /// Per-user flood control of the front bot.
    pub flood: FloodSettings,
    /// `PUBLIC_URL`: where KIE callbacks and the Telegram webhook reach us.
    pub public_url: Option<String>,
    /// `ADMIN_IDS`: the first is the owner.
    pub admin_ids: Vec<UserId>,
    /// `CATALOG_PATH`: a catalog file replacing the shipped one.
    pub catalog_path: Option<PathBuf>,
    /// `WORKER_CONCURRENCY`: jobs run at once per worker process.
    pub worker_concurrency: usize,
    /// `DRY_RUN`: no KIE calls and no charges.
    pub dry_run: bool,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otel_endpoint: Option<String>,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `USD_PER_CREDIT`, `FX_RATE`, `MARKUP`.
    pub pricing: Pricing,
    /// `MAX_ACTIVE_GENERATIONS`: concurrent generations per user.
    pub max_active_generations: u32,
    /// `STARS_RATE`: minor units credited per Telegram Star (default 150,
    /// 1.50 in the operator's currency).
    pub stars_rate: Money,
    /// `STARS_RECONCILE_SECS`: how often the front compares our payments
    /// with Telegram's Star transactions (default 60); `None` (0): never.
    pub stars_reconcile: Option<std::time::Duration>,
    /// `DASHBOARD_TOKEN`: required to open the queue dashboard.
    pub dashboard_token: Option<Secret>,
    /// `QUEUE_NAMESPACE`: prefix of queue and rate-limit keys, so several
    /// deployments can share one Redis (empty by default).
    pub queue_namespace: String,
    /// `JOB_LEASE_SECS`: how long a claimed row is left to the worker that
    /// claimed it before another may take over (a worker died mid-job).
    pub job_lease: std::time::Duration,
    /// `POLL_INITIAL_MS`: delay before the first poll of a new KIE task.
    pub poll_initial: std::time::Duration,
    /// `DELIVERY_RATE_PER_SECOND`: Bot API sends per second across all chats
    /// and workers (Telegram's default budget is about 30; paid broadcasts
    /// allow more).
    pub delivery_rate: u32,
    /// KIE's account limits as the pipeline keeps them.
    pub kie_limits: KieLimits,
    /// `KIE_WEBHOOK_HMAC_KEY`: the account's webhook HMAC key; when set, KIE
    /// callbacks must carry a valid `X-Webhook-Signature`.
    pub kie_webhook_hmac_key: Option<Secret>,
    /// `CATALOG_CHECK_HOURS`: how often a worker fleet compares the catalog
    /// with KIE's catalogue and takes broken models off sale (0: never).
    pub catalog_check_hours: u32,
    /// The referral rules (`REFERRAL_*`).
    pub referral: ReferralSettings,
    /// What admins other than the owner may move (`ADMIN_*`).
    pub admin_limits: AdminLimits,
    /// Where result files may be downloaded from.
    pub result_egress: ResultEgress,
}

/// The referral rules: when an invitee's activity pays their inviter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferralSettings {
    /// `REFERRAL_MIN_STARS`: the smallest top-up, in Stars, that qualifies
    /// (default 100).
    pub min_stars: u32,
    /// `REFERRAL_MIN_SPEND`: captured spending (money units) that qualifies
    /// too; `None` (unset or 0): spending never does.
    pub min_spend: Option<Money>,
    /// `REFERRAL_MONTHLY_CAP`: paid referrals per inviter per calendar month
    /// (UTC; default 10; 0 pays none).
    pub monthly_cap: u32,
}

/// What admins other than the owner may move; the owner is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// `ADMIN_MAX_ADJUST`: the largest single adjustment or refund (default
    /// 1000.00).
    pub max_single: Money,
    /// `ADMIN_DAILY_BUDGET`: what one finance admin's adjustments (either
    /// sign) and refunds may add up to over 24 hours (default 5000.00).
    pub daily_budget: Money,
    /// `ADMIN_NOTIFY_ABOVE`: adjustments larger than this (either sign) by
    /// anyone but the owner are reported to the owner (default 500.00).
    pub notify_above: Money,
}

/// What every HTTP listener allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_REQUEST_TIMEOUT_SECS`: a request not answered in this long gets
    /// 408 (a slow body counts).
    pub request_timeout: std::time::Duration,
    /// `HTTP_BODY_LIMIT_BYTES`: larger bodies get 413 (Telegram updates and
    /// KIE callbacks are a few kilobytes).
    pub body_limit: usize,
    /// `HTTP_MAX_CONNECTIONS`: open connections per listener; more wait in
    /// the kernel's backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_timeout: std::time::Duration::from_secs(30),
            body_limit: 256 * 1024,
            max_connections: 1024,
        }
    }
}

/// Per-user flood control of the front bot's incoming updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodSettings {
    /// `FLOOD_RATE_PER_MIN`: updates a user's bucket regains per minute
    /// (0: flood control off).
    pub rate_per_min: u32,
    /// `FLOOD_BURST`: the bucket's size: updates a user may send at once.
    pub burst: u32,
    /// `PROMO_FAILURES_PER_HOUR`: refused promo codes a user may try per
    /// hour before further attempts are refused unread.
    pub promo_failures_per_hour: u32,
}

impl Default for FloodSettings {
    fn default() -> Self {
        FloodSettings {
            rate_per_min: 60,
            burst: 20,
            promo_failures_per_hour: 5,
        }
    }
}

/// KIE's file hosts, the default of `RESULT_HOSTS` (each with its
/// subdomains): results on `tempfile.aiquickdraw.com`/`file.aiquickdraw.com`,
/// uploads on `tempfile.redpandaai.co`, music on `*.kie.ai`. The same list as
/// `kiebot_tg::egress::DEFAULT_RESULT_HOSTS`.
pub const DEFAULT_RESULT_HOSTS: &str = "aiquickdraw.com,redpandaai.co,kie.ai";

/// Where result files may be downloaded from (see `kiebot_tg::egress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultEgress {
    /// `RESULT_HOSTS`: allowed hosts, lowercase; each also allows its
    /// subdomains (a leading `*.` is accepted and means the same).
    pub hosts: Vec<String>,
    /// `RESULT_ALLOW_HTTP`: plain `http` too (tests and the demo only).
    pub allow_http: bool,
    /// `RESULT_ALLOW_LOOPBACK`: loopback addresses too (tests and the demo
    /// only); private, link-local and metadata addresses stay forbidden.
    pub allow_loopback: bool,
}

/// KIE's account limits (kie-api.md "Limits and retention").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KieLimits {
    /// `KIE_CREATES_PER_WINDOW`: new tasks per window (KIE: 20).
    pub creates_per_window: u32,
    /// `KIE_CREATE_WINDOW_SECS`: the window (KIE: 10 s).
    pub create_window: std::time::Duration,
    /// `KIE_MAX_IN_FLIGHT`: tasks at KIE at once (0: no cap).
    pub max_in_flight: u32,
    /// `KIE_POLLS_PER_SECOND`: status requests per second per key (KIE: 10);
    /// the pipeline keeps to this many in any second.
    pub polls_per_second: u32,
}

impl Default for KieLimits {
    fn default() -> Self {
        KieLimits {
            creates_per_window: 20,
            create_window: std::time::Duration::from_secs(10),
            max_in_flight: 100,
            polls_per_second: 10,
        }
    }
}

/// The variables this contract reads, for `--help` texts and docs.
pub const VARIABLES: &[&str] = &[
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "BOT_MODE",
    "KIE_API_KEY",
    "KIE_API_URL",
    "KIE_UPLOAD_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "HTTP_ADDR",
    "OPS_ADDR",
    "HTTP_REQUEST_TIMEOUT_SECS",
    "HTTP_BODY_LIMIT_BYTES",
    "HTTP_MAX_CONNECTIONS",
    "FLOOD_RATE_PER_MIN",
    "FLOOD_BURST",
    "PROMO_FAILURES_PER_HOUR",
    "PUBLIC_URL",
    "ADMIN_IDS",
    "CATALOG_PATH",
    "WORKER_CONCURRENCY",
    "DRY_RUN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LOG_FORMAT",
    "USD_PER_CREDIT",
    "FX_RATE",
    "MARKUP",
    "MAX_ACTIVE_GENERATIONS",
    "STARS_RATE",
    "STARS_RECONCILE_SECS",
    "DASHBOARD_TOKEN",
    "QUEUE_NAMESPACE",
    "JOB_LEASE_SECS",
    "POLL_INITIAL_MS",
    "DELIVERY_RATE_PER_SECOND",
    "KIE_CREATES_PER_WINDOW",
    "KIE_CREATE_WINDOW_SECS",
    "KIE_MAX_IN_FLIGHT",
    "KIE_POLLS_PER_SECOND",
    "KIE_WEBHOOK_HMAC_KEY",
    "CATALOG_CHECK_HOURS",
    "REFERRAL_MIN_STARS",
    "REFERRAL_MIN_SPEND",
    "REFERRAL_MONTHLY_CAP",
    "ADMIN_MAX_ADJUST",
    "ADMIN_DAILY_BUDGET",
    "ADMIN_NOTIFY_ABOVE",
    "RESULT_HOSTS",
    "RESULT_ALLOW_HTTP",
    "RESULT_ALLOW_LOOPBACK",
];

impl Settings {
    /// Reads the process environment (and `KIEBOT_CONFIG`, if set).
    pub fn from_env() -> Result<Settings, ConfigError> {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(path) = std::env::var("KIEBOT_CONFIG") {
            vars.extend(read_file(&path)?);
        }
        for name in VARIABLES {
            if let Ok(v) = std::env::var(name) {
                vars.insert((*name).to_owned(), v);
            }
        }
        Self::from_map(&vars)
    }

    /// Parses settings from a name -> value map (empty values count as unset),
    /// section by section; the first bad value stops it, naming its variable.
    pub fn from_map(vars: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let v = Vars(vars);
        let (database_url, redis_url) = v.storage()?;
        let (telegram_token, telegram_api_url, bot_mode, public_url) = v.telegram()?;
        let (http_addr, ops_addr, http_limits) = v.http()?;
        let (kie_api_key, kie_api_url, kie_upload_url, kie_webhook_hmac_key, kie_limits) =
            v.kie()?;
        Ok(Settings {
            telegram_token,
            telegram_api_url,
            bot_mode,
            kie_api_key,
            kie_api_url,
            kie_upload_url,
            database_url,
            redis_url,
            http_addr,
            ops_addr,
            http_limits,
            flood: v.flood()?,
            public_url,
            admin_ids: v.admin_ids()?,
            catalog_path: v.get("CATALOG_PATH").map(PathBuf::from),
            worker_concurrency: v.int("WORKER_CONCURRENCY", 16, 1, 4096)?,
            dry_run: parse_flag(v.get("DRY_RUN"), "DRY_RUN")?,
            otel_endpoint: v.optional_url("OTEL_EXPORTER_OTLP_ENDPOINT")?,
            log_format: v.log_format()?,
            pricing: v.pricing()?,
            max_active_generations: v.int("MAX_ACTIVE_GENERATIONS", 5, 1, 1000)?,
            stars_rate: Money::from_minor(v.int("STARS_RATE", 150, 1, 1_000_000)?),
            dashboard_token: v.get("DASHBOARD_TOKEN").map(Secret::new),
            queue_namespace: v.queue_namespace()?,
            delivery_rate: v.int("DELIVERY_RATE_PER_SECOND", 25, 1, 100_000)?,
            stars_reconcile: match v.int::<u64>("STARS_RECONCILE_SECS", 60, 0, 86_400)? {
                0 => None,
                secs => Some(std::time::Duration::from_secs(secs)),
            },
            job_lease: std::time::Duration::from_secs(v.int("JOB_LEASE_SECS", 60, 2, 3600)?),
            poll_initial: std::time::Duration::from_millis(v.int(
                "POLL_INITIAL_MS",
                3000,
                0,
                60_000,
            )?),
            referral: v.referral()?,
            admin_limits: v.admin_limits()?,
            catalog_check_hours: v.int("CATALOG_CHECK_HOURS", 0, 0, 24 * 30)?,
            result_egress: v.result_egress()?,
            kie_limits,
            kie_webhook_hmac_key,
        })
    }

    /// The engine `DATABASE_URL` points at.
    pub fn database_kind(&self) -> DatabaseKind {
        database_kind(&self.database_url).unwrap_or(DatabaseKind::Sqlite)
    }

    /// Embedded or fleet, or an error when the storage settings do not form
    /// either (a shared queue with a local file, or a shared database without
    /// a shared queue).
    pub fn mode(&self) -> Result<Mode, ConfigError> {
        match (self.database_kind(), &self.redis_url) {
            (DatabaseKind::Sqlite, None) => Ok(Mode::Embedded),
            (DatabaseKind::Postgres, Some(_)) => Ok(Mode::Fleet),
            (DatabaseKind::Sqlite, Some(_)) => Err(ConfigError::new(
                "DATABASE_URL",
                "the fleet (REDIS_URL set) needs a postgres:// database",
            )),
            (DatabaseKind::Postgres, None) => Err(ConfigError::new(
                "REDIS_URL",
                "required with a postgres:// DATABASE_URL (fleet mode)",
            )),
        }
    }

    /// The bot token, or the error naming the variable.
    pub fn require_telegram_token(&self) -> Result<&Secret, ConfigError> {
        self.telegram_token.as_ref().ok_or_else(|| {
            ConfigError::new(
                "TELEGRAM_BOT_TOKEN",
                "required to talk to Telegram (or try the demo: `cargo run -p kiebot --features demo -- demo`)",
            )
        })
    }

    /// The KIE key, or the error naming the variable. Not needed in dry runs.
    pub fn require_kie_key(&self) -> Result<Option<&Secret>, ConfigError> {
        if self.dry_run {
            return Ok(None);
        }
        self.kie_api_key
            .as_ref()
            .map(Some)
            .ok_or_else(|| ConfigError::new("KIE_API_KEY", "required unless DRY_RUN=true"))
    }

    /// The owner: the first admin id.
    pub fn owner(&self) -> Option<UserId> {
        self.admin_ids.first().copied()
    }
}

/// The raw variables, read section by section (empty values count as unset).
struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// An integer within `min..=max`, `default` when unset.
    fn int<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        parse_in(self.get(name), name, default, min, max)
    }

    fn money(&self, name: &'static str, default: Money) -> Result<Money, ConfigError> {
        money_in(self.get(name), name, default)
    }

    /// An http(s) URL without its trailing slash.
    fn url(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let v = self.get(name).unwrap_or(default);
        if v.starts_with("http://") || v.starts_with("https://") {
            Ok(v.trim_end_matches('/').to_owned())
        } else {
            Err(ConfigError::new(
                name,
                format!("expected an http(s) URL, got {v:?}"),
            ))
        }
    }

    fn optional_url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            Some(_) => Ok(Some(self.url(name, "")?)),
            None => Ok(None),
        }
    }

    /// `DATABASE_URL`, `REDIS_URL`.
    fn storage(&self) -> Result<(ConnUrl, Option<ConnUrl>), ConfigError> {
        let database_url = ConnUrl::new(self.get("DATABASE_URL").unwrap_or("sqlite://kiebot.db"));
        database_kind(&database_url)?;
        let redis_url = self.get("REDIS_URL").map(ConnUrl::new);
        if let Some(r) = &redis_url
            && !(r.starts_with("redis://") || r.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "REDIS_URL",
                "expected a redis:// or rediss:// URL",
            ));
        }
        Ok((database_url, redis_url))
    }

    /// `TELEGRAM_BOT_TOKEN`, `TELEGRAM_API_URL`, `BOT_MODE`, `PUBLIC_URL`.
    fn telegram(&self) -> Result<(Option<Secret>, String, BotMode, Option<String>), ConfigError> {
        let token = self.get("TELEGRAM_BOT_TOKEN").map(Secret::new);
        if let Some(t) = &token {
            let ok = t.expose().split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
            });
            if !ok {
                return Err(ConfigError::new(
                    "TELEGRAM_BOT_TOKEN",
                    "expected <bot id>:<secret> as BotFather gives it",
                ));
            }
        }
        let bot_mode = match self.get("BOT_MODE").unwrap_or("polling") {
            "polling" => BotMode::Polling,
            "webhook" => BotMode::Webhook,
            other => {
                return Err(ConfigError::new(
                    "BOT_MODE",
                    format!("expected polling or webhook, got {other:?}"),
                ));
            }
        };
        let public_url = self.optional_url("PUBLIC_URL")?;
        if bot_mode == BotMode::Webhook && public_url.is_none() {
            return Err(ConfigError::new(
                "PUBLIC_URL",
                "required when BOT_MODE=webhook",
            ));
        }
        let api_url = self.url("TELEGRAM_API_URL", "https://api.telegram.org")?;
        Ok((token, api_url, bot_mode, public_url))
    }

    /// `HTTP_ADDR`, `OPS_ADDR` and the public listener's limits.
    fn http(&self) -> Result<(SocketAddr, SocketAddr, HttpLimits), ConfigError> {
        let addr = |name: &'static str, default: &str| {
            self.get(name)
                .unwrap_or(default)
                .parse()
                .map_err(|_| ConfigError::new(name, format!("expected host:port, like {default}")))
        };
        let limits = HttpLimits {
            request_timeout: std::time::Duration::from_secs(self.int(
                "HTTP_REQUEST_TIMEOUT_SECS",
                30,
                1,
                600,
            )?),
            body_limit: self.int("HTTP_BODY_LIMIT_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024)?,
            max_connections: self.int("HTTP_MAX_CONNECTIONS", 1024, 1, 100_000)?,
        };
        Ok((
            addr("HTTP_ADDR", "127.0.0.1:8080")?,
            addr("OPS_ADDR", "127.0.0.1:9090")?,
            limits,
        ))
    }

    /// KIE's key, addresses, callback signing key and account limits.
    #[allow(clippy::type_complexity)]
    fn kie(
        &self,
    ) -> Result<(Option<Secret>, String, String, Option<Secret>, KieLimits), ConfigError> {
        let limits = KieLimits {
            creates_per_window: self.int("KIE_CREATES_PER_WINDOW", 20, 1, 1_000_000)?,
            create_window: std::time::Duration::from_secs(self.int(
                "KIE_CREATE_WINDOW_SECS",
                10,
                1,
                3600,
            )?),
            max_in_flight: self.int("KIE_MAX_IN_FLIGHT", 100, 0, 1_000_000)?,
            polls_per_second: self.int("KIE_POLLS_PER_SECOND", 10, 2, 1_000_000)?,
        };
        Ok((
            self.get("KIE_API_KEY").map(Secret::new),
            self.url("KIE_API_URL", "https://api.kie.ai")?,
            self.url("KIE_UPLOAD_URL", "https://kieai.redpandaai.co")?,
            self.get("KIE_WEBHOOK_HMAC_KEY").map(Secret::new),
            limits,
        ))
    }

    fn flood(&self) -> Result<FloodSettings, ConfigError> {
        Ok(FloodSettings {
            rate_per_min: self.int("FLOOD_RATE_PER_MIN", 60, 0, 60_000)?,
            burst: self.int("FLOOD_BURST", 20, 1, 10_000)?,
            promo_failures_per_hour: self.int("PROMO_FAILURES_PER_HOUR", 5, 1, 1000)?,
        })
    }

    fn admin_ids(&self) -> Result<Vec<UserId>, ConfigError> {
        let Some(list) = self.get("ADMIN_IDS") else {
            return Ok(vec![]);
        };
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .map(UserId)
                    .ok_or_else(|| {
                        ConfigError::new("ADMIN_IDS", format!("{s:?} is not a Telegram user id"))
                    })
            })
            .collect()
    }

    fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.get("LOG_FORMAT").unwrap_or("pretty") {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError::new(
                "LOG_FORMAT",
                format!("expected pretty or json, got {other:?}"),
            )),
        }
    }

    /// `USD_PER_CREDIT`, `FX_RATE`, `MARKUP`.
    fn pricing(&self) -> Result<Pricing, ConfigError> {
        let defaults = Pricing::default();
        let rate = |name: &'static str, default: Rate| -> Result<Rate, ConfigError> {
            match self.get(name) {
                None => Ok(default),
                Some(v) => match Rate::from_str(v) {
                    Ok(r) if r.micros() > 0 => Ok(r),
                    _ => Err(ConfigError::new(
                        name,
                        format!("expected a positive decimal, got {v:?}"),
                    )),
                },
            }
        };
        let pricing = Pricing {
            usd_per_credit: rate("USD_PER_CREDIT", defaults.usd_per_credit)?,
            fx: rate("FX_RATE", defaults.fx)?,
            markup: rate("MARKUP", defaults.markup)?,
        };
        if pricing.markup.micros() < 1_000_000 {
            return Err(ConfigError::new(
                "MARKUP",
                "must be at least 1 (selling below KIE's cost)",
            ));
        }
        Ok(pricing)
    }

    fn queue_namespace(&self) -> Result<String, ConfigError> {
        let ns = self.get("QUEUE_NAMESPACE").unwrap_or("").to_owned();
        if !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                "QUEUE_NAMESPACE",
                "use letters, digits, '-' and '_' only",
            ));
        }
        Ok(ns)
    }

    fn referral(&self) -> Result<ReferralSettings, ConfigError> {
        Ok(ReferralSettings {
            min_stars: self.int("REFERRAL_MIN_STARS", 100, 1, 1_000_000)?,
            min_spend: Some(self.money("REFERRAL_MIN_SPEND", Money::ZERO)?)
                .filter(|m| m.is_positive()),
            monthly_cap: self.int("REFERRAL_MONTHLY_CAP", 10, 0, 1_000_000)?,
        })
    }

    fn admin_limits(&self) -> Result<AdminLimits, ConfigError> {
        Ok(AdminLimits {
            max_single: self.money("ADMIN_MAX_ADJUST", Money::from_minor(100_000))?,
            daily_budget: self.money("ADMIN_DAILY_BUDGET", Money::from_minor(500_000))?,
            notify_above: self.money("ADMIN_NOTIFY_ABOVE", Money::from_minor(50_000))?,
        })
    }

    fn result_egress(&self) -> Result<ResultEgress, ConfigError> {
        Ok(ResultEgress {
            hosts: parse_hosts(self.get("RESULT_HOSTS").unwrap_or(DEFAULT_RESULT_HOSTS))?,
            allow_http: parse_flag(self.get("RESULT_ALLOW_HTTP"), "RESULT_ALLOW_HTTP")?,
            allow_loopback: parse_flag(self.get("RESULT_ALLOW_LOOPBACK"), "RESULT_ALLOW_LOOPBACK")?,
        })
    }
}

fn database_kind(url: &str) -> Result<DatabaseKind, ConfigError> {
    if url.starts_with("sqlite:") {
        Ok(DatabaseKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseKind::Postgres)
    } else {
        Err(ConfigError::new(
            "DATABASE_URL",
            "expected a sqlite:// or postgres:// URL",
        ))
    }
}

/// An amount of money (`12`, `12.5`, `12.50`), zero or more.
fn money_in(v: Option<&str>, name: &'static str, default: Money) -> Result<Money, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    match v.trim().parse::<Money>() {
        Ok(m) if m >= Money::ZERO => Ok(m),
        _ => Err(ConfigError::new(
            name,
            format!("expected an amount of money of zero or more, like 100 or 99.50, got {v:?}"),
        )),
    }
}

fn parse_in<T>(
    v: Option<&str>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(v) = v else { return Ok(default) };
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError::new(
            name,
            format!("expected a whole number from {min} to {max}, got {v:?}"),
        )),
    }
}

fn read_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("KIEBOT_CONFIG", format!("cannot read {path}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::new("KIEBOT_CONFIG", format!("{path}: {}", e.message()))
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let Some(name) = VARIABLES.iter().find(|n| **n == k) else {
            return Err(ConfigError::new(
                "KIEBOT_CONFIG",
                format!("{path}: unknown setting {k}"),
            ));
        };
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.to_string().trim_matches('"').to_owned())
                .collect::<Vec<_>>()
                .join(","),
            _ => {
                return Err(ConfigError::new(
                    "KIEBOT_CONFIG",
                    format!("{path}: {k} must be a plain value"),
                ));
            }
        };
        out.insert((*name).to_owned(), s);
    }
    Ok(out)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`); absent is false.
fn parse_flag(value: Option<&str>, var: &'static str) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(ConfigError::new(
            var,
            format!("expected true or false, got {other:?}"),
        )),
    }
}

/// `RESULT_HOSTS`: a comma list of host names or IP addresses, no schemes,
/// ports or paths.
fn parse_hosts(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut hosts = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let host = raw.strip_prefix("*.").unwrap_or(raw).to_ascii_lowercase();
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !name_ok && host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::new(
                "RESULT_HOSTS",
                format!("{raw:?} is not a host name (no scheme, port or path)"),
            ));
        }
        hosts.push(host);
    }
    if hosts.is_empty() {
        return Err(ConfigError::new(
            "RESULT_HOSTS",
            "needs at least one host (KIE's file hosts by default)",
        ));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_mean_the_embedded_mode() {
        let s = Settings::from_map(&map(&[])).unwrap();
        assert_eq!(s.mode().unwrap(), Mode::Embedded);
        assert_eq!(s.database_url.expose(), "sqlite://kiebot.db");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.ops_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(s.http_limits, HttpLimits::default());
        assert_eq!(s.flood, FloodSettings::default());
        assert_eq!(s.pricing, Pricing::default());
        assert!(!s.dry_run);
    }

    #[test]
    fn postgres_and_redis_mean_the_fleet() {
        let s = Settings::from_map(&map(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]))
        .unwrap();
        assert_eq!(s.mode().unwrap(), Mode::Fleet);
        let half = Settings::from_map(&map(&[("DATABASE_URL", "postgres://u@h/db")])).unwrap();
        assert_eq!(half.mode().unwrap_err().var, "REDIS_URL");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "http://x"),
            ("BOT_MODE", "push"),
            ("HTTP_ADDR", "localhost"),
            ("ADMIN_IDS", "12,abc"),
            ("WORKER_CONCURRENCY", "0"),
            ("DRY_RUN", "maybe"),
            ("LOG_FORMAT", "xml"),
            ("FX_RATE", "-3"),
            ("MARKUP", "0.5"),
            ("TELEGRAM_API_URL", "ftp://x"),
            ("TELEGRAM_BOT_TOKEN", "not-a-token"),
            ("MAX_ACTIVE_GENERATIONS", "many"),
            ("QUEUE_NAMESPACE", "a b"),
            ("JOB_LEASE_SECS", "1"),
            ("POLL_INITIAL_MS", "soon"),
            ("DELIVERY_RATE_PER_SECOND", "0"),
            ("OPS_ADDR", "loopback"),
            ("HTTP_REQUEST_TIMEOUT_SECS", "0"),
            ("HTTP_BODY_LIMIT_BYTES", "10"),
            ("HTTP_MAX_CONNECTIONS", "none"),
            ("FLOOD_RATE_PER_MIN", "-1"),
            ("FLOOD_BURST", "0"),
            ("PROMO_FAILURES_PER_HOUR", "0"),
            ("RESULT_HOSTS", "https://tempfile.aiquickdraw.com"),
            ("RESULT_HOSTS", "a.com:443"),
            ("RESULT_HOSTS", " , "),
            ("RESULT_ALLOW_HTTP", "sometimes"),
            ("RESULT_ALLOW_LOOPBACK", "2"),
        ];
        for (var, value) in cases {
            let err = Settings::from_map(&map(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
            assert!(err.to_string().starts_with(var));
        }
        let err = Settings::from_map(&map(&[("BOT_MODE", "webhook")])).unwrap_err();
        assert_eq!(err.var, "PUBLIC_URL");
    }

    #[test]
    fn result_hosts_default_to_kie_and_parse() {
        let s = Settings::from_map(&map(&[])).unwrap();
        assert_eq!(
            s.result_egress.hosts,
            ["aiquickdraw.com", "redpandaai.co", "kie.ai"]
        );
        assert!(!s.result_egress.allow_http && !s.result_egress.allow_loopback);
        let s = Settings::from_map(&map(&[
            ("RESULT_HOSTS", "*.Example.com, 127.0.0.1"),
            ("RESULT_ALLOW_HTTP", "true"),
            ("RESULT_ALLOW_LOOPBACK", "yes"),
        ]))
        .unwrap();
        assert_eq!(s.result_egress.hosts, ["example.com", "127.0.0.1"]);
        assert!(s.result_egress.allow_http && s.result_egress.allow_loopback);
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_map(&map(&[
            ("TELEGRAM_BOT_TOKEN", "123:SECRETVALUE"),
            ("KIE_API_KEY", "kie-secret-key"),
        ]))
        .unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains("SECRETVALUE"));
        assert!(!dump.contains("kie-secret-key"));
        assert_eq!(
            s.require_telegram_token().unwrap().expose(),
            "123:SECRETVALUE"
        );
    }

    /// Every secret the settings can hold, set at once: none of them may
    /// appear in the settings' `Debug` (what a `?settings` log field prints).
    #[test]
    fn debug_shows_no_secret() {
        let s = Settings::from_map(&map(&[
            ("TELEGRAM_BOT_TOKEN", "123456:BOT-TOKEN-SECRET"),
            ("KIE_API_KEY", "kie-key-secret"),
            ("KIE_WEBHOOK_HMAC_KEY", "hmac-key-secret"),
            ("DASHBOARD_TOKEN", "dashboard-token-secret"),
            (
                "DATABASE_URL",
                "postgres://kiebot:db-pass-secret@db.internal:5432/kiebot",
            ),
            (
                "REDIS_URL",
                "redis://:redis-pass-secret@redis.internal:6379/0",
            ),
        ]))
        .unwrap();
        let dumps = [format!("{s:?}"), format!("{s:#?}")];
        for dump in &dumps {
            for secret in [
                "BOT-TOKEN-SECRET",
                "kie-key-secret",
                "hmac-key-secret",
                "dashboard-token-secret",
                "db-pass-secret",
                "redis-pass-secret",
            ] {
                assert!(!dump.contains(secret), "{secret} printed in {dump}");
            }
        }
        // What is not secret still shows, so the dump stays useful.
        assert!(dumps[0].contains("postgres://kiebot:***@db.internal:5432/kiebot"));
        assert!(dumps[0].contains("redis://:***@redis.internal:6379/0"));
        // The connecting code still gets the whole URL.
        assert!(s.database_url.expose().contains("db-pass-secret"));
    }

    #[test]
    fn connection_urls_redact_every_password_shape() {
        for (url, shown) in [
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            ("redis://secret@h:6379", "redis://***@h:6379"),
            ("redis://h:6379", "redis://h:6379"),
            ("sqlite://kiebot.db", "sqlite://kiebot.db"),
            (
                "postgres://u:p%40x@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
        ] {
            assert_eq!(ConnUrl::new(url).redacted(), shown, "{url}");
            assert_eq!(format!("{}", ConnUrl::new(url)), shown);
        }
    }

    #[test]
    fn referral_rules_and_admin_limits_parse_with_defaults_and_clear_errors() {
        let d = Settings::from_map(&map(&[])).unwrap();
        assert_eq!(
            d.referral,
            ReferralSettings {
                min_stars: 100,
                min_spend: None,
                monthly_cap: 10
            }
        );
        assert_eq!(d.admin_limits.max_single, Money::from_minor(100_000));
        assert_eq!(d.admin_limits.daily_budget, Money::from_minor(500_000));
        assert_eq!(d.admin_limits.notify_above, Money::from_minor(50_000));
        let s = Settings::from_map(&map(&[
            ("REFERRAL_MIN_STARS", "250"),
            ("REFERRAL_MIN_SPEND", "75.50"),
            ("REFERRAL_MONTHLY_CAP", "0"),
            ("ADMIN_MAX_ADJUST", "10"),
            ("ADMIN_DAILY_BUDGET", "20.5"),
            ("ADMIN_NOTIFY_ABOVE", "0"),
        ]))
        .unwrap();
        assert_eq!(s.referral.min_stars, 250);
        assert_eq!(s.referral.min_spend, Some(Money::from_minor(7_550)));
        assert_eq!(s.referral.monthly_cap, 0);
        assert_eq!(s.admin_limits.max_single, Money::from_minor(1_000));
        assert_eq!(s.admin_limits.daily_budget, Money::from_minor(2_050));
        assert_eq!(s.admin_limits.notify_above, Money::ZERO);
        let off = Settings::from_map(&map(&[("REFERRAL_MIN_SPEND", "0")])).unwrap();
        assert_eq!(off.referral.min_spend, None);
        for (var, bad) in [
            ("REFERRAL_MIN_STARS", "0"),
            ("REFERRAL_MIN_SPEND", "-1"),
            ("REFERRAL_MONTHLY_CAP", "lots"),
            ("ADMIN_MAX_ADJUST", "ten"),
            ("ADMIN_DAILY_BUDGET", "-5"),
            ("ADMIN_NOTIFY_ABOVE", "1.234"),
        ] {
            let e = Settings::from_map(&map(&[(var, bad)])).unwrap_err();
            assert_eq!(e.var, var, "{bad}");
        }
    }

    #[test]
    fn admin_ids_and_pricing_parse() {
        let s = Settings::from_map(&map(&[
            ("ADMIN_IDS", "42, 7"),
            ("FX_RATE", "90.5"),
            ("MARKUP", "1.5"),
        ]))
        .unwrap();
        assert_eq!(s.admin_ids, vec![UserId(42), UserId(7)]);
        assert_eq!(s.owner(), Some(UserId(42)));
        assert_eq!(s.pricing.fx.micros(), 90_500_000);
        assert_eq!(s.pricing.markup.micros(), 1_500_000);
    }

    #[test]
    fn a_toml_file_mirrors_the_variables() {
        let dir = std::env::temp_dir().join(format!("kiebot-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kiebot.toml");
        std::fs::write(
            &path,
            "DATABASE_URL = \"sqlite://x.db\"\nWORKER_CONCURRENCY = 4\nADMIN_IDS = [1, 2]\n",
        )
        .unwrap();
        let vars = read_file(path.to_str().unwrap()).unwrap();
        let s = Settings::from_map(&vars).unwrap();
        assert_eq!(s.database_url.expose(), "sqlite://x.db");
        assert_eq!(s.worker_concurrency, 4);
        assert_eq!(s.admin_ids, vec![UserId(1), UserId(2)]);
        std::fs::write(&path, "NOPE = 1\n").unwrap();
        assert_eq!(
            read_file(path.to_str().unwrap()).unwrap_err().var,
            "KIEBOT_CONFIG"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stars_reconcile_defaults_to_a_minute_zero_is_off_and_nonsense_is_refused() {
        let s = Settings::from_map(&map(&[])).unwrap();
        assert_eq!(s.stars_reconcile, Some(std::time::Duration::from_secs(60)));
        let s = Settings::from_map(&map(&[("STARS_RECONCILE_SECS", "0")])).unwrap();
        assert_eq!(s.stars_reconcile, None);
        for bad in ["-1", "soon", "100000"] {
            let e = Settings::from_map(&map(&[("STARS_RECONCILE_SECS", bad)])).unwrap_err();
            assert_eq!(e.var, "STARS_RECONCILE_SECS");
        }
    }

    #[test]
    fn stars_rate_defaults_to_150_minor_units_and_rejects_nonsense() {
        let s = Settings::from_map(&map(&[])).unwrap();
        assert_eq!(s.stars_rate, Money::from_minor(150));
        let s = Settings::from_map(&map(&[("STARS_RATE", "200")])).unwrap();
        assert_eq!(s.stars_rate, Money::from_minor(200));
        for bad in ["0", "-5", "1.5", "lots"] {
            let e = Settings::from_map(&map(&[("STARS_RATE", bad)])).unwrap_err();
            assert_eq!(e.var, "STARS_RATE");
        }
    }
}
