//! The confirmation on PostgreSQL, and group commit for it.
//!
//! A confirmation is one call of `kiebot_create_generation`: one round trip,
//! one commit, and seven statements each started, checked and planned for a
//! single row. The confirmations that arrive while earlier ones are being
//! written go together into one call of `kiebot_create_generations` and one
//! commit. There, the plain ones (paid from the wallet, nothing to refuse)
//! are written by one statement for the whole batch; any other goes through
//! the single function in its own subtransaction, so a refusal (no money,
//! too many active, blocked) undoes that element alone. The migration that
//! defines the function explains why both paths mean the same.
//!
//! Nothing waits to fill a batch. While no more than [`DIRECT`]
//! confirmations are being written, a new one is written at once, on its own
//! (through the single function). Beyond that, confirmations queue for the
//! batch writer, which writes at most [`SLOTS`] batches at a time and
//! gathers what arrived meanwhile, up to [`MAX_BATCH`]. So a lightly loaded
//! bot pays no latency for batching, and a busy one writes fewer, larger
//! transactions exactly when it needs to.
//!
//! Each caller still gets its own outcome, typed as the single call types
//! it. A batch that fails as a whole for any other reason than a refusal is
//! written again element by element, so one bad element cannot fail its
//! neighbours.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use sqlx::{AnyPool, Row};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;

use super::new::{
    Creation, DialogueAfter, Funding, NewGeneration, bind_new_row, deadline_at, funding_args,
    refusal_of_message,
};
use super::row::REFUSAL_SQLSTATE;
use crate::{GenerationId, Result, StoreError, now_ms};

/// The most confirmations written in one call. Those that are not plain
/// each take a subtransaction with its own transaction id; PostgreSQL tracks
/// up to 64 of them per transaction cheaply, so a batch stays well under
/// that.
pub(crate) const MAX_BATCH: usize = 32;

/// While no more confirmations than this are being written (this one
/// included), each is written directly, on its own. A light load is written
/// as before batching, with no wait at all; a heavy one, where waiting is
/// the price of capacity, is batched whole. Counting the batched ones too
/// matters: a single call costs PostgreSQL about three times what one
/// element of a batch of ten costs, so direct writes running beside the
/// batches under load would spend the capacity batching saves.
const DIRECT: usize = 3;

/// Fewer confirmations than this are written by separate calls at once:
/// the batch function's own statements (locking, choosing the plain
/// elements, planning the multi-table insert) have a fixed cost. Measured
/// in psql: a batch of two took 1.9 ms, a single call 1.0 ms, and separate
/// calls run in parallel besides; a batch of eight took 1.7–2.6 ms.
const MIN_BATCH: usize = 4;

/// The most bytes of arguments in one call (an estimate, see [`weight`]):
/// with long prompts, fewer than [`MAX_BATCH`] confirmations make a batch,
/// so one call never parses more than this. (Before sqlx 0.9.1 set
/// `TCP_NODELAY`, a statement larger than one TLS record (16 KiB) waited
/// 40 ms for a delayed ACK; batches were kept under it then. In the
/// front-bot benchmark a 12 KiB and a 40 KB cap now cost the same CPU per
/// confirmation.)
const MAX_BATCH_BYTES: usize = 32 * 1024;

/// Batches written at the same time. One keeps batches largest; a second
/// lets the next batch start while the first one commits. Three, four or
/// eight gave smaller batches and no better latency in the front-bot
/// benchmark.
const SLOTS: usize = 2;

/// A confirmation with everything it needs, owned, so it can wait in the
/// queue.
#[derive(Debug, Clone)]
pub(crate) struct Confirmation {
    pub(crate) new: NewGeneration,
    pub(crate) funding: Funding,
    pub(crate) then: Option<OwnedDialogueAfter>,
}

/// [`DialogueAfter`], owned.
#[derive(Debug, Clone)]
pub(crate) struct OwnedDialogueAfter {
    pub(crate) state_json: String,
    pub(crate) id_field: String,
    pub(crate) ttl: std::time::Duration,
}

type Request = (Confirmation, oneshot::Sender<Result<Creation>>);

/// The confirmations queue of one pool (shared by the store's clones). The
/// task that writes them starts with the first confirmation and ends when
/// the last clone of the store is dropped.
#[derive(Debug, Default)]
pub(crate) struct ConfirmBatcher {
    queue: OnceLock<mpsc::UnboundedSender<Request>>,
    /// Confirmations being written, directly or in batches, or waiting for
    /// a batch.
    in_flight: AtomicUsize,
}

/// Counts a confirmation while it is being written.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Counts one more; returns the guard and the count with this one.
    fn enter(counter: &'a AtomicUsize) -> (Self, usize) {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        (InFlight(counter), before + 1)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConfirmBatcher {
    /// Writes `c`: at once and on its own while few confirmations are being
    /// written, otherwise with whatever other confirmations are waiting.
    pub(crate) async fn confirm(&self, pool: &AnyPool, c: Confirmation) -> Result<Creation> {
        let (_counted, writing) = InFlight::enter(&self.in_flight);
        if writing <= DIRECT {
            return write_one(pool, &c).await;
        }
        let Some(queue) = self.queue(pool) else {
            // Outside a Tokio runtime there is no task to hand it to.
            return write_one(pool, &c).await;
        };
        let (reply, outcome) = oneshot::channel();
        // Kept for the rare case below; a confirmation is a few short strings.
        let again = c.clone();
        if queue.send((c, reply)).is_err() {
            // The task is gone with the runtime that started it (a store
            // shared across runtimes, as tests do): write it directly.
            return write_one(pool, &again).await;
        }
        match outcome.await {
            Ok(outcome) => outcome,
            // The writer stopped without an answer (its runtime is shutting
            // down), so whether it committed is unknown. Writing again is
            // safe: the draft key makes a second write find the first.
            Err(_) => write_one(pool, &again).await,
        }
    }

    fn queue(&self, pool: &AnyPool) -> Option<&mpsc::UnboundedSender<Request>> {
        if let Some(q) = self.queue.get() {
            return Some(q);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(run(pool.clone(), rx));
            tx
        }))
    }
}

/// Takes confirmations off the queue in batches while slots are free. The
/// task holds the pool, not the store, so dropping the last store clone
/// closes the queue and ends it.
async fn run(pool: AnyPool, mut queue: mpsc::UnboundedReceiver<Request>) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    // A confirmation taken off the queue that did not fit the last batch.
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match queue.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        // Waiting for a slot is what lets the next batch gather.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut bytes = weight(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            bytes += weight(&next.0);
            if bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write_batch(&pool, batch).await;
            drop(slot);
        });
    }
}

/// About how many bytes `c` adds to a batch's JSON: its texts, a fifth more
/// for escaping, and the fixed fields.
fn weight(c: &Confirmation) -> usize {
    let new = &c.new;
    let texts = new.params_json.len()
        + new.request_json.len()
        + new.draft_key.len()
        + c.then.as_ref().map_or(0, |t| t.state_json.len());
    texts + texts / 5 + 400
}

async fn write_batch(pool: &AnyPool, mut batch: Vec<Request>) {
    if batch.len() < MIN_BATCH {
        write_each(pool, batch).await;
        return;
    }
    // Users in one order in every batch, so two batches running at once
    // (here or in another process) lock rows in the same order.
    batch.sort_by_key(|(c, _)| c.new.user.0);
    let size = batch.len();
    let written = write_many(pool, &batch)
        .instrument(tracing::debug_span!("confirm_batch", size))
        .await;
    match written {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size, "confirmation batch failed; writing its confirmations one by one");
            write_each(pool, batch).await;
        }
    }
}

/// Each confirmation in its own call, all at once.
async fn write_each(pool: &AnyPool, batch: Vec<Request>) {
    let each = batch.into_iter().map(|(c, reply)| async move {
        let _ = reply.send(write_one(pool, &c).await);
    });
    futures::future::join_all(each).await;
}

/// One confirmation on its own: `kiebot_create_generation`.
async fn write_one(pool: &AnyPool, c: &Confirmation) -> Result<Creation> {
    let then = c.then.as_ref().map(|t| DialogueAfter {
        state_json: &t.state_json,
        id_field: &t.id_field,
        ttl: t.ttl,
    });
    create_pg(pool, &c.new, &c.funding, then.as_ref()).await
}

/// One element of `kiebot_create_generations`' JSON argument: the single
/// function's arguments by name.
#[derive(Serialize)]
struct Element<'a> {
    idx: usize,
    user_id: i64,
    draft_key: &'a str,
    model: &'a str,
    params: &'a str,
    request: &'a str,
    price: i64,
    chat_id: i64,
    deadline_at: i64,
    max_active: i64,
    free_day: Option<&'a str>,
    free_limit: Option<i64>,
    budget: Option<i64>,
    traceparent: Option<&'a str>,
    dialogue: Option<&'a str>,
    dialogue_field: Option<&'a str>,
    dialogue_expires: Option<i64>,
}

/// The whole batch in one call; each element's outcome in batch order.
/// `Err` only when the call failed as a whole (after its retries).
async fn write_many(pool: &AnyPool, batch: &[Request]) -> Result<Vec<Result<Creation>>> {
    crate::tx::retrying_pg("confirmation batch", || async {
        let now = now_ms();
        let elements: Vec<Element<'_>> = batch
            .iter()
            .enumerate()
            .map(|(idx, (c, _))| element(idx, c, now))
            .collect();
        let json = serde_json::to_string(&elements)
            .map_err(|e| StoreError::Corrupt(format!("confirmation batch: {e}")))?;
        let rows = sqlx::query(
            "SELECT out_idx, out_created, out_id, out_refusal \
             FROM kiebot_create_generations($1, $2)",
        )
        .bind(json)
        .bind(now)
        .fetch_all(pool)
        .await?;
        let mut outcomes: Vec<Option<Result<Creation>>> = batch.iter().map(|_| None).collect();
        for row in rows {
            let idx = usize::try_from(row.try_get::<i32, _>("out_idx")?).ok();
            let slot = idx.and_then(|i| outcomes.get_mut(i).map(|o| (i, o)));
            let Some((i, slot)) = slot else {
                return Err(StoreError::Corrupt(
                    "confirmation batch answered for an element it was not given".into(),
                ));
            };
            let (c, _) = &batch[i];
            *slot = Some(outcome_of(&row, c)?);
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    StoreError::Corrupt("confirmation batch left an element unanswered".into())
                })
            })
            .collect()
    })
    .await
}

fn element(idx: usize, c: &Confirmation, now: i64) -> Element<'_> {
    let (free_day, free_limit, budget) = funding_args(&c.funding);
    let new = &c.new;
    Element {
        idx,
        user_id: new.user.0,
        draft_key: &new.draft_key,
        model: new.model.as_str(),
        params: &new.params_json,
        request: &new.request_json,
        price: new.price.minor(),
        chat_id: new.chat_id,
        deadline_at: deadline_at(new, now),
        max_active: i64::from(new.max_active),
        free_day,
        free_limit,
        budget,
        traceparent: new.traceparent.as_deref(),
        dialogue: c.then.as_ref().map(|t| t.state_json.as_str()),
        dialogue_field: c.then.as_ref().map(|t| t.id_field.as_str()),
        dialogue_expires: c
            .then
            .as_ref()
            .map(|t| now.saturating_add(crate::sql::millis(t.ttl))),
    }
}

/// One element's row: its creation, or its refusal typed as the single
/// call types it.
fn outcome_of(row: &sqlx::any::AnyRow, c: &Confirmation) -> Result<Result<Creation>> {
    if let Some(refusal) = row.try_get::<Option<String>, _>("out_refusal")? {
        return Ok(Err(refusal_of_message(&refusal, &c.new, &c.funding)
            .unwrap_or_else(|| {
                StoreError::Corrupt(format!(
                    "confirmation refused for an unknown reason: {refusal}"
                ))
            })));
    }
    let id = GenerationId(row.try_get("out_id")?);
    Ok(Ok(if crate::sql::get_bool(row, "out_created")? {
        Creation::Created(id)
    } else {
        Creation::AlreadyExists(id)
    }))
}

/// The confirmation on PostgreSQL: `create_in` as one call of the
/// `kiebot_create_generation` function (see its migration), one round trip
/// instead of eight, retried like a transaction when the server reports a
/// deadlock or serialization failure.
async fn create_pg(
    pool: &sqlx::AnyPool,
    new: &NewGeneration,
    funding: &Funding,
    then: Option<&DialogueAfter<'_>>,
) -> Result<Creation> {
    let (free_day, free_limit, budget) = funding_args(funding);
    crate::tx::retrying_pg("confirmation", || async {
        let now = now_ms();
        let expires = then.map(|t| now.saturating_add(crate::sql::millis(t.ttl)));
        let row = bind_new_row(
            sqlx::query(
                "SELECT out_created, out_id FROM kiebot_create_generation(\
                     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            ),
            new,
            now,
        )
        .bind(i64::from(new.max_active))
        .bind(free_day)
        .bind(free_limit)
        .bind(budget)
        .bind(new.traceparent.as_deref())
        .bind(then.map(|t| t.state_json))
        .bind(then.map(|t| t.id_field))
        .bind(expires)
        .fetch_one(pool)
        .await
        .map_err(|e| refusal_of_pg(e, new, funding))?;
        let id = GenerationId(row.try_get("out_id")?);
        Ok(if crate::sql::get_bool(&row, "out_created")? {
            Creation::Created(id)
        } else {
            Creation::AlreadyExists(id)
        })
    })
    .await
}

/// The typed error behind a `kiebot_create_generation` refusal (SQLSTATE
/// KB001, message `<kind>[ <number>]`); any other error as it is.
fn refusal_of_pg(e: sqlx::Error, new: &NewGeneration, funding: &Funding) -> StoreError {
    let sqlx::Error::Database(d) = &e else {
        return StoreError::Db(e);
    };
    if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation {
        return StoreError::not_found("user", new.user);
    }
    if d.code().as_deref() != Some(REFUSAL_SQLSTATE) {
        return StoreError::Db(e);
    }
    refusal_of_message(d.message(), new, funding).unwrap_or(StoreError::Db(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use kiebot_domain::{ModelId, Money, UserId};
    use kiebot_testkit::TestDb;

    use super::*;
    use crate::Store;

    fn confirmation(user: i64, draft: &str, price: i64) -> Confirmation {
        Confirmation {
            new: NewGeneration {
                user: UserId(user),
                draft_key: draft.to_owned(),
                model: ModelId::parse("google/nano-banana").unwrap(),
                params_json: r#"{"prompt":"a \"quoted\" cat"}"#.to_owned(),
                request_json: r#"{"model":"google/nano-banana","input":{}}"#.to_owned(),
                price: Money::from_minor(price),
                chat_id: 7,
                deadline_secs: 600,
                max_active: 5,
                traceparent: None,
            },
            funding: Funding::Wallet,
            then: None,
        }
    }

    async fn funded(store: &Store, user: i64, minor: i64) {
        store.users().ensure(UserId(user)).await.unwrap();
        store
            .ledger()
            .topup(
                UserId(user),
                Money::from_minor(minor),
                &format!("seed:{user}"),
                None,
            )
            .await
            .unwrap();
    }

    /// Writes `items` as one batch, as the writer task would, and returns
    /// each one's outcome in order.
    async fn write(store: &Store, items: Vec<Confirmation>) -> Vec<Result<Creation>> {
        let (batch, replies): (Vec<Request>, Vec<_>) = items
            .into_iter()
            .map(|c| {
                let (tx, rx) = oneshot::channel();
                ((c, tx), rx)
            })
            .unzip();
        write_batch(store.pool(), batch).await;
        let mut out = Vec::new();
        for r in replies {
            out.push(r.await.expect("every confirmation is answered"));
        }
        out
    }

    async fn generations(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM generations")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_gives_each_confirmation_its_own_outcome() {
        let db = TestDb::postgres().await;
        let store = Store::connect(db.url()).await.unwrap();
        store.migrate().await.unwrap();
        for user in [1, 3, 4, 5, 6, 7, 8] {
            funded(&store, user, 1_000).await;
        }
        funded(&store, 2, 50).await;
        store.users().set_blocked(UserId(3), true).await.unwrap();
        // User 7 confirmed this draft before the batch.
        let earlier = write_one(store.pool(), &confirmation(7, "7:a", 100))
            .await
            .unwrap()
            .id();

        let mut free = confirmation(4, "4:free", 0);
        free.funding = Funding::FreeQuota {
            day: "2026-11-25".into(),
            limit: 1,
        };
        let mut free_again = confirmation(4, "4:free-again", 0);
        free_again.funding = free.funding.clone();
        let then = |c: &mut Confirmation| {
            c.then = Some(OwnedDialogueAfter {
                state_json: r#"{"s":"confirmed","generation":0}"#.into(),
                id_field: "generation".into(),
                ttl: std::time::Duration::from_secs(60),
            });
        };
        let mut with_dialogue = confirmation(1, "1:b", 100);
        then(&mut with_dialogue);
        let mut plain_with_dialogue = confirmation(5, "5:a", 250);
        then(&mut plain_with_dialogue);
        let mut at_limit = confirmation(8, "8:a", 100);
        at_limit.new.max_active = 0;
        let out = write(
            &store,
            vec![
                confirmation(1, "1:a", 300),
                confirmation(2, "2:a", 100), // 50 available
                confirmation(3, "3:a", 100), // blocked
                confirmation(404, "x:a", 0), // no such user
                confirmation(1, "1:a", 300), // a double tap in the same batch
                with_dialogue,
                free,
                free_again, // the one free use is taken
                plain_with_dialogue,
                confirmation(6, "6:a", 1_000), // exactly what is there
                confirmation(7, "7:a", 100),   // a tap after a restart
                at_limit,
            ],
        )
        .await;

        let created = |i: usize| match &out[i] {
            Ok(Creation::Created(id)) => *id,
            other => panic!("element {i}: {other:?}"),
        };
        let first = created(0);
        assert!(
            matches!(out[1], Err(StoreError::InsufficientFunds { available, requested })
                if available == Money::from_minor(50) && requested == Money::from_minor(100)),
            "{:?}",
            out[1]
        );
        assert!(matches!(out[2], Err(StoreError::Blocked { user }) if user == UserId(3)));
        assert!(
            matches!(out[3], Err(StoreError::NotFound { what: "user", .. })),
            "{:?}",
            out[3]
        );
        assert!(matches!(out[4], Ok(Creation::AlreadyExists(id)) if id == first));
        let second = created(5);
        created(6);
        assert!(
            matches!(out[7], Err(StoreError::FreeQuotaUsedUp { limit: 1 })),
            "{:?}",
            out[7]
        );
        let fifth = created(8);
        let sixth = created(9);
        assert!(matches!(out[10], Ok(Creation::AlreadyExists(id)) if id == earlier));
        assert!(
            matches!(out[11], Err(StoreError::TooManyActive { limit: 0 })),
            "{:?}",
            out[11]
        );

        // Refused elements left nothing behind; the others hold their money.
        assert_eq!(generations(&store).await, 6);
        let store = &store;
        let wallet = |u| async move { store.ledger().wallet(UserId(u)).await.unwrap() };
        assert_eq!(wallet(1).await.held, Money::from_minor(400));
        assert_eq!(wallet(2).await.held, Money::ZERO);
        assert_eq!(wallet(5).await.held, Money::from_minor(250));
        assert_eq!(wallet(6).await.held, Money::from_minor(1_000));
        assert_eq!(wallet(8).await.held, Money::ZERO);
        for (user, id) in [(1, second), (5, fifth)] {
            let state = store
                .dialogues()
                .load(UserId(user), now_ms())
                .await
                .unwrap()
                .expect("the dialogue written with the generation");
            let state: serde_json::Value = serde_json::from_str(&state).unwrap();
            assert_eq!(state["generation"], id.0, "user {user}");
        }
        for id in [first, fifth, sixth] {
            let g = store.generations().get(id).await.unwrap().unwrap();
            assert_eq!(g.params_json, r#"{"prompt":"a \"quoted\" cat"}"#);
            assert_eq!(g.status, kiebot_domain::GenerationStatus::Pending);
            let hold = store.ledger().hold_of(id).await.unwrap().expect("a hold");
            assert_eq!(hold.amount, g.price);
        }
        assert!(store.ledger().check().await.unwrap().is_empty());
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_fails_as_a_whole_is_written_one_by_one() {
        let db = TestDb::postgres().await;
        let store = Store::connect(db.url()).await.unwrap();
        store.migrate().await.unwrap();
        for user in 1..=3 {
            funded(&store, user, 1_000).await;
        }
        // A negative price breaks a table constraint, which is an error of
        // the whole call, not a refusal: its neighbours must not pay for it.
        let batch = vec![
            confirmation(1, "1:a", 100),
            confirmation(2, "2:a", -5),
            confirmation(2, "2:b", 200),
            confirmation(3, "3:a", 300),
        ];
        assert!(batch.len() >= MIN_BATCH, "written by the batch function");
        let out = write(&store, batch).await;
        assert!(matches!(out[0], Ok(Creation::Created(_))), "{:?}", out[0]);
        assert!(matches!(out[1], Err(StoreError::Db(_))), "{:?}", out[1]);
        assert!(matches!(out[2], Ok(Creation::Created(_))), "{:?}", out[2]);
        assert!(matches!(out[3], Ok(Creation::Created(_))), "{:?}", out[3]);
        assert_eq!(generations(&store).await, 3);
        assert!(store.ledger().check().await.unwrap().is_empty());
        store.close().await;
    }
}
