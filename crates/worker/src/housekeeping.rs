//! Housekeeping: the bookkeeping tables that only grow are pruned, in
//! bounded steps, about once an hour by one process of the fleet.
//!
//! - processed update ids older than a week (Telegram redelivers for a day
//!   at most; the week is margin for a long outage);
//! - dialogues past their expiry (a wizard left half-filled);
//! - refused promo attempts older than a day (the limit looks one hour back).
//!
//! The reconciler asks once a minute; the turn is kept in the database
//! (`settings().take_turn`), so of many worker processes one prunes per
//! hour. Each turn deletes at most [`STEPS`] × [`STEP`] rows per table, one
//! bounded statement at a time, so SQLite's single writer and PostgreSQL's
//! locks are never held long. A turn that found more than it could delete
//! brings the next turn forward to a minute later, so a backlog drains in
//! bounded steps rather than all at once.

use std::time::Duration;

use kiebot_store::Store;
use tracing::{info, warn};

use crate::context::now_ms;

/// The settings key of the next turn.
pub const TURN_KEY: &str = "housekeeping_next_at";

/// How often a turn comes.
pub const EVERY: Duration = Duration::from_secs(60 * 60);

/// How soon the next turn comes when this one left rows behind.
pub const AGAIN_SOON: Duration = Duration::from_secs(60);

/// How long processed update ids are kept.
pub const UPDATES_KEPT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long refused promo attempts are kept.
pub const PROMO_FAILURES_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// Rows one statement deletes at most.
pub const STEP: u32 = 2_000;

/// Statements per table per turn at most.
pub const STEPS: u32 = 10;

/// What one turn deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Processed update ids.
    pub updates: u64,
    /// Expired dialogues.
    pub dialogues: u64,
    /// Refused promo attempts.
    pub promo_failures: u64,
    /// A table had more than the turn could delete.
    pub more_left: bool,
}

/// Prunes if a turn is due and this process takes it. Called from the
/// reconciler's tick once a minute; errors are logged (the next turn tries
/// again).
pub async fn maybe_run(store: &Store) -> Option<Pruned> {
    let now = now_ms();
    let next = now + ms(EVERY);
    match store.settings().take_turn(TURN_KEY, now, next).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            warn!(error = %e, "housekeeping turn not read");
            return None;
        }
    }
    match run(store, now, STEP, STEPS).await {
        Ok(p) => {
            if p.more_left {
                let soon = now + ms(AGAIN_SOON);
                if let Err(e) = store.settings().set(TURN_KEY, &soon.to_string()).await {
                    warn!(error = %e, "housekeeping: the next turn stays an hour away");
                }
            }
            if p.updates + p.dialogues + p.promo_failures > 0 {
                info!(?p, "housekeeping pruned old rows");
            }
            Some(p)
        }
        Err(e) => {
            warn!(error = %e, "housekeeping failed; the next turn tries again");
            None
        }
    }
}

/// One turn at `now`: up to `steps` statements of `step` rows per table.
#[tracing::instrument(name = "job.housekeeping", skip(store))]
pub async fn run(
    store: &Store,
    now: i64,
    step: u32,
    steps: u32,
) -> Result<Pruned, kiebot_store::StoreError> {
    let mut p = Pruned::default();
    let updates_before = now - ms(UPDATES_KEPT);
    let (n, more) = in_steps(step, steps, || async move {
        store.updates().prune_some(updates_before, step).await
    })
    .await?;
    p.updates = n;
    p.more_left |= more;
    let (n, more) = in_steps(step, steps, || async move {
        store.dialogues().prune_some(now, step).await
    })
    .await?;
    p.dialogues = n;
    p.more_left |= more;
    let promo_before = now - ms(PROMO_FAILURES_KEPT);
    let (n, more) = in_steps(step, steps, || async move {
        store.promos().prune_failures(promo_before, step).await
    })
    .await?;
    p.promo_failures = n;
    p.more_left |= more;
    Ok(p)
}

/// Runs `prune` until it deletes less than a full step or `steps` ran;
/// returns the rows deleted and whether the last step was full.
async fn in_steps<F, Fut>(
    step: u32,
    steps: u32,
    mut prune: F,
) -> Result<(u64, bool), kiebot_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, kiebot_store::StoreError>>,
{
    let mut total = 0;
    for _ in 0..steps {
        let n = prune().await?;
        total += n;
        if n < u64::from(step) {
            return Ok((total, false));
        }
    }
    Ok((total, true))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
