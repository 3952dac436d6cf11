//! Write transactions with a bounded retry.

use std::time::Duration;

/// How many times a write transaction is attempted before a busy database is
/// reported as an error.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// The pause before attempt `attempt + 1`: 25, 50, 100, 200 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25 << attempt.saturating_sub(1).min(4))
}

/// Pins a transaction body's error type to [`StoreError`](crate::StoreError),
/// so that `?` and early `return`s inside it need no annotations.
pub(crate) fn body<T, F>(f: F) -> F
where
    F: std::future::Future<Output = crate::Result<T>>,
{
    f
}

/// Runs `$body` in a write transaction of `$store`, with `$conn` bound to the
/// transaction's connection: commits when it returns `Ok`, rolls back when it
/// returns `Err` (a `return` inside the body returns from the body), and
/// starts over (at most [`MAX_ATTEMPTS`] times) when the database was busy. `$body` may run more than once, so it must only borrow
/// what it uses.
///
/// A macro rather than a function taking a closure: the body borrows the
/// caller's arguments, which a boxed, higher-ranked closure future cannot.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &$crate::Store = $store;
        let mut attempt: u32 = 1;
        loop {
            let outcome = async {
                let mut tx = store.begin_write().await?;
                // Its own async block, so that a `return` in the body ends
                // the body, not this attempt (which would skip the commit).
                let value = $crate::tx::body(async {
                    let $conn: &mut ::sqlx::AnyConnection = &mut *tx;
                    $body
                })
                .await?;
                tx.commit().await?;
                Ok::<_, $crate::StoreError>(value)
            }
            .await;
            match outcome {
                Err(e) if attempt < $crate::tx::MAX_ATTEMPTS && e.is_retryable(store.engine()) => {
                    ::tracing::debug!(attempt, error = %e, "database busy; retrying the transaction");
                    ::tokio::time::sleep($crate::tx::backoff(attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

/// Runs a single-statement PostgreSQL call again (at most [`MAX_ATTEMPTS`]
/// times, with [`backoff`]) while the server reports a deadlock or
/// serialization failure: the statement is its own transaction, so a retry
/// is a transaction's retry. `call` makes a fresh attempt each time.
pub(crate) async fn retrying_pg<T, F, Fut>(what: &'static str, mut call: F) -> crate::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < MAX_ATTEMPTS && e.is_retryable(crate::Engine::Postgres) => {
                tracing::debug!(attempt, error = %e, what, "database busy; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
