//! Promo codes: a bonus each user can redeem once.

use kiebot_domain::{Money, UserId};
use sqlx::Row;

use crate::ledger::{self, Applied, EntryKind, NewEntry};
use crate::{PromoRefusal, Result, Store, StoreError, now_ms};

/// A promo code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promo {
    /// The code, exactly as created (matching is exact; normalise at the edge).
    pub code: String,
    /// The bonus per redemption.
    pub amount: Money,
    /// How many users may redeem it (`None`: unlimited).
    pub max_uses: Option<u32>,
    /// How many have.
    pub uses: u32,
    /// Unix milliseconds after which it no longer works.
    pub expires_at: Option<i64>,
    /// The admin who created it.
    pub created_by: UserId,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Promo codes. See [`Store::promos`].
#[derive(Debug, Clone, Copy)]
pub struct Promos<'a> {
    store: &'a Store,
}

impl<'a> Promos<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Promos { store }
    }

    /// Creates a code. `Ok(false)`: the code exists (unchanged).
    pub async fn create(
        &self,
        code: &str,
        amount: Money,
        max_uses: Option<u32>,
        expires_at: Option<i64>,
        created_by: UserId,
    ) -> Result<bool> {
        if !amount.is_positive() {
            return Err(StoreError::InvalidAmount {
                amount,
                why: "a promo amount must be positive",
            });
        }
        let created = sqlx::query(
            "INSERT INTO promo_codes (code, amount, max_uses, uses, expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5, $6) ON CONFLICT (code) DO NOTHING",
        )
        .bind(code)
        .bind(amount.minor())
        .bind(max_uses.map(i64::from))
        .bind(expires_at)
        .bind(created_by.0)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(created > 0)
    }

    /// The code, if it exists.
    pub async fn get(&self, code: &str) -> Result<Option<Promo>> {
        let row = sqlx::query(
            "SELECT code, amount, max_uses, uses, expires_at, created_by, created_at \
             FROM promo_codes WHERE code = $1",
        )
        .bind(code)
        .fetch_optional(self.store.pool())
        .await?;
        row.map(|r| {
            Ok(Promo {
                code: r.try_get("code")?,
                amount: Money::from_minor(r.try_get("amount")?),
                max_uses: r
                    .try_get::<Option<i64>, _>("max_uses")?
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                uses: crate::sql::get_count(&r, "uses")?,
                expires_at: r.try_get("expires_at")?,
                created_by: UserId(r.try_get("created_by")?),
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// Refused codes `user` tried since `since` (unix ms).
    pub async fn failures_since(&self, user: UserId, since: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM promo_failures WHERE user_id = $1 AND at >= $2",
        )
        .bind(user.0)
        .bind(since)
        .fetch_one(self.store.pool())
        .await?;
        Ok(crate::sql::count(n))
    }

    /// Records that `user` tried a code that was refused, at `at` (unix ms).
    pub async fn record_failure(&self, user: UserId, at: i64) -> Result<()> {
        sqlx::query("INSERT INTO promo_failures (user_id, at) VALUES ($1, $2)")
            .bind(user.0)
            .bind(at)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Forgets up to `limit` refused attempts made before `older_than`
    /// (unix ms); returns how many.
    pub async fn prune_failures(&self, older_than: i64, limit: u32) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM promo_failures WHERE (user_id, at) IN \
             (SELECT user_id, at FROM promo_failures WHERE at < $1 LIMIT $2)",
        )
        .bind(older_than)
        .bind(i64::from(limit))
        .execute(self.store.pool())
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Redeems the code for the user: a bonus entry (key
    /// `promo:<code>:<user>`) and one use, in one transaction. A user who
    /// redeemed it before gets the first entry back with `fresh: false`.
    /// Unknown, expired and used-up codes are [`StoreError::PromoRefused`].
    pub async fn redeem(&self, code: &str, user: UserId) -> Result<Applied> {
        let key = format!("promo:{code}:{user}");
        let note = format!("promo {code}");
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let refused = |reason| StoreError::PromoRefused {
                code: code.to_owned(),
                reason,
            };
            // The deciding write: one redemption per (code, user).
            let redeemed: Option<String> = sqlx::query_scalar(
                "INSERT INTO promo_redemptions (code, user_id, created_at) \
                 SELECT code, $2, $3 FROM promo_codes WHERE code = $1 \
                 ON CONFLICT (code, user_id) DO NOTHING RETURNING code",
            )
            .bind(code)
            .bind(user.0)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            if redeemed.is_none() {
                return match ledger::entry_by_key(conn, &key).await? {
                    Some(entry) => Ok(Applied {
                        entry,
                        fresh: false,
                    }),
                    None => Err(refused(PromoRefusal::Unknown)),
                };
            }
            let amount: Option<i64> = sqlx::query_scalar(
                "UPDATE promo_codes SET uses = uses + 1 \
                 WHERE code = $1 AND (max_uses IS NULL OR uses < max_uses) \
                   AND (expires_at IS NULL OR expires_at > $2) \
                 RETURNING amount",
            )
            .bind(code)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(amount) = amount else {
                let expires_at: Option<i64> =
                    sqlx::query_scalar("SELECT expires_at FROM promo_codes WHERE code = $1")
                        .bind(code)
                        .fetch_one(&mut *conn)
                        .await?;
                return Err(refused(match expires_at {
                    Some(t) if t <= now => PromoRefusal::Expired,
                    _ => PromoRefusal::Exhausted,
                }));
            };
            let e = NewEntry {
                note: Some(&note),
                ..NewEntry::new(user, EntryKind::Bonus, Money::from_minor(amount), &key)
            };
            ledger::change_balance_in(conn, &e, now).await
        })
    }
}
