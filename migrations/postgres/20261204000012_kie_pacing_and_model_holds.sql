-- KIE's limits and truth, kept with the generation.
-- admitted_at: when the create dispatcher picked the pending row, in its fair
--   turn, for one of KIE's free create slots (20 per 10 s per account); its
--   Submit job then takes the slot without queueing behind the line. NULL for
--   rows submitted straight from their confirmation.
-- kie_run_ms: KIE's own time from accepting the task to finishing it; the
--   model's recent ones plan when its next tasks are polled.
-- kie_credits: what KIE billed (creditsConsumed), in thousandths of a credit,
--   the cost truth for margin reports.
ALTER TABLE generations ADD COLUMN admitted_at BIGINT;
ALTER TABLE generations ADD COLUMN kie_run_ms BIGINT;
ALTER TABLE generations ADD COLUMN kie_credits BIGINT;

-- A model's recent run times: recent_run_times.
CREATE INDEX generations_model_run_times ON generations (model, finished_at)
    WHERE kie_run_ms IS NOT NULL;

-- Models taken off sale by the catalog check (or an operator) until an
-- operator puts them back: hidden from menus, confirmations refused, pending
-- generations failed with their hold released.
CREATE TABLE model_holds (
    model   TEXT   PRIMARY KEY,
    reason  TEXT   NOT NULL,
    source  TEXT   NOT NULL CHECK (source IN ('check', 'operator')),
    held_at BIGINT NOT NULL
);
