//! Admin broadcasts: one text to every user who is not blocked, sent by
//! exactly one front process at a time.
//!
//! A runner takes the running broadcast's lease ([`Broadcasts::claim`]) and
//! renews it with every recipient ([`Broadcasts::advance`]); when the lease
//! passes (the process died or stalled), another runner claims it and
//! carries on from the cursor. The cursor moves to a recipient *before* the
//! message is sent, conditional on the runner still holding the lease, so a
//! runner that lost it stops before sending, and a runner that took over
//! never sends to a recipient the other one took: each recipient is sent to
//! at most once, and exactly once unless a process dies between taking a
//! recipient and sending.
//!
//! Lease times are the callers' clocks (`now` arguments); clock skew between
//! processes only moves when a takeover happens, never lets two runners take
//! the same recipient, because every step is conditional on `runner`.

use kiebot_domain::UserId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{count, get_parsed};
use crate::{Result, Store, StoreError, now_ms};

/// A broadcast row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BroadcastId(pub i64);

impl std::fmt::Display for BroadcastId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a broadcast is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BroadcastStatus {
    /// Recipients remain (or the report is outstanding).
    Running,
    /// Done; the report was sent by the runner that finished it.
    Finished,
}

impl std::str::FromStr for BroadcastStatus {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "running" => Ok(BroadcastStatus::Running),
            "finished" => Ok(BroadcastStatus::Finished),
            _ => Err(()),
        }
    }
}

/// A broadcast row. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// Row id.
    pub id: BroadcastId,
    /// What every recipient gets.
    pub text: String,
    /// Running or finished.
    pub status: BroadcastStatus,
    /// The last recipient taken; users with a greater id remain.
    pub cursor: i64,
    /// Messages delivered.
    pub sent: u64,
    /// Messages Telegram refused.
    pub failed: u64,
    /// Where the report goes.
    pub admin_chat: i64,
    /// The report's language code.
    pub lang: String,
    /// The admin who started it.
    pub created_by: UserId,
    /// The runner holding (or last holding) the lease.
    pub runner: Option<String>,
    /// When the lease passes.
    pub claimed_until: Option<i64>,
    /// Started.
    pub created_at: i64,
    /// Finished.
    pub finished_at: Option<i64>,
}

/// What an admin starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBroadcast {
    /// What every recipient gets.
    pub text: String,
    /// Where the report goes.
    pub admin_chat: i64,
    /// The report's language code.
    pub lang: String,
    /// The admin.
    pub created_by: UserId,
}

/// The answer to [`Broadcasts::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the lease of this broadcast now.
    Claimed(Broadcast),
    /// Another runner holds the lease until this time.
    Held {
        /// When it passes (unless renewed).
        until: i64,
    },
    /// No broadcast is running.
    Idle,
}

macro_rules! broadcast_columns {
    () => {
        "id, text, status, cursor, sent, failed, admin_chat, lang, created_by, runner, \
         claimed_until, created_at, finished_at"
    };
}

/// Broadcasts. See the [module docs](self) and [`Store::broadcasts`].
#[derive(Debug, Clone, Copy)]
pub struct Broadcasts<'a> {
    store: &'a Store,
}

impl<'a> Broadcasts<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Broadcasts { store }
    }

    /// Records a new running broadcast, with no recipient taken and no lease.
    /// `None`: another broadcast is running (at most one runs at a time).
    /// Audited (`broadcast`, by `created_by`) in the same transaction.
    pub async fn create(&self, new: &NewBroadcast) -> Result<Option<BroadcastId>> {
        write_tx!(self.store, |conn| {
            let now = now_ms();
            // The partial unique index on running broadcasts decides, also
            // between two admins starting one on two processes at once.
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO broadcasts (text, status, cursor, sent, failed, admin_chat, lang, \
                     created_by, created_at) \
                 VALUES ($1, 'running', $2, 0, 0, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(new.text.as_str())
            .bind(i64::MIN)
            .bind(new.admin_chat)
            .bind(new.lang.as_str())
            .bind(new.created_by.0)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            // Audited with the row that starts it, in the same transaction.
            if id.is_some() {
                let reason: String = new.text.chars().take(200).collect();
                crate::audit::record_in(
                    conn,
                    new.created_by,
                    "broadcast",
                    None,
                    None,
                    &reason,
                    now,
                )
                .await?;
            }
            Ok(id.map(BroadcastId))
        })
    }

    /// The broadcast.
    pub async fn get(&self, id: BroadcastId) -> Result<Option<Broadcast>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            broadcast_columns!(),
            " FROM broadcasts WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.store.pool())
        .await?;
        row.as_ref().map(broadcast_from_row).transpose()
    }

    /// The running broadcast, if any.
    pub async fn running(&self) -> Result<Option<Broadcast>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            broadcast_columns!(),
            " FROM broadcasts WHERE status = 'running'"
        ))
        .fetch_optional(self.store.pool())
        .await?;
        row.as_ref().map(broadcast_from_row).transpose()
    }

    /// Takes the running broadcast's lease for `runner` until `now +
    /// lease_ms`, if nobody holds it at `now` (never claimed, or lapsed) or
    /// `runner` already does.
    pub async fn claim(&self, runner: &str, now: i64, lease_ms: i64) -> Result<Claim> {
        let row = sqlx::query(concat!(
            "UPDATE broadcasts SET runner = $1, claimed_until = $3 \
             WHERE status = 'running' \
                 AND (runner = $1 OR claimed_until IS NULL OR claimed_until <= $2) \
             RETURNING ",
            broadcast_columns!()
        ))
        .bind(runner)
        .bind(now)
        .bind(now.saturating_add(lease_ms))
        .fetch_optional(self.store.pool())
        .await?;
        if let Some(r) = row {
            return Ok(Claim::Claimed(broadcast_from_row(&r)?));
        }
        let until: Option<Option<i64>> =
            sqlx::query_scalar("SELECT claimed_until FROM broadcasts WHERE status = 'running'")
                .fetch_optional(self.store.pool())
                .await?;
        Ok(match until {
            // Claimed and finished between the two statements, or lapsed
            // just now: either way the caller may simply ask again.
            Some(until) => Claim::Held {
                until: until.unwrap_or(now),
            },
            None => Claim::Idle,
        })
    }

    /// Takes `recipient` (the next one after `from`) and renews the lease
    /// until `now + lease_ms`, if `runner` still holds the broadcast and its
    /// cursor is still `from`. `false`: the lease was lost (another runner
    /// took over); do not send.
    pub async fn advance(
        &self,
        id: BroadcastId,
        runner: &str,
        from: i64,
        recipient: UserId,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool> {
        if recipient.0 <= from {
            return Err(StoreError::Corrupt(format!(
                "broadcast {id}: recipient {recipient} is not after the cursor {from}"
            )));
        }
        let changed = sqlx::query(
            "UPDATE broadcasts SET cursor = $4, claimed_until = $5 \
             WHERE id = $1 AND status = 'running' AND runner = $2 AND cursor = $3",
        )
        .bind(id.0)
        .bind(runner)
        .bind(from)
        .bind(recipient.0)
        .bind(now.saturating_add(lease_ms))
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Renews the lease until `now + lease_ms` (a long wait between two
    /// recipients). `false`: the lease was lost.
    pub async fn renew(
        &self,
        id: BroadcastId,
        runner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE broadcasts SET claimed_until = $3 \
             WHERE id = $1 AND status = 'running' AND runner = $2",
        )
        .bind(id.0)
        .bind(runner)
        .bind(now.saturating_add(lease_ms))
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Gives the lease back (a runner stopping with its process), so that
    /// another process takes the broadcast over at once instead of after
    /// the lease. `false`: `runner` did not hold it.
    pub async fn release(&self, id: BroadcastId, runner: &str) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE broadcasts SET claimed_until = NULL \
             WHERE id = $1 AND status = 'running' AND runner = $2",
        )
        .bind(id.0)
        .bind(runner)
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Counts one message's outcome. Not conditional on the lease: the
    /// message was sent (or refused) whoever holds it now.
    pub async fn record(&self, id: BroadcastId, delivered: bool) -> Result<()> {
        let sql = if delivered {
            "UPDATE broadcasts SET sent = sent + 1 WHERE id = $1"
        } else {
            "UPDATE broadcasts SET failed = failed + 1 WHERE id = $1"
        };
        sqlx::query(sql)
            .bind(id.0)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Ends the broadcast if `runner` holds it: the finished row, for the
    /// report. `None`: the lease was lost, or it was finished already (so
    /// exactly one runner reports).
    pub async fn finish(&self, id: BroadcastId, runner: &str) -> Result<Option<Broadcast>> {
        let row = sqlx::query(concat!(
            "UPDATE broadcasts SET status = 'finished', finished_at = $3, claimed_until = NULL \
             WHERE id = $1 AND status = 'running' AND runner = $2 \
             RETURNING ",
            broadcast_columns!()
        ))
        .bind(id.0)
        .bind(runner)
        .bind(now_ms())
        .fetch_optional(self.store.pool())
        .await?;
        row.as_ref().map(broadcast_from_row).transpose()
    }

    /// Up to `limit` recipients after `cursor` (users who are not blocked),
    /// in id order.
    pub async fn recipients_after(&self, cursor: i64, limit: u32) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM users WHERE id > $1 AND blocked = $2 ORDER BY id LIMIT $3",
        )
        .bind(cursor)
        .bind(false)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }
}

fn broadcast_from_row(r: &AnyRow) -> Result<Broadcast> {
    Ok(Broadcast {
        id: BroadcastId(r.try_get("id")?),
        text: r.try_get("text")?,
        status: get_parsed(r, "status")?,
        cursor: r.try_get("cursor")?,
        sent: count(r.try_get("sent")?),
        failed: count(r.try_get("failed")?),
        admin_chat: r.try_get("admin_chat")?,
        lang: r.try_get("lang")?,
        created_by: UserId(r.try_get("created_by")?),
        runner: r.try_get("runner")?,
        claimed_until: r.try_get("claimed_until")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}
