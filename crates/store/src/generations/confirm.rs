//! The confirmation: the pending row, its checks, its funding and its hold
//! in one transaction, statement by statement on SQLite and through
//! [`super::batch`] on PostgreSQL.

use kiebot_domain::{GenerationId, Money};
use sqlx::{AnyConnection, Row};

use super::batch::{Confirmation, OwnedDialogueAfter};
use super::new::{Creation, DialogueAfter, Funding, NewGeneration, bind_new_row};
use super::row::Generations;
use crate::{Engine, Result, StoreError, ledger, now_ms};

impl Generations<'_> {
    /// Confirms a generation paid from the wallet, in one transaction: the
    /// row (`pending`) keyed by `draft_key`, the checks (user not blocked,
    /// fewer than `max_active` active generations, enough available money)
    /// and the hold. A repeated `draft_key` returns [`Creation::AlreadyExists`]
    /// and changes nothing.
    pub async fn create_pending(&self, new: &NewGeneration) -> Result<Creation> {
        self.create(new, &Funding::Wallet, None).await
    }

    /// [`create_pending`](Self::create_pending) with the free use or admin
    /// budget of `funding` taken in the same transaction (and only when the
    /// generation is created: a repeated `draft_key` takes nothing), and
    /// the user's dialogue `then` stored in it when the generation is
    /// created (a repeated draft key leaves the dialogue as it is): the
    /// bot's "confirmed" state never exists without its generation, nor the
    /// generation without it.
    pub async fn confirm(
        &self,
        new: &NewGeneration,
        funding: &Funding,
        then: &DialogueAfter<'_>,
    ) -> Result<Creation> {
        self.create(new, funding, Some(then)).await
    }

    async fn create(
        &self,
        new: &NewGeneration,
        funding: &Funding,
        then: Option<&DialogueAfter<'_>>,
    ) -> Result<Creation> {
        if new.price < Money::ZERO {
            return Err(StoreError::InvalidAmount {
                amount: new.price,
                why: "a price cannot be negative",
            });
        }
        match funding {
            Funding::Wallet => {}
            Funding::FreeQuota { .. } | Funding::AdminBudget { .. } if new.price.is_positive() => {
                // Both would pay: the wallet must not be held as well.
                return Err(StoreError::InvalidAmount {
                    amount: new.price,
                    why: "a generation paid by a free use or a budget has no wallet price",
                });
            }
            Funding::AdminBudget { amount } if !amount.is_positive() => {
                return Err(StoreError::InvalidAmount {
                    amount: *amount,
                    why: "a budget pays a positive amount",
                });
            }
            Funding::FreeQuota { .. } | Funding::AdminBudget { .. } => {}
        }
        match self.store().engine() {
            Engine::Postgres => {
                let c = Confirmation {
                    new: new.clone(),
                    funding: funding.clone(),
                    then: then.map(|t| OwnedDialogueAfter {
                        state_json: t.state_json.to_owned(),
                        id_field: t.id_field.to_owned(),
                        ttl: t.ttl,
                    }),
                };
                self.store().confirms.confirm(self.store().pool(), c).await
            }
            Engine::Sqlite => {
                write_tx!(self.store(), |conn| create_in(
                    conn,
                    new,
                    funding,
                    then,
                    now_ms()
                )
                .await)
            }
        }
    }
}

/// The confirmation statement by statement (SQLite, where statements cost no
/// round trip). `kiebot_create_generation` mirrors it on PostgreSQL.
async fn create_in(
    conn: &mut AnyConnection,
    new: &NewGeneration,
    funding: &Funding,
    then: Option<&DialogueAfter<'_>>,
    now: i64,
) -> Result<Creation> {
    let (free_day, budget_spent) = match funding {
        Funding::Wallet => (None, None),
        Funding::FreeQuota { day, .. } => (Some(day.as_str()), None),
        Funding::AdminBudget { amount } => (None, Some(amount.minor())),
    };
    // The deciding write: the draft key is unique, so a second tap (even a
    // concurrent one, which waits for the first to commit) inserts nothing.
    let inserted = bind_new_row(
        sqlx::query(
            "INSERT INTO generations (user_id, draft_key, model, params, request, price, status, \
                 chat_id, deadline_at, created_at, updated_at, \
                 submit_attempts, poll_attempts, delivery_attempts, free_day, budget_spent, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $9, 0, 0, 0, $10, $11, $12) \
             ON CONFLICT (draft_key) DO NOTHING RETURNING id",
        ),
        new,
        now,
    )
    .bind(free_day)
    .bind(budget_spent)
    .bind(new.traceparent.as_deref())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
            StoreError::not_found("user", new.user)
        }
        _ => StoreError::Db(e),
    })?;

    let inserted: Option<i64> = inserted.map(|r| r.try_get("id")).transpose()?;
    let Some(id) = inserted.map(GenerationId) else {
        let row = sqlx::query("SELECT id, user_id FROM generations WHERE draft_key = $1")
            .bind(new.draft_key.as_str())
            .fetch_one(&mut *conn)
            .await?;
        if row.try_get::<i64, _>("user_id")? != new.user.0 {
            return Err(StoreError::KeyConflict {
                key: new.draft_key.clone(),
            });
        }
        return Ok(Creation::AlreadyExists(GenerationId(row.try_get("id")?)));
    };

    // Locks the user's row on Postgres, so that concurrent confirmations of
    // one user count each other's generations.
    let blocked = sqlx::query("UPDATE users SET last_seen_at = $2 WHERE id = $1 RETURNING blocked")
        .bind(new.user.0)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("user", new.user))?;
    if crate::sql::get_bool(&blocked, "blocked")? {
        return Err(StoreError::Blocked { user: new.user });
    }

    let others: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM generations \
         WHERE user_id = $1 AND status IN ('pending', 'submitted') AND id <> $2",
    )
    .bind(new.user.0)
    .bind(id.0)
    .fetch_one(&mut *conn)
    .await?;
    if others >= i64::from(new.max_active) {
        return Err(StoreError::TooManyActive {
            limit: new.max_active,
        });
    }

    match funding {
        Funding::Wallet => {}
        Funding::FreeQuota { day, limit } => {
            if !crate::free_usage::consume_in(conn, new.user, &new.model, day, *limit).await? {
                return Err(StoreError::FreeQuotaUsedUp { limit: *limit });
            }
        }
        Funding::AdminBudget { amount } => {
            // One conditional statement: concurrent confirmations of one
            // admin (already serialised on the user row above) never take
            // the budget below zero.
            let left: Option<i64> = sqlx::query_scalar(
                "UPDATE users SET admin_budget = admin_budget - $2 \
                 WHERE id = $1 AND admin_budget >= $2 RETURNING admin_budget",
            )
            .bind(new.user.0)
            .bind(amount.minor())
            .fetch_optional(&mut *conn)
            .await?;
            if left.is_none() {
                let available: Option<i64> =
                    sqlx::query_scalar("SELECT admin_budget FROM users WHERE id = $1")
                        .bind(new.user.0)
                        .fetch_one(&mut *conn)
                        .await?;
                return Err(StoreError::BudgetExhausted {
                    available: available.map(Money::from_minor),
                    requested: *amount,
                });
            }
        }
    }

    if new.price.is_positive() {
        ledger::hold_in(conn, new.user, id, new.price, now).await?;
    }
    if let Some(then) = then {
        let mut state: serde_json::Value = serde_json::from_str(then.state_json)
            .map_err(|e| StoreError::Corrupt(format!("dialogue is not JSON: {e}")))?;
        let Some(fields) = state.as_object_mut() else {
            return Err(StoreError::Corrupt("dialogue is not a JSON object".into()));
        };
        fields.insert(then.id_field.to_owned(), serde_json::Value::from(id.0));
        crate::dialogues::save_in(conn, new.user, &state.to_string(), now, then.ttl).await?;
    }
    Ok(Creation::Created(id))
}
