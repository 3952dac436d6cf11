-- Who pays for a generation when it is not the user's wallet, so that a
-- generation that does not succeed gives back exactly what it took, in the
-- transaction that ends it (see crates/store/src/generations.rs).
-- free_day: the day (YYYY-MM-DD) whose free quota of the generation's model
--   it used; the use counts only if the generation succeeds.
-- budget_spent: what it took from the user's admin budget (a limited admin).
-- funding_returned_at: when the free use or the budget was given back; set
--   once, so a repeated failure never gives back twice.
ALTER TABLE generations ADD COLUMN free_day TEXT;
ALTER TABLE generations ADD COLUMN budget_spent BIGINT CHECK (budget_spent IS NULL OR budget_spent > 0);
ALTER TABLE generations ADD COLUMN funding_returned_at BIGINT;
