//! Referrals: who invited whom, and the inviter's bonus, paid once.

use kiebot_domain::{Money, UserId};

use crate::ledger::{self, Applied, EntryKind, NewEntry};
use crate::{Result, Store, StoreError, now_ms};

/// Referrals. See [`Store::referrals`].
#[derive(Debug, Clone, Copy)]
pub struct Referrals<'a> {
    store: &'a Store,
}

impl<'a> Referrals<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Referrals { store }
    }

    /// Records that `inviter` invited `invitee` (and sets the invitee's
    /// referrer). `Ok(false)`: the invitee already has a referrer, the inviter
    /// is unknown, or it is the same person. The invitee must exist.
    pub async fn record(&self, invitee: UserId, inviter: UserId) -> Result<bool> {
        if invitee == inviter {
            return Ok(false);
        }
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let inserted = sqlx::query(
                "INSERT INTO referrals (invitee_id, inviter_id, bonus_paid, created_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2) \
                 ON CONFLICT (invitee_id) DO NOTHING",
            )
            .bind(invitee.0)
            .bind(inviter.0)
            .bind(false)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted > 0 {
                sqlx::query(
                    "UPDATE users SET referrer_id = $2 WHERE id = $1 AND referrer_id IS NULL",
                )
                .bind(invitee.0)
                .bind(inviter.0)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<_, StoreError>(inserted > 0)
        })
    }

    /// Who invited the user.
    pub async fn inviter_of(&self, invitee: UserId) -> Result<Option<UserId>> {
        let inviter: Option<i64> =
            sqlx::query_scalar("SELECT inviter_id FROM referrals WHERE invitee_id = $1")
                .bind(invitee.0)
                .fetch_optional(self.store.pool())
                .await?;
        Ok(inviter.map(UserId))
    }

    /// Pays the inviter of `invitee` their bonus (key `referral:<invitee>`),
    /// once per invitee. `None`: nobody invited them. A repeat returns the
    /// first bonus with `fresh: false`.
    pub async fn pay_bonus(&self, invitee: UserId, amount: Money) -> Result<Option<Applied>> {
        let key = format!("referral:{invitee}");
        let note = format!("referral of {invitee}");
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let claimed: Option<i64> = sqlx::query_scalar(
                "UPDATE referrals SET bonus_paid = $2 \
                 WHERE invitee_id = $1 AND bonus_paid = $3 RETURNING inviter_id",
            )
            .bind(invitee.0)
            .bind(true)
            .bind(false)
            .fetch_optional(&mut *conn)
            .await?;
            let inviter = match claimed {
                Some(id) => UserId(id),
                None => {
                    let inviter: Option<i64> = sqlx::query_scalar(
                        "SELECT inviter_id FROM referrals WHERE invitee_id = $1",
                    )
                    .bind(invitee.0)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(inviter) = inviter else {
                        return Ok(None);
                    };
                    UserId(inviter)
                }
            };
            let e = NewEntry {
                note: Some(&note),
                ..NewEntry::new(inviter, EntryKind::Bonus, amount, &key)
            };
            let applied = if claimed.is_some() {
                ledger::change_balance_in(conn, &e, now).await?
            } else {
                ledger::repeat_of(conn, &e).await?
            };
            Ok(Some(applied))
        })
    }
}
