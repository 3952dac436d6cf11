-- users.last_seen_at is written on every confirmation and read by no query
-- through an index (the admin's user counts scan the table), so the index
-- only cost a write each time. (The PostgreSQL migration of the same number
-- also narrows the kie_task_id index; SQLite's column constraint cannot be
-- changed without rebuilding the table, and NULLs cost it little.)
DROP INDEX users_last_seen_at;
