-- Invoices we issued (SQLite dialect of the PostgreSQL migration of the same
-- number): a payment is checked against what was offered and credited by
-- what was promised. The invoice payload names the row (`inv:<id>:<nonce>`);
-- the full payload must match, so an id alone cannot be forged.
CREATE TABLE invoices (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    stars      INTEGER NOT NULL CHECK (stars > 0),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    payload    TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX invoices_user_id ON invoices (user_id, id);

-- A payment the operator should look at (credited all the same); NULL for a
-- payment that matched its invoice.
ALTER TABLE payments ADD COLUMN flag TEXT;

CREATE INDEX payments_flagged ON payments (id) WHERE flag IS NOT NULL;
