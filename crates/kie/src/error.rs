//! Errors of KIE calls and their classes.
//!
//! Two questions matter to a caller: can trying again help
//! ([`KieError::is_retryable`]), and what should be counted or shown
//! ([`KieError::code`], [`KieError::outcome`]). The variants follow KIE's
//! documented codes; everything KIE did not document is either a server error
//! (5xx, retryable) or [`KieError::Rejected`] (final).

/// A failed KIE call.
///
/// Messages (`msg`) are KIE's own text; they may name a request field but never
/// hold the API key. Display output is safe to log.
#[derive(Debug, thiserror::Error)]
pub enum KieError {
    /// KIE could not be reached or the connection broke (retryable).
    #[error("could not reach KIE: {0}")]
    Network(#[source] reqwest::Error),
    /// No complete reply within the configured timeout (retryable). For
    /// createTask the task may exist anyway: the reply, not the request, may
    /// have been lost.
    #[error("KIE did not answer in time")]
    Timeout,
    /// 429: too many requests for this key (retryable with backoff).
    #[error("KIE rate limit: {0}")]
    RateLimited(String),
    /// 455: KIE is down for maintenance (retryable later).
    #[error("KIE unavailable (maintenance): {0}")]
    Unavailable(String),
    /// 500 and other 5xx codes KIE does not give a meaning to (retryable).
    #[error("KIE server error {code}: {msg}")]
    Server {
        /// The KIE or HTTP code.
        code: i64,
        /// KIE's message or the HTTP reason.
        msg: String,
    },
    /// 401: the key is missing or wrong (final; the operator must act).
    #[error("KIE rejected the API key")]
    Unauthorized,
    /// 402: the KIE account is out of credits (final for this task; the
    /// operator must top up).
    #[error("KIE account is out of credits: {0}")]
    InsufficientCredits(String),
    /// 433: the sub-key's usage limit set by the account owner is reached
    /// (final for this task; the operator must act, like 402).
    #[error("KIE key usage limit reached: {0}")]
    KeyLimitReached(String),
    /// 404: the task or endpoint does not exist (final).
    #[error("KIE: not found: {0}")]
    NotFound(String),
    /// 422: the input failed KIE's validation; the message names the field
    /// (final).
    #[error("KIE rejected the input: {0}")]
    Validation(String),
    /// 501: the generation failed (final).
    #[error("KIE generation failed: {0}")]
    GenerationFailed(String),
    /// 505: the feature is disabled (final).
    #[error("KIE feature disabled: {0}")]
    FeatureDisabled(String),
    /// Any other non-success code below 500 (final).
    #[error("KIE rejected the request with code {code}: {msg}")]
    Rejected {
        /// The KIE or HTTP code.
        code: i64,
        /// KIE's message or the HTTP reason.
        msg: String,
    },
    /// A reply that is not what KIE documents: an HTML page, truncated JSON,
    /// a missing task id, an unknown state, a `resultJson` that is not JSON.
    /// Final: asking again rarely fixes a shape, and after a 2xx on createTask
    /// the task may exist.
    #[error("unexpected reply from KIE: {0}")]
    BadResponse(String),
    /// The HTTP client could not be built (final; a start-up problem).
    #[error("could not set up the KIE client: {0}")]
    Setup(String),
}

impl KieError {
    /// Builds the error for a non-success KIE `code` (or HTTP status).
    pub fn from_code(code: i64, msg: impl Into<String>) -> KieError {
        let msg = msg.into();
        match code {
            401 => KieError::Unauthorized,
            402 => KieError::InsufficientCredits(msg),
            433 => KieError::KeyLimitReached(msg),
            404 => KieError::NotFound(msg),
            422 => KieError::Validation(msg),
            429 => KieError::RateLimited(msg),
            455 => KieError::Unavailable(msg),
            501 => KieError::GenerationFailed(msg),
            505 => KieError::FeatureDisabled(msg),
            // A proxy's "request timeout" is a lost exchange, like ours.
            408 => KieError::Timeout,
            500..=599 => KieError::Server { code, msg },
            _ => KieError::Rejected { code, msg },
        }
    }

    /// Whether trying the same call again can succeed: network failures,
    /// timeouts, 429, 455 and 5xx other than 501 and 505.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KieError::Network(_)
                | KieError::Timeout
                | KieError::RateLimited(_)
                | KieError::Unavailable(_)
                | KieError::Server { .. }
        )
    }

    /// KIE's code for this error, where KIE gave one (or the HTTP status it
    /// stands for). `None` for network failures, timeouts and bad replies.
    pub fn code(&self) -> Option<i64> {
        match self {
            KieError::Network(_)
            | KieError::Timeout
            | KieError::BadResponse(_)
            | KieError::Setup(_) => None,
            KieError::RateLimited(_) => Some(429),
            KieError::Unavailable(_) => Some(455),
            KieError::Server { code, .. } | KieError::Rejected { code, .. } => Some(*code),
            KieError::Unauthorized => Some(401),
            KieError::InsufficientCredits(_) => Some(402),
            KieError::KeyLimitReached(_) => Some(433),
            KieError::NotFound(_) => Some(404),
            KieError::Validation(_) => Some(422),
            KieError::GenerationFailed(_) => Some(501),
            KieError::FeatureDisabled(_) => Some(505),
        }
    }

    /// Whether the operator must act before any task can succeed (the key is
    /// wrong, the account has no credits, the sub-key is over its limit).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            KieError::Unauthorized
                | KieError::InsufficientCredits(_)
                | KieError::KeyLimitReached(_)
        )
    }

    /// Whether KIE refused the request for its rate: proof that no task was
    /// created.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, KieError::RateLimited(_))
    }

    /// A short, stable label for metrics and log fields (`outcome`).
    pub fn outcome(&self) -> &'static str {
        match self {
            KieError::Network(_) => "network",
            KieError::Timeout => "timeout",
            KieError::RateLimited(_) => "rate_limited",
            KieError::Unavailable(_) => "unavailable",
            KieError::Server { .. } => "server_error",
            KieError::Unauthorized => "unauthorized",
            KieError::InsufficientCredits(_) => "insufficient_credits",
            KieError::KeyLimitReached(_) => "key_limit",
            KieError::NotFound(_) => "not_found",
            KieError::Validation(_) => "validation",
            KieError::GenerationFailed(_) => "generation_failed",
            KieError::FeatureDisabled(_) => "feature_disabled",
            KieError::Rejected { .. } => "rejected",
            KieError::BadResponse(_) => "bad_response",
            KieError::Setup(_) => "setup",
        }
    }

    /// Classifies a transport error from the HTTP client.
    pub(crate) fn from_transport(err: reqwest::Error) -> KieError {
        if err.is_timeout() {
            KieError::Timeout
        } else {
            // reqwest's messages never hold headers, so never the key. The URL
            // is dropped too: the span already names the endpoint and task.
            KieError::Network(err.without_url())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_are_classified_as_kie_describes_them() {
        for code in [429, 455, 500, 502, 503] {
            assert!(KieError::from_code(code, "x").is_retryable(), "{code}");
        }
        for code in [400, 401, 402, 404, 422, 433, 501, 505] {
            assert!(!KieError::from_code(code, "x").is_retryable(), "{code}");
        }
        for code in [401, 402, 404, 422, 429, 433, 455, 500, 501, 505] {
            assert_eq!(KieError::from_code(code, "x").code(), Some(code));
        }
    }

    #[test]
    fn bad_responses_are_final() {
        assert!(!KieError::BadResponse("html".into()).is_retryable());
        assert_eq!(KieError::BadResponse("html".into()).code(), None);
    }
}
