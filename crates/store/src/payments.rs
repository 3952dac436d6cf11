//! Telegram Stars payments: recorded and credited once per charge id.

use std::fmt;
use std::str::FromStr;

use kiebot_domain::{Money, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::ledger::{self, Applied, EntryKind, NewEntry};
use crate::sql::get_parsed;
use crate::{Result, Store, StoreError, now_ms, users};

/// A payment row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentId(pub i64);

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether the money is still ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Paid and credited.
    Paid,
    /// Paid back (and debited).
    Refunded,
}

impl PaymentStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "paid",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

impl FromStr for PaymentStatus {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "paid" => Ok(PaymentStatus::Paid),
            "refunded" => Ok(PaymentStatus::Refunded),
            _ => Err(()),
        }
    }
}

/// A payment row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Row id.
    pub id: PaymentId,
    /// The payer.
    pub user: UserId,
    /// `stars`.
    pub provider: String,
    /// Telegram's `telegram_payment_charge_id` (needed to refund).
    pub charge_id: String,
    /// Stars paid.
    pub stars: i64,
    /// What was credited.
    pub amount: Money,
    /// Paid or refunded.
    pub status: PaymentStatus,
    /// The invoice payload we issued.
    pub payload: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub refunded_at: Option<i64>,
    /// Why the operator should look at it (credited all the same), e.g.
    /// `unknown_invoice`; `None` when it matched its invoice.
    pub flag: Option<String>,
}

/// A Stars payment to record and credit. See [`Payments::credit_stars`].
#[derive(Debug, Clone, Copy)]
pub struct StarsCredit<'p> {
    /// The payer.
    pub user: UserId,
    /// Telegram's `telegram_payment_charge_id`.
    pub charge_id: &'p str,
    /// Stars paid.
    pub stars: i64,
    /// What to credit.
    pub amount: Money,
    /// The invoice payload as Telegram reported it.
    pub payload: &'p str,
    /// Why the operator should look at it, if anything did not match.
    pub flag: Option<&'p str>,
}

/// Payments. See [`Store::payments`].
#[derive(Debug, Clone, Copy)]
pub struct Payments<'a> {
    store: &'a Store,
}

fn topup_key(charge_id: &str) -> String {
    format!("topup:{charge_id}")
}

fn refund_key(charge_id: &str) -> String {
    format!("refund:{charge_id}")
}

impl<'a> Payments<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Payments { store }
    }

    /// Records a `successful_payment` and credits `amount` (ledger key
    /// `topup:<charge_id>`), in one transaction; creates the user if needed,
    /// because money received must never be lost. A repeated update returns
    /// the first credit (`fresh: false`); the same charge id with another user
    /// or amount is [`StoreError::KeyConflict`].
    pub async fn record_stars_payment(
        &self,
        user: UserId,
        charge_id: &str,
        stars: i64,
        amount: Money,
        payload: &str,
    ) -> Result<Applied> {
        self.credit_stars(&StarsCredit {
            user,
            charge_id,
            stars,
            amount,
            payload,
            flag: None,
        })
        .await
    }

    /// [`record_stars_payment`](Self::record_stars_payment) with a flag for
    /// the operator kept on the payment (set only by the first credit).
    pub async fn credit_stars(&self, c: &StarsCredit<'_>) -> Result<Applied> {
        let StarsCredit {
            user,
            charge_id,
            stars,
            amount,
            payload,
            flag,
        } = *c;
        if stars <= 0 || !amount.is_positive() {
            return Err(StoreError::InvalidAmount {
                amount,
                why: "a payment must have positive stars and amount",
            });
        }
        let key = topup_key(charge_id);
        write_tx!(self.store, |conn| {
            let now = now_ms();
            users::ensure_in(conn, user, now).await?;
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO payments \
                     (user_id, provider, charge_id, stars, amount, status, payload, created_at, flag) \
                 VALUES ($1, 'stars', $2, $3, $4, 'paid', $5, $6, $7) \
                 ON CONFLICT (charge_id) DO NOTHING RETURNING id",
            )
            .bind(user.0)
            .bind(charge_id)
            .bind(stars)
            .bind(amount.minor())
            .bind(payload)
            .bind(now)
            .bind(flag)
            .fetch_optional(&mut *conn)
            .await?;
            let payment = match inserted {
                Some(id) => PaymentId(id),
                None => PaymentId(
                    sqlx::query_scalar("SELECT id FROM payments WHERE charge_id = $1")
                        .bind(charge_id)
                        .fetch_one(&mut *conn)
                        .await?,
                ),
            };
            let e = NewEntry {
                payment: Some(payment),
                ..NewEntry::new(user, EntryKind::Topup, amount, &key)
            };
            if inserted.is_some() {
                ledger::change_balance_in(conn, &e, now).await
            } else {
                ledger::repeat_of(conn, &e).await
            }
        })
    }

    /// Flags a payment for the operator (replacing an earlier flag).
    pub async fn set_flag(&self, charge_id: &str, flag: &str) -> Result<()> {
        let n = sqlx::query("UPDATE payments SET flag = $2 WHERE charge_id = $1")
            .bind(charge_id)
            .bind(flag)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::not_found("payment", charge_id));
        }
        Ok(())
    }

    /// The latest flagged payments, newest first.
    pub async fn flagged(&self, limit: u32) -> Result<Vec<Payment>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE flag IS NOT NULL ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(payment_from_row).collect()
    }

    /// Marks the payment refunded and debits its amount (ledger key
    /// `refund:<charge_id>`), in one transaction, which also reverses the
    /// referral bonus the payment qualified (see [`crate::referrals`]). Refused with
    /// [`StoreError::InsufficientFunds`] when the user has spent the money.
    /// Repeating returns the first refund.
    ///
    /// Call it before Telegram's `refundStarPayment`, and credit the money
    /// back with an adjustment if Telegram refuses: that order never pays out
    /// money the wallet still shows.
    pub async fn mark_refunded(&self, charge_id: &str) -> Result<Applied> {
        let key = refund_key(charge_id);
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let row = sqlx::query(
                "UPDATE payments SET status = 'refunded', refunded_at = $2 \
                 WHERE charge_id = $1 AND status = 'paid' RETURNING id, user_id, amount",
            )
            .bind(charge_id)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some(r) => {
                    let e = NewEntry {
                        payment: Some(PaymentId(r.try_get("id")?)),
                        ..NewEntry::new(
                            UserId(r.try_get("user_id")?),
                            EntryKind::Refund,
                            Money::from_minor(r.try_get("amount")?),
                            &key,
                        )
                    };
                    let applied = ledger::change_balance_in(conn, &e, now).await?;
                    // The referral bonus this payment qualified goes back with it.
                    crate::referrals::reverse_for_payment_in(
                        conn,
                        PaymentId(r.try_get("id")?),
                        now,
                    )
                    .await?;
                    Ok(applied)
                }
                None => {
                    get_in(conn, charge_id)
                        .await?
                        .ok_or_else(|| StoreError::not_found("payment", charge_id))?;
                    match ledger::entry_by_key(conn, &key).await? {
                        Some(entry) => Ok(Applied {
                            entry,
                            fresh: false,
                        }),
                        None => Err(StoreError::Corrupt(format!(
                            "payment {charge_id} is refunded without a {key} entry"
                        ))),
                    }
                }
            }
        })
    }

    /// The payment with this charge id.
    pub async fn get(&self, charge_id: &str) -> Result<Option<Payment>> {
        let mut conn = self.store.pool().acquire().await?;
        get_in(&mut conn, charge_id).await
    }

    /// The user's latest payments, newest first.
    pub async fn list_for_user(&self, user: UserId, limit: u32) -> Result<Vec<Payment>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(user.0)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(payment_from_row).collect()
    }
}

macro_rules! payment_columns {
    () => {
        "id, user_id, provider, charge_id, stars, amount, status, payload, created_at, refunded_at, flag"
    };
}
use payment_columns;

async fn get_in(conn: &mut AnyConnection, charge_id: &str) -> Result<Option<Payment>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE charge_id = $1"
    ))
    .bind(charge_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(payment_from_row).transpose()
}

fn payment_from_row(r: &AnyRow) -> Result<Payment> {
    Ok(Payment {
        id: PaymentId(r.try_get("id")?),
        user: UserId(r.try_get("user_id")?),
        provider: r.try_get("provider")?,
        charge_id: r.try_get("charge_id")?,
        stars: r.try_get("stars")?,
        amount: Money::from_minor(r.try_get("amount")?),
        status: get_parsed(r, "status")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        refunded_at: r.try_get("refunded_at")?,
        flag: r.try_get("flag")?,
    })
}
