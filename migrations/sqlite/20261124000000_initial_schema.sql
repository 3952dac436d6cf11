-- kiebot schema, SQLite dialect. migrations/postgres holds the same tables and
-- columns in the Postgres dialect; change both together.
--
-- Conventions: ids and money are INTEGER (64-bit), money in minor units;
-- timestamps are INTEGER unix milliseconds; JSON is TEXT; booleans are
-- INTEGER 0/1 (sqlx's Any driver cannot read a column declared BOOLEAN on
-- SQLite). Tables are STRICT so a column never silently holds another type.

CREATE TABLE users (
    id           INTEGER PRIMARY KEY,              -- the Telegram user id
    language     TEXT,
    role         TEXT    NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin', 'owner')),
    blocked      INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
    referrer_id  INTEGER,
    admin_budget INTEGER,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) STRICT;

CREATE INDEX users_last_seen_at ON users (last_seen_at);

-- Written only by the ledger, in the same transaction as its entry.
CREATE TABLE wallets (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    balance INTEGER NOT NULL DEFAULT 0,
    held    INTEGER NOT NULL DEFAULT 0,
    CHECK (held >= 0 AND balance >= held)
) STRICT;

-- Append-only (enforced by the triggers below). generation_id and payment_id
-- are references for the reader, not foreign keys: the ledger does not depend
-- on the tables that cause its entries.
CREATE TABLE ledger_entries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('topup', 'hold', 'capture', 'release', 'refund', 'adjust', 'bonus')),
    amount        INTEGER NOT NULL CHECK (amount > 0 OR (kind = 'adjust' AND amount <> 0)),
    generation_id INTEGER,
    payment_id    INTEGER,
    key           TEXT    NOT NULL UNIQUE,
    note          TEXT,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX ledger_entries_user_id ON ledger_entries (user_id, id);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;

CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;

CREATE TABLE holds (
    generation_id INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    state         TEXT    NOT NULL CHECK (state IN ('held', 'captured', 'released')),
    created_at    INTEGER NOT NULL,
    settled_at    INTEGER
) STRICT;

CREATE INDEX holds_user_id_state ON holds (user_id, state);

CREATE TABLE generations (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             INTEGER NOT NULL REFERENCES users (id),
    draft_key           TEXT    NOT NULL UNIQUE,
    model               TEXT    NOT NULL,
    params              TEXT    NOT NULL,
    request             TEXT    NOT NULL,
    price               INTEGER NOT NULL CHECK (price >= 0),
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'submitted', 'succeeded', 'delivered', 'failed', 'expired', 'canceled')),
    kie_task_id         TEXT    UNIQUE,
    submit_attempts     INTEGER NOT NULL DEFAULT 0,
    poll_attempts       INTEGER NOT NULL DEFAULT 0,
    next_poll_at        INTEGER,
    deadline_at         INTEGER,
    result              TEXT,
    fail_code           TEXT,
    fail_reason         TEXT,
    chat_id             INTEGER NOT NULL,
    progress_message_id INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    submitted_at        INTEGER,
    finished_at         INTEGER,
    delivered_at        INTEGER,
    delivery_attempts   INTEGER NOT NULL DEFAULT 0,
    next_delivery_at    INTEGER
) STRICT;

CREATE INDEX generations_status_next_poll_at ON generations (status, next_poll_at);
CREATE INDEX generations_user_id_created_at ON generations (user_id, created_at);
CREATE INDEX generations_status_next_delivery_at ON generations (status, next_delivery_at);
CREATE INDEX generations_status_deadline_at ON generations (status, deadline_at);

CREATE TABLE payments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    provider    TEXT    NOT NULL CHECK (provider IN ('stars')),
    charge_id   TEXT    NOT NULL UNIQUE,
    stars       INTEGER NOT NULL CHECK (stars > 0),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    status      TEXT    NOT NULL CHECK (status IN ('paid', 'refunded')),
    payload     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    refunded_at INTEGER
) STRICT;

CREATE INDEX payments_user_id ON payments (user_id, id);

CREATE TABLE promo_codes (
    code       TEXT    PRIMARY KEY,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    max_uses   INTEGER CHECK (max_uses IS NULL OR max_uses > 0),
    uses       INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,
    created_by INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses))
) STRICT;

CREATE TABLE promo_redemptions (
    code       TEXT    NOT NULL REFERENCES promo_codes (code),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (code, user_id)
) STRICT;

CREATE TABLE referrals (
    invitee_id INTEGER PRIMARY KEY REFERENCES users (id),
    inviter_id INTEGER NOT NULL REFERENCES users (id),
    bonus_paid INTEGER NOT NULL DEFAULT 0 CHECK (bonus_paid IN (0, 1)),
    created_at INTEGER NOT NULL,
    CHECK (invitee_id <> inviter_id)
) STRICT;

CREATE INDEX referrals_inviter_id ON referrals (inviter_id);

CREATE TABLE free_usage (
    user_id INTEGER NOT NULL REFERENCES users (id),
    model   TEXT    NOT NULL,
    day     TEXT    NOT NULL,                      -- 'YYYY-MM-DD'
    used    INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (user_id, model, day)
) STRICT;

CREATE TABLE admin_audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    actor_id       INTEGER NOT NULL,
    action         TEXT    NOT NULL,
    target_user_id INTEGER,
    amount         INTEGER,
    reason         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE dialogues (
    user_id    INTEGER PRIMARY KEY REFERENCES users (id),
    state      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE TABLE processed_updates (
    update_id    INTEGER PRIMARY KEY,
    processed_at INTEGER NOT NULL
) STRICT;

CREATE INDEX processed_updates_processed_at ON processed_updates (processed_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
