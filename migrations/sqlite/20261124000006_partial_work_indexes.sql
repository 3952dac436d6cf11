-- The indexes that find work (due submits, polls, deadlines, deliveries)
-- cover only the rows that can still be work. Finished and delivered
-- generations (nearly all rows, in time) are in none of them, so these
-- indexes stay as small as the work in flight, and a status change adds
-- entries only to the index its new state needs instead of to all of them
-- (fewer index writes per status change).
DROP INDEX generations_status_next_poll_at;
DROP INDEX generations_status_next_delivery_at;
DROP INDEX generations_status_deadline_at;

-- Submits to (re)queue: claim_due_submits, pending_older_than.
CREATE INDEX generations_pending ON generations (id) WHERE status = 'pending';
-- Polls that are due: due_polls, claim_due_polls.
CREATE INDEX generations_due_polls ON generations (next_poll_at) WHERE status = 'submitted';
-- Active generations past their deadline: overdue.
CREATE INDEX generations_deadlines ON generations (deadline_at)
    WHERE status IN ('pending', 'submitted');
-- Finished generations whose user is still to be told: due_deliveries,
-- claim_due_deliveries, count_untold.
CREATE INDEX generations_untold ON generations (next_delivery_at)
    WHERE delivered_at IS NULL AND next_delivery_at IS NOT NULL;
-- The admin's list of recent failures.
CREATE INDEX generations_failed ON generations (id) WHERE status = 'failed';
