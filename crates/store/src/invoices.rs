//! Invoices we issued for Telegram Stars top-ups: who may pay, how many
//! Stars, what they credit, until when.
//!
//! The invoice payload is `inv:<id>:<nonce>`: the id finds the row, and the
//! whole payload must equal the stored one, so a guessed id is no invoice.
//! The amount is fixed when the invoice is issued, so a change of
//! `STARS_RATE` between the invoice and its payment does not change what the
//! user was promised.

use kiebot_domain::{Money, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, now_ms, users};

/// An invoice row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvoiceId(pub i64);

/// An invoice we issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// Row id (named in the payload).
    pub id: InvoiceId,
    /// Who may pay it.
    pub user: UserId,
    /// Stars asked.
    pub stars: i64,
    /// What paying it credits.
    pub amount: Money,
    /// The payload given to Telegram.
    pub payload: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; after it the invoice is refused at pre-checkout.
    pub expires_at: i64,
}

impl Invoice {
    /// Whether it is past its expiry at `now` (unix ms).
    pub fn expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }
}

/// The payload of invoice `id` with `nonce`.
pub fn payload_of(id: InvoiceId, nonce: u64) -> String {
    format!("inv:{}:{nonce:016x}", id.0)
}

/// The invoice id a payload names, if it has our shape (the nonce is checked
/// by comparing the whole payload with the stored one).
pub fn parse_payload(payload: &str) -> Option<InvoiceId> {
    let mut it = payload.split(':');
    let (tag, id, nonce) = (it.next()?, it.next()?, it.next()?);
    if tag != "inv"
        || it.next().is_some()
        || nonce.len() != 16
        || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    id.parse().ok().filter(|id| *id > 0).map(InvoiceId)
}

/// Invoices. See [`Store::invoices`].
#[derive(Debug, Clone, Copy)]
pub struct Invoices<'a> {
    store: &'a Store,
}

impl<'a> Invoices<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Invoices { store }
    }

    /// Records an invoice of `stars` crediting `amount` to `user`, valid for
    /// `ttl_ms`; `nonce` makes its payload unguessable.
    pub async fn create(
        &self,
        user: UserId,
        stars: i64,
        amount: Money,
        ttl_ms: i64,
        nonce: u64,
    ) -> Result<Invoice> {
        if stars <= 0 || !amount.is_positive() || ttl_ms <= 0 {
            return Err(StoreError::InvalidAmount {
                amount,
                why: "an invoice must have positive stars, amount and lifetime",
            });
        }
        write_tx!(self.store, |conn| {
            let now = now_ms();
            users::ensure_in(conn, user, now).await?;
            // The payload names the id, known only after the insert.
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO invoices (user_id, stars, amount, payload, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(user.0)
            .bind(stars)
            .bind(amount.minor())
            .bind(format!("pending:{nonce:016x}:{now}"))
            .bind(now)
            .bind(now.saturating_add(ttl_ms))
            .fetch_one(&mut *conn)
            .await?;
            let payload = payload_of(InvoiceId(id), nonce);
            sqlx::query("UPDATE invoices SET payload = $2 WHERE id = $1")
                .bind(id)
                .bind(&payload)
                .execute(&mut *conn)
                .await?;
            Ok(Invoice {
                id: InvoiceId(id),
                user,
                stars,
                amount,
                payload,
                created_at: now,
                expires_at: now.saturating_add(ttl_ms),
            })
        })
    }

    /// The invoice whose payload is exactly `payload`, if we issued it.
    pub async fn by_payload(&self, payload: &str) -> Result<Option<Invoice>> {
        let Some(id) = parse_payload(payload) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT id, user_id, stars, amount, payload, created_at, expires_at \
             FROM invoices WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.store.pool())
        .await?;
        let invoice = row.as_ref().map(invoice_from_row).transpose()?;
        Ok(invoice.filter(|i| i.payload == payload))
    }
}

fn invoice_from_row(r: &AnyRow) -> Result<Invoice> {
    Ok(Invoice {
        id: InvoiceId(r.try_get("id")?),
        user: UserId(r.try_get("user_id")?),
        stars: r.try_get("stars")?,
        amount: Money::from_minor(r.try_get("amount")?),
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_foreign_shapes_are_not_invoices() {
        let p = payload_of(InvoiceId(42), 0xabc);
        assert_eq!(p, "inv:42:0000000000000abc");
        assert_eq!(parse_payload(&p), Some(InvoiceId(42)));
        for bad in [
            "inv:42:abc",
            "inv:0:0000000000000abc",
            "inv:x:0000000000000abc",
            "v1:42:100:0000000000000abc",
            "inv:42:0000000000000abc:extra",
            "",
        ] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
    }
}
