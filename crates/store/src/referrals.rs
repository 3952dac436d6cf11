//! Referrals: who invited whom, and the inviter's bonus under the referral
//! rules.
//!
//! A referral is settled once, by the first event that qualifies: a top-up
//! of at least [`ReferralRules::min_stars`] Stars ([`Referrals::on_payment`])
//! or, when [`ReferralRules::min_spend`] is set, the invitee's captured
//! spending reaching it ([`Referrals::on_spend`], [`Referrals::settle_spent`]).
//! Settling decides once and for all, in one transaction with the inviter's
//! row locked (so concurrent invitees of one inviter count one at a time):
//!
//! - `blocked`: the inviter is blocked then; nothing is paid, ever;
//! - `capped`: the inviter already has [`ReferralRules::monthly_cap`] paid
//!   referrals in this calendar month (UTC); nothing is paid, ever;
//! - `paid`: the bonus is credited (ledger key `referral:<invitee>`).
//!
//! Inviting oneself is refused when the referral is recorded.
//!
//! When the qualifying payment is refunded, the bonus is reversed in the
//! refund's own transaction ([`reverse_for_payment_in`], called by
//! [`Payments::mark_refunded`](crate::Payments::mark_refunded)), once (ledger
//! key `referral-reversal:<invitee>`, and the row's `reversed_at`). The
//! ledger never lets a balance fall below what is held, so the reversal
//! takes what the inviter has available, down to zero, and records the rest
//! as the referral's `shortfall` (no debt is carried: a later top-up is
//! never taken for it). A bonus qualified by spending has no payment and is
//! not reversed: the money was spent on generations that were delivered.

use kiebot_domain::{Money, UserId};
use sqlx::{AnyConnection, Row};

use crate::ledger::{self, Applied, EntryKind, NewEntry};
use crate::payments::PaymentId;
use crate::{Result, Store, StoreError, now_ms};

/// The referral rules (`REFERRAL_*` settings and the bonus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferralRules {
    /// What the inviter gets.
    pub bonus: Money,
    /// The smallest top-up, in Stars, that qualifies.
    pub min_stars: i64,
    /// Captured spending that qualifies (`None`: spending never does).
    pub min_spend: Option<Money>,
    /// Paid referrals per inviter per calendar month (UTC).
    pub monthly_cap: u32,
}

/// How a referral was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferralOutcome {
    /// The bonus was paid.
    Paid,
    /// The inviter had reached the monthly cap.
    Capped,
    /// The inviter was blocked.
    Blocked,
}

impl ReferralOutcome {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralOutcome::Paid => "paid",
            ReferralOutcome::Capped => "capped",
            ReferralOutcome::Blocked => "blocked",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "paid" => Some(ReferralOutcome::Paid),
            "capped" => Some(ReferralOutcome::Capped),
            "blocked" => Some(ReferralOutcome::Blocked),
            _ => None,
        }
    }
}

/// A referral settled by this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Who invited.
    pub inviter: UserId,
    /// What was decided.
    pub outcome: ReferralOutcome,
    /// The bonus entry when paid.
    pub bonus: Option<Applied>,
}

/// A referral row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referral {
    /// Who was invited.
    pub invitee: UserId,
    /// Who invited.
    pub inviter: UserId,
    /// `None` until the invitee qualifies.
    pub outcome: Option<ReferralOutcome>,
    /// The qualifying payment (`None` when spending qualified).
    pub payment: Option<PaymentId>,
    /// The bonus paid.
    pub bonus: Option<Money>,
    /// When the bonus was reversed (unix milliseconds).
    pub reversed_at: Option<i64>,
    /// The part of the reversal the inviter's balance could not cover.
    pub shortfall: Option<Money>,
}

/// Referrals. See the [module docs](self).
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

    /// The invitee's referral, if they were invited.
    pub async fn get(&self, invitee: UserId) -> Result<Option<Referral>> {
        let row = sqlx::query(
            "SELECT invitee_id, inviter_id, outcome, payment_id, bonus, reversed_at, shortfall \
             FROM referrals WHERE invitee_id = $1",
        )
        .bind(invitee.0)
        .fetch_optional(self.store.pool())
        .await?;
        row.map(|r| {
            let outcome: Option<String> = r.try_get("outcome")?;
            Ok(Referral {
                invitee: UserId(r.try_get("invitee_id")?),
                inviter: UserId(r.try_get("inviter_id")?),
                outcome: match outcome {
                    None => None,
                    Some(s) => {
                        Some(ReferralOutcome::parse(&s).ok_or_else(|| {
                            StoreError::Corrupt(format!("referral outcome {s:?}"))
                        })?)
                    }
                },
                payment: r.try_get::<Option<i64>, _>("payment_id")?.map(PaymentId),
                bonus: r.try_get::<Option<i64>, _>("bonus")?.map(Money::from_minor),
                reversed_at: r.try_get("reversed_at")?,
                shortfall: r
                    .try_get::<Option<i64>, _>("shortfall")?
                    .map(Money::from_minor),
            })
        })
        .transpose()
    }

    /// The invitee paid `stars` Stars (payment `payment`): settles their
    /// referral if the top-up qualifies and it is not settled yet. `None`:
    /// nothing settled by this call (too small, not invited, or settled
    /// before).
    pub async fn on_payment(
        &self,
        invitee: UserId,
        payment: PaymentId,
        stars: i64,
        rules: &ReferralRules,
    ) -> Result<Option<Settled>> {
        if stars < rules.min_stars {
            return Ok(None);
        }
        write_tx!(self.store, |conn| {
            settle_in(conn, invitee, Some(payment), rules, now_ms()).await
        })
    }

    /// Settles the invitee's referral if their captured spending has reached
    /// [`ReferralRules::min_spend`]. `None`: nothing settled by this call.
    pub async fn on_spend(
        &self,
        invitee: UserId,
        rules: &ReferralRules,
    ) -> Result<Option<Settled>> {
        let Some(min) = rules.min_spend.filter(|m| m.is_positive()) else {
            return Ok(None);
        };
        write_tx!(self.store, |conn| {
            let spent: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries \
                 WHERE user_id = $1 AND kind = 'capture'",
            )
            .bind(invitee.0)
            .fetch_one(&mut *conn)
            .await?;
            if spent < min.minor() {
                return Ok(None);
            }
            settle_in(conn, invitee, None, rules, now_ms()).await
        })
    }

    /// Settles (at most `limit`) unsettled referrals whose invitee's captured
    /// spending has reached [`ReferralRules::min_spend`]: the front bot runs
    /// it every few seconds, so a bonus follows the capture that qualified
    /// whichever process captured it. Returns each invitee with what was
    /// settled.
    pub async fn settle_spent(
        &self,
        rules: &ReferralRules,
        limit: u32,
    ) -> Result<Vec<(UserId, Settled)>> {
        let Some(min) = rules.min_spend.filter(|m| m.is_positive()) else {
            return Ok(vec![]);
        };
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT r.invitee_id FROM referrals r WHERE r.bonus_paid = $1 \
             AND (SELECT CAST(COALESCE(SUM(e.amount), 0) AS BIGINT) FROM ledger_entries e \
                  WHERE e.user_id = r.invitee_id AND e.kind = 'capture') >= $2 \
             LIMIT $3",
        )
        .bind(false)
        .bind(min.minor())
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        let mut settled = Vec::new();
        for invitee in due.into_iter().map(UserId) {
            if let Some(s) = self.on_spend(invitee, rules).await? {
                settled.push((invitee, s));
            }
        }
        Ok(settled)
    }
}

/// Settles the invitee's referral now, if it is not settled yet. See the
/// [module docs](self).
async fn settle_in(
    conn: &mut AnyConnection,
    invitee: UserId,
    payment: Option<PaymentId>,
    rules: &ReferralRules,
    now: i64,
) -> Result<Option<Settled>> {
    if !rules.bonus.is_positive() {
        return Err(StoreError::InvalidAmount {
            amount: rules.bonus,
            why: "a referral bonus must be positive",
        });
    }
    // The claim: of two qualifying events at once, one settles.
    let claimed: Option<i64> = sqlx::query_scalar(
        "UPDATE referrals SET bonus_paid = $2, qualified_at = $3, payment_id = $4 \
         WHERE invitee_id = $1 AND bonus_paid = $5 RETURNING inviter_id",
    )
    .bind(invitee.0)
    .bind(true)
    .bind(now)
    .bind(payment.map(|p| p.0))
    .bind(false)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(inviter) = claimed.map(UserId) else {
        return Ok(None);
    };
    // Locks the inviter's row: their invitees are counted one at a time.
    let blocked =
        sqlx::query("UPDATE users SET last_seen_at = last_seen_at WHERE id = $1 RETURNING blocked")
            .bind(inviter.0)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| crate::sql::get_bool(&r, "blocked"))
            .transpose()?
            .ok_or_else(|| StoreError::not_found("user", inviter))?;
    let (from, to) = month_of(now);
    let paid_this_month: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM referrals WHERE inviter_id = $1 AND outcome = 'paid' \
         AND qualified_at >= $2 AND qualified_at < $3",
    )
    .bind(inviter.0)
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    let outcome = if blocked {
        ReferralOutcome::Blocked
    } else if paid_this_month >= i64::from(rules.monthly_cap) {
        ReferralOutcome::Capped
    } else {
        ReferralOutcome::Paid
    };
    let bonus = if outcome == ReferralOutcome::Paid {
        let key = format!("referral:{invitee}");
        let note = format!("referral of {invitee}");
        let e = NewEntry {
            note: Some(&note),
            ..NewEntry::new(inviter, EntryKind::Bonus, rules.bonus, &key)
        };
        Some(ledger::change_balance_in(conn, &e, now).await?)
    } else {
        None
    };
    sqlx::query("UPDATE referrals SET outcome = $2, bonus = $3 WHERE invitee_id = $1")
        .bind(invitee.0)
        .bind(outcome.as_str())
        .bind(bonus.as_ref().map(|b| b.entry.amount.minor()))
        .execute(&mut *conn)
        .await?;
    tracing::info!(%invitee, %inviter, outcome = outcome.as_str(), "referral settled");
    Ok(Some(Settled {
        inviter,
        outcome,
        bonus,
    }))
}

/// A reversed referral bonus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    /// Whose bonus.
    pub inviter: UserId,
    /// What was taken back.
    pub taken: Money,
    /// What the inviter's available balance could not cover.
    pub shortfall: Money,
}

/// Reverses the referral bonus the payment qualified, if any and not yet
/// reversed, inside the refund's transaction. See the [module docs](self).
pub(crate) async fn reverse_for_payment_in(
    conn: &mut AnyConnection,
    payment: PaymentId,
    now: i64,
) -> Result<Option<Reversal>> {
    let row = sqlx::query(
        "UPDATE referrals SET reversed_at = $2 \
         WHERE payment_id = $1 AND outcome = 'paid' AND reversed_at IS NULL \
         RETURNING invitee_id, inviter_id, bonus",
    )
    .bind(payment.0)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let invitee = UserId(row.try_get("invitee_id")?);
    let inviter = UserId(row.try_get("inviter_id")?);
    let bonus: i64 = row.try_get::<Option<i64>, _>("bonus")?.unwrap_or(0);
    let wallet = ledger::lock_wallet_in(conn, inviter).await?;
    let taken = bonus.min(wallet.available().minor().max(0));
    if taken > 0 {
        let key = format!("referral-reversal:{invitee}");
        let note = format!("referral of {invitee} reversed: payment {payment} refunded");
        let e = NewEntry {
            note: Some(&note),
            payment: Some(payment),
            ..NewEntry::new(inviter, EntryKind::Adjust, Money::from_minor(-taken), &key)
        };
        ledger::change_balance_in(conn, &e, now).await?;
    }
    let shortfall = bonus - taken;
    sqlx::query("UPDATE referrals SET shortfall = $2 WHERE invitee_id = $1")
        .bind(invitee.0)
        .bind(shortfall)
        .execute(&mut *conn)
        .await?;
    tracing::info!(%invitee, %inviter, taken, shortfall, "referral bonus reversed");
    Ok(Some(Reversal {
        inviter,
        taken: Money::from_minor(taken),
        shortfall: Money::from_minor(shortfall),
    }))
}

/// The calendar month (UTC) holding `now`, as unix milliseconds
/// `[first day 00:00, next month's first day 00:00)`.
pub fn month_of(now_ms: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (
        days_from_civil(y, m, 1) * DAY,
        days_from_civil(ny, nm, 1) * DAY,
    )
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        // 2026-12-05T00:00:00Z
        let dec5 = 1_796_428_800_000;
        let (from, to) = month_of(dec5);
        assert_eq!(from, 1_796_083_200_000, "2026-12-01");
        assert_eq!(to, 1_798_761_600_000, "2027-01-01");
        assert_eq!(month_of(from), (from, to));
        assert_eq!(month_of(to - 1), (from, to));
        assert_eq!(month_of(to).0, to);
        // February of a leap year.
        let feb_2028 = days_from_civil(2028, 2, 10) * 86_400_000;
        let (f, t) = month_of(feb_2028);
        assert_eq!((t - f) / 86_400_000, 29);
    }
}
