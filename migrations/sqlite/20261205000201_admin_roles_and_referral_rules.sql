-- Admin permissions and referral rules (SQLite dialect of the PostgreSQL
-- migration of the same number, which explains the columns).
CREATE TABLE admin_permissions (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    permission TEXT    NOT NULL CHECK (permission IN ('support', 'finance', 'broadcast', 'maintenance')),
    granted_by INTEGER NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, permission)
) STRICT;

CREATE INDEX admin_audit_actor_created_at ON admin_audit (actor_id, created_at);

ALTER TABLE referrals ADD COLUMN outcome TEXT
    CHECK (outcome IN ('paid', 'capped', 'blocked'));
ALTER TABLE referrals ADD COLUMN qualified_at INTEGER;
ALTER TABLE referrals ADD COLUMN payment_id INTEGER;
ALTER TABLE referrals ADD COLUMN bonus INTEGER;
ALTER TABLE referrals ADD COLUMN reversed_at INTEGER;
ALTER TABLE referrals ADD COLUMN shortfall INTEGER;

UPDATE referrals SET outcome = 'paid' WHERE bonus_paid = 1;

CREATE INDEX referrals_inviter_qualified ON referrals (inviter_id, qualified_at);
CREATE INDEX referrals_payment_id ON referrals (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX referrals_pending ON referrals (invitee_id) WHERE bonus_paid = 0;
