-- Refused promo codes per user, so a user can try only a few per hour
-- (guessing codes). Old rows are pruned by the reconciler's housekeeping.
CREATE TABLE promo_failures (
    user_id BIGINT NOT NULL,
    at      BIGINT NOT NULL
);

CREATE INDEX promo_failures_user_at ON promo_failures (user_id, at);
CREATE INDEX promo_failures_at ON promo_failures (at);
