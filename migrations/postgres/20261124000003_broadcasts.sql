-- Admin broadcasts, run by whichever front process holds the lease.
-- cursor: the last recipient (user id) a runner took; users with a greater id
--   are still to do. It moves before the message is sent, so a runner that
--   took over never sends to a recipient another runner had taken.
-- runner, claimed_until: the lease. A runner renews it with every recipient;
--   another process takes the broadcast over once it has passed.
-- At most one broadcast runs at a time (the partial unique index).
CREATE TABLE broadcasts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    text          TEXT   NOT NULL,
    status        TEXT   NOT NULL CHECK (status IN ('running', 'finished')),
    cursor        BIGINT NOT NULL,
    sent          BIGINT NOT NULL DEFAULT 0 CHECK (sent >= 0),
    failed        BIGINT NOT NULL DEFAULT 0 CHECK (failed >= 0),
    admin_chat    BIGINT NOT NULL,
    lang          TEXT   NOT NULL,
    created_by    BIGINT NOT NULL,
    runner        TEXT,
    claimed_until BIGINT,
    created_at    BIGINT NOT NULL,
    finished_at   BIGINT
);

CREATE UNIQUE INDEX broadcasts_one_running ON broadcasts (status) WHERE status = 'running';

-- A broadcast interrupted before this migration lived in the settings row
-- 'broadcast' (JSON); it continues from its cursor.
INSERT INTO broadcasts (text, status, cursor, sent, failed, admin_chat, lang, created_by, created_at)
SELECT value::json->>'text', 'running', (value::json->>'cursor')::BIGINT,
       (value::json->>'sent')::BIGINT, (value::json->>'failed')::BIGINT,
       (value::json->>'admin_chat')::BIGINT, value::json->>'lang',
       (value::json->>'admin_chat')::BIGINT,
       (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
FROM settings WHERE key = 'broadcast';

DELETE FROM settings WHERE key = 'broadcast';
