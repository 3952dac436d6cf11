-- kiebot schema, PostgreSQL dialect. migrations/sqlite holds the same tables
-- and columns in the SQLite dialect; change both together.
--
-- Conventions: ids and money are BIGINT, money in minor units; timestamps are
-- BIGINT unix milliseconds (one representation on both engines); JSON is TEXT
-- (the store never queries inside it); booleans are BOOLEAN.

CREATE TABLE users (
    id           BIGINT  PRIMARY KEY,              -- the Telegram user id
    language     TEXT,
    role         TEXT    NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin', 'owner')),
    blocked      BOOLEAN NOT NULL DEFAULT FALSE,
    referrer_id  BIGINT,
    admin_budget BIGINT,
    created_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL
);

CREATE INDEX users_last_seen_at ON users (last_seen_at);

-- Written only by the ledger, in the same transaction as its entry.
CREATE TABLE wallets (
    user_id BIGINT PRIMARY KEY REFERENCES users (id),
    balance BIGINT NOT NULL DEFAULT 0,
    held    BIGINT NOT NULL DEFAULT 0,
    CHECK (held >= 0 AND balance >= held)
);

-- Append-only (enforced by the trigger below). generation_id and payment_id
-- are references for the reader, not foreign keys: the ledger does not depend
-- on the tables that cause its entries.
CREATE TABLE ledger_entries (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    kind          TEXT   NOT NULL CHECK (kind IN ('topup', 'hold', 'capture', 'release', 'refund', 'adjust', 'bonus')),
    amount        BIGINT NOT NULL CHECK (amount > 0 OR (kind = 'adjust' AND amount <> 0)),
    generation_id BIGINT,
    payment_id    BIGINT,
    key           TEXT   NOT NULL UNIQUE,
    note          TEXT,
    created_at    BIGINT NOT NULL
);

CREATE INDEX ledger_entries_user_id ON ledger_entries (user_id, id);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END;
$$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE holds (
    generation_id BIGINT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    state         TEXT   NOT NULL CHECK (state IN ('held', 'captured', 'released')),
    created_at    BIGINT NOT NULL,
    settled_at    BIGINT
);

CREATE INDEX holds_user_id_state ON holds (user_id, state);

CREATE TABLE generations (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             BIGINT NOT NULL REFERENCES users (id),
    draft_key           TEXT   NOT NULL UNIQUE,
    model               TEXT   NOT NULL,
    params              TEXT   NOT NULL,
    request             TEXT   NOT NULL,
    price               BIGINT NOT NULL CHECK (price >= 0),
    status              TEXT   NOT NULL CHECK (status IN ('pending', 'submitted', 'succeeded', 'delivered', 'failed', 'expired', 'canceled')),
    kie_task_id         TEXT   UNIQUE,
    submit_attempts     BIGINT NOT NULL DEFAULT 0,
    poll_attempts       BIGINT NOT NULL DEFAULT 0,
    next_poll_at        BIGINT,
    deadline_at         BIGINT,
    result              TEXT,
    fail_code           TEXT,
    fail_reason         TEXT,
    chat_id             BIGINT NOT NULL,
    progress_message_id BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    submitted_at        BIGINT,
    finished_at         BIGINT,
    delivered_at        BIGINT,
    delivery_attempts   BIGINT NOT NULL DEFAULT 0,
    next_delivery_at    BIGINT
);

CREATE INDEX generations_status_next_poll_at ON generations (status, next_poll_at);
CREATE INDEX generations_user_id_created_at ON generations (user_id, created_at);
CREATE INDEX generations_status_next_delivery_at ON generations (status, next_delivery_at);
CREATE INDEX generations_status_deadline_at ON generations (status, deadline_at);

CREATE TABLE payments (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    provider    TEXT   NOT NULL CHECK (provider IN ('stars')),
    charge_id   TEXT   NOT NULL UNIQUE,
    stars       BIGINT NOT NULL CHECK (stars > 0),
    amount      BIGINT NOT NULL CHECK (amount > 0),
    status      TEXT   NOT NULL CHECK (status IN ('paid', 'refunded')),
    payload     TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    refunded_at BIGINT
);

CREATE INDEX payments_user_id ON payments (user_id, id);

CREATE TABLE promo_codes (
    code       TEXT   PRIMARY KEY,
    amount     BIGINT NOT NULL CHECK (amount > 0),
    max_uses   BIGINT CHECK (max_uses IS NULL OR max_uses > 0),
    uses       BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses))
);

CREATE TABLE promo_redemptions (
    code       TEXT   NOT NULL REFERENCES promo_codes (code),
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (code, user_id)
);

CREATE TABLE referrals (
    invitee_id BIGINT  PRIMARY KEY REFERENCES users (id),
    inviter_id BIGINT  NOT NULL REFERENCES users (id),
    bonus_paid BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT  NOT NULL,
    CHECK (invitee_id <> inviter_id)
);

CREATE INDEX referrals_inviter_id ON referrals (inviter_id);

CREATE TABLE free_usage (
    user_id BIGINT NOT NULL REFERENCES users (id),
    model   TEXT   NOT NULL,
    day     TEXT   NOT NULL,                       -- 'YYYY-MM-DD'
    used    BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (user_id, model, day)
);

CREATE TABLE admin_audit (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id       BIGINT NOT NULL,
    action         TEXT   NOT NULL,
    target_user_id BIGINT,
    amount         BIGINT,
    reason         TEXT   NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE dialogues (
    user_id    BIGINT PRIMARY KEY REFERENCES users (id),
    state      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE processed_updates (
    update_id    BIGINT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);

CREATE INDEX processed_updates_processed_at ON processed_updates (processed_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
