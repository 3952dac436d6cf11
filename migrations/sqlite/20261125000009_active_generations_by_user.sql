-- The active limit counts a user's pending and submitted generations on
-- every confirmation. Without an index of exactly those rows the planner
-- may combine the user index with another partial index of active rows
-- (it did, with the deadline index, on statistics taken while the table
-- was small, and kept that plan for the connection), which reads every
-- active generation of every user on each confirmation. This index holds
-- only active rows, so a confirmation reads the user's few entries however
-- many generations are in flight.
CREATE INDEX generations_active_by_user ON generations (user_id)
    WHERE status IN ('pending', 'submitted');
