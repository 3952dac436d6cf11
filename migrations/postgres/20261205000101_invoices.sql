-- Invoices we issued, so a payment is checked against what was offered and
-- credited by what was promised. The invoice payload names the row (`inv:<id>:<nonce>`);
-- the full payload must match, so an id alone cannot be forged.
CREATE TABLE invoices (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    stars      BIGINT NOT NULL CHECK (stars > 0),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    payload    TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX invoices_user_id ON invoices (user_id, id);

-- A payment the operator should look at (credited all the same): why, e.g.
-- `unknown_invoice`, `invoice_of_another_user`, `stars_differ`,
-- `refunded_outside_spent`. NULL for a payment that matched its invoice.
ALTER TABLE payments ADD COLUMN flag TEXT;

CREATE INDEX payments_flagged ON payments (id) WHERE flag IS NOT NULL;
