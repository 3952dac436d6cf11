-- Admin broadcasts, run by whichever front process holds the lease.
-- cursor: the last recipient (user id) a runner took; users with a greater id
--   are still to do. It moves before the message is sent, so a runner that
--   took over never sends to a recipient another runner had taken.
-- runner, claimed_until: the lease. A runner renews it with every recipient;
--   another process takes the broadcast over once it has passed.
-- At most one broadcast runs at a time (the partial unique index).
CREATE TABLE broadcasts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    text          TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'finished')),
    cursor        INTEGER NOT NULL,
    sent          INTEGER NOT NULL DEFAULT 0 CHECK (sent >= 0),
    failed        INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    admin_chat    INTEGER NOT NULL,
    lang          TEXT    NOT NULL,
    created_by    INTEGER NOT NULL,
    runner        TEXT,
    claimed_until INTEGER,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
) STRICT;

CREATE UNIQUE INDEX broadcasts_one_running ON broadcasts (status) WHERE status = 'running';

-- A broadcast interrupted before this migration lived in the settings row
-- 'broadcast' (JSON); it continues from its cursor.
INSERT INTO broadcasts (text, status, cursor, sent, failed, admin_chat, lang, created_by, created_at)
SELECT json_extract(value, '$.text'), 'running', json_extract(value, '$.cursor'),
       json_extract(value, '$.sent'), json_extract(value, '$.failed'),
       json_extract(value, '$.admin_chat'), json_extract(value, '$.lang'),
       json_extract(value, '$.admin_chat'), CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM settings WHERE key = 'broadcast' AND json_valid(value);

DELETE FROM settings WHERE key = 'broadcast';
