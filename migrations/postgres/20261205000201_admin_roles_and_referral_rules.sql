-- Admin permissions and referral rules.
--
-- admin_permissions: what the owner granted an admin (support, finance,
--   broadcast, maintenance); the owner has every permission without rows.
CREATE TABLE admin_permissions (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    permission TEXT   NOT NULL CHECK (permission IN ('support', 'finance', 'broadcast', 'maintenance')),
    granted_by BIGINT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, permission)
);

-- A finance admin's spending of the last 24 hours is summed from here.
CREATE INDEX admin_audit_actor_created_at ON admin_audit (actor_id, created_at);

-- A referral is settled once, when the invitee first qualifies (a large
-- enough top-up, or enough spending): outcome says what happened then.
-- payment_id: the qualifying payment (NULL when spending qualified); its
--   refund reverses the bonus. bonus: what was paid. reversed_at and
--   shortfall: the reversal, and the part of the bonus the inviter's
--   available balance could not cover.
ALTER TABLE referrals ADD COLUMN outcome TEXT
    CHECK (outcome IN ('paid', 'capped', 'blocked'));
ALTER TABLE referrals ADD COLUMN qualified_at BIGINT;
ALTER TABLE referrals ADD COLUMN payment_id BIGINT;
ALTER TABLE referrals ADD COLUMN bonus BIGINT;
ALTER TABLE referrals ADD COLUMN reversed_at BIGINT;
ALTER TABLE referrals ADD COLUMN shortfall BIGINT;

-- Bonuses paid before the rules existed count as paid.
UPDATE referrals SET outcome = 'paid' WHERE bonus_paid;

-- The monthly cap counts an inviter's paid referrals by month.
CREATE INDEX referrals_inviter_qualified ON referrals (inviter_id, qualified_at);
-- The refund of a qualifying payment finds its referral.
CREATE INDEX referrals_payment_id ON referrals (payment_id) WHERE payment_id IS NOT NULL;
-- The spend sweep reads only referrals not yet settled.
CREATE INDEX referrals_pending ON referrals (invitee_id) WHERE NOT bonus_paid;
