//! The ledger: the rules every write of `wallets` and `ledger_entries`
//! follows. On SQLite this module makes every such write; on PostgreSQL the
//! hold of a confirmation and the capture or release of a finished
//! generation are made by server-side functions (crates/store/sql/postgres)
//! that append the same entries under the same keys and conditions.
//!
//! A wallet is two numbers: `balance` (money the user has) and `held` (the
//! part reserved for generations in flight); `available = balance - held`.
//! Every change appends one entry, in the same transaction:
//!
//! | kind      | balance | held | key                       |
//! |-----------|---------|------|---------------------------|
//! | `topup`   | +a      |      | caller's (`topup:<charge>`) |
//! | `bonus`   | +a      |      | caller's (`promo:..`, `referral:..`) |
//! | `adjust`  | ±a      |      | caller's (admin action; `referral-reversal:<invitee>`) |
//! | `refund`  | -a      |      | caller's (`refund:<charge>`) |
//! | `hold`    |         | +a   | `hold:<generation>`       |
//! | `capture` | -a      | -a   | `capture:<generation>`    |
//! | `release` |         | -a   | `release:<generation>`    |
//!
//! so the wallet can always be recomputed from the entries ([`Ledger::check`]).
//! The database refuses a wallet with `held < 0` or `balance < held`, and every
//! debit is a conditional `UPDATE` that matches no row when the money is not
//! there, so concurrent spending can never overdraw.
//!
//! Each operation is keyed: the entry is inserted with
//! `ON CONFLICT (key) DO NOTHING`, and when the key exists the operation
//! returns the first entry ([`Applied::fresh`] is `false`) and changes nothing.
//!
//! Capture and release are mutually exclusive through the `holds` row: each
//! starts with `UPDATE holds SET state = .. WHERE state = 'held'`, and only
//! the one that changes the row moves money.
//!
//! The `*_in` functions take an open transaction, so that other repositories
//! (generations, payments, promos) move money inside their own transaction
//! with the same SQL.

use std::fmt;
use std::str::FromStr;

use kiebot_domain::{GenerationId, Money, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::payments::PaymentId;
use crate::sql::get_parsed;
use crate::{Result, Store, StoreError, audit, now_ms};

macro_rules! entry_columns {
    () => {
        "id, user_id, kind, amount, generation_id, payment_id, key, note, created_at"
    };
}

/// A ledger entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub i64);

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Money paid in.
    Topup,
    /// Money reserved for a generation.
    Hold,
    /// A hold turned into a charge (the generation succeeded).
    Capture,
    /// A hold given back (the generation failed, expired or was canceled).
    Release,
    /// A top-up paid back to the payer.
    Refund,
    /// A signed correction by an admin (audited).
    Adjust,
    /// Free money: promo codes, referral bonuses.
    Bonus,
}

impl EntryKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Topup => "topup",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
            EntryKind::Adjust => "adjust",
            EntryKind::Bonus => "bonus",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryKind {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Ok(match s {
            "topup" => EntryKind::Topup,
            "hold" => EntryKind::Hold,
            "capture" => EntryKind::Capture,
            "release" => EntryKind::Release,
            "refund" => EntryKind::Refund,
            "adjust" => EntryKind::Adjust,
            "bonus" => EntryKind::Bonus,
            _ => return Err(()),
        })
    }
}

/// Where a hold is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldState {
    /// Reserved; counts in the wallet's `held`.
    Held,
    /// Charged.
    Captured,
    /// Given back.
    Released,
}

impl HoldState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Held => "held",
            HoldState::Captured => "captured",
            HoldState::Released => "released",
        }
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HoldState {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Ok(match s {
            "held" => HoldState::Held,
            "captured" => HoldState::Captured,
            "released" => HoldState::Released,
            _ => return Err(()),
        })
    }
}

/// A wallet's two numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wallet {
    /// Money the user has, including the held part.
    pub balance: Money,
    /// The part reserved for generations in flight.
    pub held: Money,
}

impl Wallet {
    /// What the user can spend now: balance minus held.
    pub fn available(&self) -> Money {
        Money::from_minor(self.balance.minor() - self.held.minor())
    }
}

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Row id (grows with time).
    pub id: EntryId,
    /// Whose wallet.
    pub user: UserId,
    /// What happened.
    pub kind: EntryKind,
    /// Positive, except for an `adjust`, which carries its sign.
    pub amount: Money,
    /// The generation behind a hold, capture or release.
    pub generation: Option<GenerationId>,
    /// The payment behind a top-up or refund.
    pub payment: Option<PaymentId>,
    /// The idempotency key.
    pub key: String,
    /// A human note (promo code, admin reason).
    pub note: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The result of a ledger operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entry of the operation: new, or the first one for a repeated key.
    pub entry: Entry,
    /// `true` when this call changed the wallet, `false` when the operation
    /// had already been applied and nothing changed.
    pub fresh: bool,
}

/// A generation's hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The generation.
    pub generation: GenerationId,
    /// Whose money.
    pub user: UserId,
    /// How much.
    pub amount: Money,
    /// Held, captured or released.
    pub state: HoldState,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When it was captured or released (unix milliseconds).
    pub settled_at: Option<i64>,
}

/// A wallet whose stored numbers disagree with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Whose wallet.
    pub user: UserId,
    /// The wallet row, or `None` when entries exist without one.
    pub stored: Option<Wallet>,
    /// The wallet recomputed from the entries.
    pub expected: Wallet,
    /// The sum of the user's holds still in state `held` (must equal
    /// `expected.held`).
    pub open_holds: Money,
}

/// Wallets and the append-only ledger. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Ledger<'a> {
    store: &'a Store,
}

impl<'a> Ledger<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Ledger { store }
    }

    /// Credits a payment. `key` identifies it (for Stars,
    /// [`Payments::record_stars_payment`](crate::Payments::record_stars_payment)
    /// uses `topup:<charge id>`).
    pub async fn topup(
        &self,
        user: UserId,
        amount: Money,
        key: &str,
        payment: Option<PaymentId>,
    ) -> Result<Applied> {
        let e = NewEntry {
            payment,
            ..NewEntry::new(user, EntryKind::Topup, amount, key)
        };
        write_tx!(self.store, |conn| change_balance_in(conn, &e, now_ms())
            .await)
    }

    /// Credits free money (promo, referral, goodwill).
    pub async fn bonus(
        &self,
        user: UserId,
        amount: Money,
        key: &str,
        note: &str,
    ) -> Result<Applied> {
        let e = NewEntry {
            note: Some(note),
            ..NewEntry::new(user, EntryKind::Bonus, amount, key)
        };
        write_tx!(self.store, |conn| change_balance_in(conn, &e, now_ms())
            .await)
    }

    /// An admin's signed correction, audited in the same transaction. A
    /// negative adjustment cannot take the available balance below zero
    /// ([`StoreError::InsufficientFunds`]).
    pub async fn adjust(
        &self,
        user: UserId,
        amount: Money,
        key: &str,
        actor: UserId,
        reason: &str,
    ) -> Result<Applied> {
        let e = NewEntry {
            note: Some(reason),
            ..NewEntry::new(user, EntryKind::Adjust, amount, key)
        };
        write_tx!(self.store, |conn| {
            let now = now_ms();
            let applied = change_balance_in(conn, &e, now).await?;
            if applied.fresh {
                audit::record_in(conn, actor, "adjust", Some(user), Some(amount), reason, now)
                    .await?;
            }
            Ok::<_, StoreError>(applied)
        })
    }

    /// Pays a top-up back: the balance goes down by `amount`, which must be
    /// available (held money stays held).
    pub async fn refund(
        &self,
        user: UserId,
        amount: Money,
        key: &str,
        payment: Option<PaymentId>,
    ) -> Result<Applied> {
        let e = NewEntry {
            payment,
            ..NewEntry::new(user, EntryKind::Refund, amount, key)
        };
        write_tx!(self.store, |conn| change_balance_in(conn, &e, now_ms())
            .await)
    }

    /// Reserves `amount` of the user's available balance for `generation`
    /// (key `hold:<generation>`); [`StoreError::InsufficientFunds`] changes
    /// nothing.
    pub async fn hold(
        &self,
        user: UserId,
        generation: GenerationId,
        amount: Money,
    ) -> Result<Applied> {
        write_tx!(self.store, |conn| hold_in(
            conn,
            user,
            generation,
            amount,
            now_ms()
        )
        .await)
    }

    /// Charges the generation's hold (key `capture:<generation>`). Repeating
    /// returns the first capture; a released hold is refused with
    /// [`StoreError::HoldAlreadySettled`].
    pub async fn capture(&self, generation: GenerationId) -> Result<Applied> {
        write_tx!(self.store, |conn| {
            settle_in(conn, generation, HoldState::Captured, now_ms()).await
        })
    }

    /// Gives the generation's hold back (key `release:<generation>`).
    /// Repeating returns the first release; a captured hold is refused with
    /// [`StoreError::HoldAlreadySettled`].
    pub async fn release(&self, generation: GenerationId) -> Result<Applied> {
        write_tx!(self.store, |conn| {
            settle_in(conn, generation, HoldState::Released, now_ms()).await
        })
    }

    /// The user's wallet.
    pub async fn wallet(&self, user: UserId) -> Result<Wallet> {
        let mut conn = self.store.pool().acquire().await?;
        wallet_in(&mut conn, user).await
    }

    /// The generation's hold, if it has one.
    pub async fn hold_of(&self, generation: GenerationId) -> Result<Option<Hold>> {
        let row = sqlx::query(
            "SELECT generation_id, user_id, amount, state, created_at, settled_at \
             FROM holds WHERE generation_id = $1",
        )
        .bind(generation.0)
        .fetch_optional(self.store.pool())
        .await?;
        row.map(|r| {
            Ok(Hold {
                generation: GenerationId(r.try_get("generation_id")?),
                user: UserId(r.try_get("user_id")?),
                amount: Money::from_minor(r.try_get("amount")?),
                state: get_parsed(&r, "state")?,
                created_at: r.try_get("created_at")?,
                settled_at: r.try_get("settled_at")?,
            })
        })
        .transpose()
    }

    /// The user's latest entries, newest first.
    pub async fn entries(&self, user: UserId, limit: u32) -> Result<Vec<Entry>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger_entries WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(user.0)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// The entry with this key, if any.
    pub async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        let mut conn = self.store.pool().acquire().await?;
        entry_by_key(&mut conn, key).await
    }

    /// Recomputes every wallet from its entries (balance = topup + bonus +
    /// adjust - capture - refund; held = hold - capture - release) and the open
    /// holds, and reports each wallet that disagrees, including entries
    /// without a wallet row. Empty means the books balance.
    ///
    /// One statement, so both engines read one consistent snapshot.
    pub async fn check(&self) -> Result<Vec<Drift>> {
        let rows = sqlx::query(
            "WITH e AS ( \
                 SELECT user_id, \
                     CAST(SUM(CASE WHEN kind IN ('topup', 'bonus', 'adjust') THEN amount \
                                   WHEN kind IN ('capture', 'refund') THEN -amount \
                                   ELSE 0 END) AS BIGINT) AS balance, \
                     CAST(SUM(CASE WHEN kind = 'hold' THEN amount \
                                   WHEN kind IN ('capture', 'release') THEN -amount \
                                   ELSE 0 END) AS BIGINT) AS held \
                 FROM ledger_entries GROUP BY user_id), \
             h AS ( \
                 SELECT user_id, CAST(SUM(amount) AS BIGINT) AS open_holds \
                 FROM holds WHERE state = 'held' GROUP BY user_id), \
             ids AS ( \
                 SELECT user_id FROM wallets UNION SELECT user_id FROM e \
                 UNION SELECT user_id FROM h) \
             SELECT ids.user_id AS user_id, \
                 w.user_id AS wallet_user_id, w.balance AS balance, w.held AS held, \
                 COALESCE(e.balance, 0) AS expected_balance, \
                 COALESCE(e.held, 0) AS expected_held, \
                 COALESCE(h.open_holds, 0) AS open_holds \
             FROM ids \
             LEFT JOIN wallets w ON w.user_id = ids.user_id \
             LEFT JOIN e ON e.user_id = ids.user_id \
             LEFT JOIN h ON h.user_id = ids.user_id \
             WHERE w.user_id IS NULL \
                OR w.balance <> COALESCE(e.balance, 0) \
                OR w.held <> COALESCE(e.held, 0) \
                OR w.held <> COALESCE(h.open_holds, 0) \
             ORDER BY ids.user_id",
        )
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let stored = match r.try_get::<Option<i64>, _>("wallet_user_id")? {
                    Some(_) => Some(Wallet {
                        balance: Money::from_minor(r.try_get("balance")?),
                        held: Money::from_minor(r.try_get("held")?),
                    }),
                    None => None,
                };
                Ok(Drift {
                    user: UserId(r.try_get("user_id")?),
                    stored,
                    expected: Wallet {
                        balance: Money::from_minor(r.try_get("expected_balance")?),
                        held: Money::from_minor(r.try_get("expected_held")?),
                    },
                    open_holds: Money::from_minor(r.try_get("open_holds")?),
                })
            })
            .collect()
    }
}

/// An entry about to be appended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewEntry<'k> {
    pub(crate) user: UserId,
    pub(crate) kind: EntryKind,
    pub(crate) amount: Money,
    pub(crate) generation: Option<GenerationId>,
    pub(crate) payment: Option<PaymentId>,
    pub(crate) key: &'k str,
    pub(crate) note: Option<&'k str>,
}

impl<'k> NewEntry<'k> {
    pub(crate) fn new(user: UserId, kind: EntryKind, amount: Money, key: &'k str) -> Self {
        NewEntry {
            user,
            kind,
            amount,
            generation: None,
            payment: None,
            key,
            note: None,
        }
    }

    /// Whether `existing` (found under the same key) records this operation.
    fn is_repeated_by(&self, existing: &Entry) -> bool {
        existing.user == self.user
            && existing.kind == self.kind
            && existing.amount == self.amount
            && existing.generation == self.generation
    }
}

fn entry_from_row(r: &AnyRow) -> Result<Entry> {
    Ok(Entry {
        id: EntryId(r.try_get("id")?),
        user: UserId(r.try_get("user_id")?),
        kind: get_parsed(r, "kind")?,
        amount: Money::from_minor(r.try_get("amount")?),
        generation: r
            .try_get::<Option<i64>, _>("generation_id")?
            .map(GenerationId),
        payment: r.try_get::<Option<i64>, _>("payment_id")?.map(PaymentId),
        key: r.try_get("key")?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Appends the entry unless its key exists: `Some(entry)` when appended,
/// `None` when the key was taken (nothing written).
async fn insert_entry(
    conn: &mut AnyConnection,
    e: &NewEntry<'_>,
    now: i64,
) -> Result<Option<Entry>> {
    if e.key.is_empty() {
        return Err(StoreError::KeyConflict { key: String::new() });
    }
    let row = sqlx::query(concat!(
        "INSERT INTO ledger_entries \
             (user_id, kind, amount, generation_id, payment_id, key, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (key) DO NOTHING RETURNING ",
        entry_columns!()
    ))
    .bind(e.user.0)
    .bind(e.kind.as_str())
    .bind(e.amount.minor())
    .bind(e.generation.map(|g| g.0))
    .bind(e.payment.map(|p| p.0))
    .bind(e.key)
    .bind(e.note)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(entry_from_row).transpose()
}

pub(crate) async fn entry_by_key(conn: &mut AnyConnection, key: &str) -> Result<Option<Entry>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM ledger_entries WHERE key = $1"
    ))
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(entry_from_row).transpose()
}

/// The answer to a repeated operation: its first entry, or
/// [`StoreError::KeyConflict`] when the key was used for something else.
pub(crate) async fn repeat_of(conn: &mut AnyConnection, e: &NewEntry<'_>) -> Result<Applied> {
    match entry_by_key(conn, e.key).await? {
        Some(entry) if e.is_repeated_by(&entry) => Ok(Applied {
            entry,
            fresh: false,
        }),
        // Gone between the conflict and this read cannot happen (entries are
        // never deleted), so a missing entry is a different operation too.
        _ => Err(StoreError::KeyConflict {
            key: e.key.to_owned(),
        }),
    }
}

pub(crate) async fn wallet_in(conn: &mut AnyConnection, user: UserId) -> Result<Wallet> {
    let row = sqlx::query("SELECT balance, held FROM wallets WHERE user_id = $1")
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("wallet", user))?;
    Ok(Wallet {
        balance: Money::from_minor(row.try_get("balance")?),
        held: Money::from_minor(row.try_get("held")?),
    })
}

/// The user's wallet, locked until the transaction ends (on PostgreSQL; a
/// SQLite write transaction holds the whole database), so what is read is
/// still true when a debit computed from it is applied.
pub(crate) async fn lock_wallet_in(conn: &mut AnyConnection, user: UserId) -> Result<Wallet> {
    let row = sqlx::query(
        "UPDATE wallets SET balance = balance WHERE user_id = $1 RETURNING balance, held",
    )
    .bind(user.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::not_found("wallet", user))?;
    Ok(Wallet {
        balance: Money::from_minor(row.try_get("balance")?),
        held: Money::from_minor(row.try_get("held")?),
    })
}

/// Creates the user's empty wallet if it is missing. The user row must exist.
pub(crate) async fn open_wallet_in(conn: &mut AnyConnection, user: UserId) -> Result<()> {
    sqlx::query("INSERT INTO wallets (user_id, balance, held) VALUES ($1, 0, 0) ON CONFLICT (user_id) DO NOTHING")
        .bind(user.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The refusal for a conditional wallet update that matched no row.
async fn refusal(conn: &mut AnyConnection, user: UserId, requested: Money) -> StoreError {
    match wallet_in(conn, user).await {
        Ok(w) => StoreError::InsufficientFunds {
            available: w.available(),
            requested,
        },
        Err(e) => e,
    }
}

/// Top-up, bonus, adjust or refund: appends the entry and moves the balance
/// (down for refunds and negative adjustments, never below `held`).
pub(crate) async fn change_balance_in(
    conn: &mut AnyConnection,
    e: &NewEntry<'_>,
    now: i64,
) -> Result<Applied> {
    let delta = match e.kind {
        EntryKind::Topup | EntryKind::Bonus if e.amount.is_positive() => e.amount.minor(),
        EntryKind::Refund if e.amount.is_positive() => -e.amount.minor(),
        EntryKind::Adjust if e.amount != Money::ZERO => e.amount.minor(),
        EntryKind::Adjust => {
            return Err(StoreError::InvalidAmount {
                amount: e.amount,
                why: "an adjustment must not be zero",
            });
        }
        EntryKind::Topup | EntryKind::Bonus | EntryKind::Refund => {
            return Err(StoreError::InvalidAmount {
                amount: e.amount,
                why: "must be positive",
            });
        }
        EntryKind::Hold | EntryKind::Capture | EntryKind::Release => {
            return Err(StoreError::Corrupt(format!(
                "{} is not a balance change",
                e.kind
            )));
        }
    };
    let Some(entry) = insert_entry(conn, e, now).await? else {
        return repeat_of(conn, e).await;
    };
    let changed = sqlx::query(
        "UPDATE wallets SET balance = balance + $2 \
         WHERE user_id = $1 AND balance + $2 >= held",
    )
    .bind(e.user.0)
    .bind(delta)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(refusal(conn, e.user, Money::from_minor(-delta)).await);
    }
    Ok(Applied { entry, fresh: true })
}

/// Reserves `amount` for `generation` (key `hold:<generation>`).
pub(crate) async fn hold_in(
    conn: &mut AnyConnection,
    user: UserId,
    generation: GenerationId,
    amount: Money,
    now: i64,
) -> Result<Applied> {
    if !amount.is_positive() {
        return Err(StoreError::InvalidAmount {
            amount,
            why: "a hold must be positive",
        });
    }
    let key = format!("hold:{generation}");
    let e = NewEntry {
        generation: Some(generation),
        ..NewEntry::new(user, EntryKind::Hold, amount, &key)
    };
    let Some(entry) = insert_entry(conn, &e, now).await? else {
        return repeat_of(conn, &e).await;
    };
    let changed = sqlx::query(
        "UPDATE wallets SET held = held + $2 \
         WHERE user_id = $1 AND balance - held >= $2",
    )
    .bind(user.0)
    .bind(amount.minor())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(refusal(conn, user, amount).await);
    }
    sqlx::query(
        "INSERT INTO holds (generation_id, user_id, amount, state, created_at) \
         VALUES ($1, $2, $3, 'held', $4)",
    )
    .bind(generation.0)
    .bind(user.0)
    .bind(amount.minor())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Applied { entry, fresh: true })
}

/// Captures or releases the generation's hold (`to` is `Captured` or
/// `Released`).
pub(crate) async fn settle_in(
    conn: &mut AnyConnection,
    generation: GenerationId,
    to: HoldState,
    now: i64,
) -> Result<Applied> {
    let kind = match to {
        HoldState::Captured => EntryKind::Capture,
        HoldState::Released => EntryKind::Release,
        HoldState::Held => {
            return Err(StoreError::Corrupt(
                "a hold cannot be settled to held".into(),
            ));
        }
    };
    let key = format!("{kind}:{generation}");
    // The deciding write: only one of capture and release can match the row
    // while it is 'held'; on Postgres the loser waits for the winner's commit
    // and then matches nothing.
    let settled = sqlx::query(
        "UPDATE holds SET state = $2, settled_at = $3 \
         WHERE generation_id = $1 AND state = 'held' RETURNING user_id, amount",
    )
    .bind(generation.0)
    .bind(to.as_str())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;

    let Some(row) = settled else {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM holds WHERE generation_id = $1")
                .bind(generation.0)
                .fetch_optional(&mut *conn)
                .await?;
        let state: HoldState = match state {
            None => return Err(StoreError::NoHold(generation)),
            Some(s) => s
                .parse()
                .map_err(|()| StoreError::Corrupt(format!("hold state {s:?}")))?,
        };
        if state != to {
            return Err(StoreError::HoldAlreadySettled { generation, state });
        }
        return match entry_by_key(conn, &key).await? {
            Some(entry) => Ok(Applied {
                entry,
                fresh: false,
            }),
            None => Err(StoreError::Corrupt(format!(
                "hold of generation {generation} is {state} without a {key} entry"
            ))),
        };
    };

    let user = UserId(row.try_get("user_id")?);
    let amount = Money::from_minor(row.try_get("amount")?);
    let e = NewEntry {
        generation: Some(generation),
        ..NewEntry::new(user, kind, amount, &key)
    };
    let entry = insert_entry(conn, &e, now).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("{key} exists while the hold was still held"))
    })?;
    let sql = match kind {
        EntryKind::Capture => {
            "UPDATE wallets SET balance = balance - $2, held = held - $2 \
             WHERE user_id = $1 AND held >= $2"
        }
        _ => "UPDATE wallets SET held = held - $2 WHERE user_id = $1 AND held >= $2",
    };
    let changed = sqlx::query(sql)
        .bind(user.0)
        .bind(amount.minor())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if changed == 0 {
        return Err(StoreError::Corrupt(format!(
            "wallet of user {user} holds less than the hold of generation {generation}"
        )));
    }
    Ok(Applied { entry, fresh: true })
}

/// Money in the ledger by what happened to it, for invariant checks and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoneyTotals {
    /// Every capture entry, summed.
    pub captured: Money,
    /// Every release entry, summed.
    pub released: Money,
    /// Held across all wallets right now.
    pub held: Money,
}

impl Store {
    /// Totals of captured, released and currently held money.
    pub async fn money_totals(&self) -> Result<MoneyTotals> {
        let row = sqlx::query(
            "SELECT \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_entries WHERE kind = 'capture'), 0) AS BIGINT) AS captured, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_entries WHERE kind = 'release'), 0) AS BIGINT) AS released, \
                 CAST(COALESCE((SELECT SUM(held) FROM wallets), 0) AS BIGINT) AS held",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(MoneyTotals {
            captured: Money::from_minor(row.try_get("captured")?),
            released: Money::from_minor(row.try_get("released")?),
            held: Money::from_minor(row.try_get("held")?),
        })
    }
}
