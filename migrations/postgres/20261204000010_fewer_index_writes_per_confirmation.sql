-- Fewer index entries written by every confirmation.
--
-- * users.last_seen_at is written on every confirmation and read by no
--   query through an index (the admin's user counts scan the table). With
--   the column indexed no such update could be a HOT update, so each one
--   also added entries to both of the table's indexes.
-- * kie_task_id is unique among the tasks KIE accepted. A generation has
--   none until it is submitted, yet the full unique index took an entry for
--   its NULL at creation. The partial index holds only real task ids, and
--   the lookup by task id (`kie_task_id = $1`, which implies NOT NULL) still
--   uses it.
DROP INDEX users_last_seen_at;

ALTER TABLE generations DROP CONSTRAINT generations_kie_task_id_key;
CREATE UNIQUE INDEX generations_kie_task_id ON generations (kie_task_id)
    WHERE kie_task_id IS NOT NULL;
