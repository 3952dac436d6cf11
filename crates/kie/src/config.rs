//! Client configuration and the API key.

use std::fmt;
use std::time::Duration;

use url::Url;

/// KIE's API host.
pub const DEFAULT_API_BASE: &str = "https://api.kie.ai";
/// KIE's file upload host (separate from the API host).
pub const DEFAULT_UPLOAD_BASE: &str = "https://kieai.redpandaai.co";

/// The KIE API key.
///
/// Debug and Display print `[redacted]`; the only way to the text is
/// [`ApiKey::expose`], which the client calls once to build its (sensitive)
/// header. An own newtype rather than `secrecy`: zeroizing on drop would buy
/// nothing here, because the HTTP client keeps a copy of the header for as
/// long as the process runs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself. Call it only to put the key into a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where KIE is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct KieConfig {
    /// API host, `https://api.kie.ai` in production. A path prefix is kept.
    pub api_base: Url,
    /// Upload host, `https://kieai.redpandaai.co` in production.
    pub upload_base: Url,
    /// Bearer key for both hosts.
    pub api_key: ApiKey,
    /// Whole-exchange limit for API calls (connect, send, read the reply).
    pub timeout: Duration,
    /// Limit for establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Whole-exchange limit for uploads, which carry user files of up to
    /// hundreds of megabytes and so need far longer than API calls.
    pub upload_timeout: Duration,
}

impl KieConfig {
    /// Production hosts with default timeouts (30 s per call, 10 s to
    /// connect, 5 min per upload).
    pub fn new(api_key: ApiKey) -> Self {
        KieConfig {
            api_base: Url::parse(DEFAULT_API_BASE).expect("constant URL parses"),
            upload_base: Url::parse(DEFAULT_UPLOAD_BASE).expect("constant URL parses"),
            api_key,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            upload_timeout: Duration::from_secs(300),
        }
    }

    /// Same hosts for API and uploads (a fake serving both), default timeouts.
    pub fn with_base(base: Url, api_key: ApiKey) -> Self {
        KieConfig {
            api_base: base.clone(),
            upload_base: base,
            ..KieConfig::new(api_key)
        }
    }
}
