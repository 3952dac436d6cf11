//! Bounded retry with exponential backoff and jitter, for retryable errors
//! only.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::KieError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub min_delay: Duration,
    /// Upper bound of any one delay.
    pub max_delay: Duration,
    /// Attempts in total, the first included (1 = no retry). Keep it small for
    /// createTask: every attempt after a lost reply may create a billed task.
    pub max_attempts: usize,
    /// Randomise delays so that many workers do not retry in step.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 4 attempts, 1 s doubling up to 15 s, with jitter: rides out a 429 burst
    /// (KIE allows about 20 creates per 10 s) without holding a worker long.
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            max_attempts: 4,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1));
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }
}

/// Runs `op` until it succeeds, fails with a final error, or the policy's
/// attempts are spent; returns the last result. Each retry is logged with its
/// attempt number, the delay and the error.
///
/// ```no_run
/// # async fn f(client: kiebot_kie::KieClient, body: serde_json::Value) -> Result<(), kiebot_kie::KieError> {
/// use kiebot_kie::{retrying, RetryPolicy};
/// let task_id = retrying(RetryPolicy::default(), || client.create_task(kiebot_domain::Family::Market, &body, None)).await?;
/// # Ok(()) }
/// ```
pub async fn retrying<T, F, Fut>(policy: RetryPolicy, op: F) -> Result<T, KieError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, KieError>>,
{
    retrying_if(policy, |_| true, op).await
}

/// Like [`retrying`], but retries a retryable error only when `also` agrees.
/// createTask uses it to keep ambiguous failures (a timeout after which the
/// task may exist) out of in-call retries.
pub async fn retrying_if<T, F, Fut, P>(policy: RetryPolicy, also: P, op: F) -> Result<T, KieError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, KieError>>,
    P: Fn(&KieError) -> bool,
{
    let failed_attempts = AtomicUsize::new(0);
    op.retry(policy.backoff())
        .when(|e: &KieError| e.is_retryable() && also(e))
        .notify(|err: &KieError, delay: Duration| {
            let attempt = failed_attempts.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                attempt,
                max_attempts = policy.max_attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                outcome = err.outcome(),
                error = %err,
                "KIE call failed, retrying"
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn quick(max_attempts: usize) -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_attempts,
            jitter: true,
        }
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_until_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let result: Result<(), KieError> = retrying(quick(3), || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(KieError::RateLimited("slow down".into()))
        })
        .await;
        assert!(matches!(result, Err(KieError::RateLimited(_))));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_retryable_error_the_caller_excludes_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), KieError> = retrying_if(
            quick(5),
            |e| !matches!(e, KieError::Timeout),
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(KieError::Timeout)
            },
        )
        .await;
        assert!(matches!(result, Err(KieError::Timeout)));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn final_errors_are_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), KieError> = retrying(quick(5), || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(KieError::Validation("prompt".into()))
        })
        .await;
        assert!(matches!(result, Err(KieError::Validation(_))));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_success_after_failures_is_returned() {
        let calls = AtomicU32::new(0);
        let result = retrying(quick(5), || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(KieError::Server {
                    code: 500,
                    msg: "oops".into(),
                }),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
    }
}
