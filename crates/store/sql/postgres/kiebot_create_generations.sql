-- kiebot_create_generations: its current definition, the one a fully migrated database runs.
--
-- Migrations are history and never change; this file is where the function
-- is read and reviewed. A change is made here and in a new migration that
-- carries the same text; `cargo test -p kiebot-store --test pg_functions`
-- fails while the two differ. Last defined by 20261204000011_batch_plans_by_key.sql.

CREATE OR REPLACE FUNCTION kiebot_create_generations(p_batch TEXT, p_now BIGINT)
RETURNS TABLE (out_idx INTEGER, out_created BOOLEAN, out_id BIGINT, out_refusal TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_batch   JSONB := p_batch::JSONB;
    v_users   BIGINT[];
    v_plain   INTEGER[];
    v_idx     INTEGER[];
    v_ids     BIGINT[];
    r         RECORD;
    v_created BOOLEAN;
    v_id      BIGINT;
BEGIN
    SELECT array_agg(DISTINCT (e->>'user_id')::BIGINT) INTO v_users
        FROM jsonb_array_elements(v_batch) e;
    -- In user order, as every batch does, so batches cannot deadlock.
    PERFORM 1 FROM users WHERE id = ANY(v_users) ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM wallets WHERE user_id = ANY(v_users) ORDER BY user_id FOR NO KEY UPDATE;

    SELECT COALESCE(array_agg(b.idx), '{}') INTO v_plain
    FROM (
        SELECT x.*,
               COUNT(*) OVER (PARTITION BY x.user_id) AS per_user,
               COUNT(*) OVER (PARTITION BY x.draft_key) AS per_key
        FROM jsonb_populate_recordset(NULL::kiebot_confirmation, v_batch) x
    ) b
    WHERE b.per_user = 1 AND b.per_key = 1
      AND b.free_day IS NULL AND b.budget IS NULL AND b.price > 0
      -- NULL for a user or wallet that does not exist: not plain.
      AND NOT (SELECT u.blocked FROM users u WHERE u.id = b.user_id)
      AND (SELECT w.balance - w.held FROM wallets w WHERE w.user_id = b.user_id) >= b.price
      AND (SELECT g.id FROM generations g WHERE g.draft_key = b.draft_key) IS NULL
      AND (SELECT COUNT(*) FROM generations g
           WHERE g.user_id = b.user_id AND g.status IN ('pending', 'submitted')) < b.max_active;

    IF cardinality(v_plain) > 0 THEN
        WITH b AS (
            SELECT * FROM jsonb_populate_recordset(NULL::kiebot_confirmation, v_batch) x
            WHERE x.idx = ANY(v_plain)
        ),
        gen AS (
            INSERT INTO generations (user_id, draft_key, model, params, request, price, status,
                    chat_id, deadline_at, created_at, updated_at, submit_attempts,
                    poll_attempts, delivery_attempts, free_day, budget_spent, traceparent)
                SELECT user_id, draft_key, model, params, request, price, 'pending',
                    chat_id, deadline_at, p_now, p_now, 0, 0, 0, NULL, NULL, traceparent
                FROM b ORDER BY idx
                RETURNING id, user_id, price, draft_key
        ),
        seen AS (
            UPDATE users u SET last_seen_at = p_now
                WHERE u.id = ANY(ARRAY(SELECT gen.user_id FROM gen))
        ),
        entries AS (
            INSERT INTO ledger_entries (user_id, kind, amount, generation_id, key, created_at)
                SELECT user_id, 'hold', price, id, 'hold:' || id, p_now FROM gen
        ),
        held AS (
            -- One element per user on this path, so one price per wallet.
            UPDATE wallets w
                SET held = w.held + (SELECT gen.price FROM gen WHERE gen.user_id = w.user_id)
                WHERE w.user_id = ANY(ARRAY(SELECT gen.user_id FROM gen))
        ),
        holds_ AS (
            INSERT INTO holds (generation_id, user_id, amount, state, created_at)
                SELECT id, user_id, price, 'held', p_now FROM gen
        ),
        dialogue AS (
            INSERT INTO dialogues (user_id, state, updated_at, expires_at)
                SELECT b.user_id,
                       jsonb_set(b.dialogue::JSONB, ARRAY[b.dialogue_field], to_jsonb(gen.id))::TEXT,
                       p_now, b.dialogue_expires
                FROM b JOIN gen ON gen.draft_key = b.draft_key
                WHERE b.dialogue IS NOT NULL
                ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,
                    updated_at = excluded.updated_at, expires_at = excluded.expires_at
        )
        SELECT array_agg(b.idx), array_agg(gen.id) INTO v_idx, v_ids
            FROM b JOIN gen ON gen.draft_key = b.draft_key;
        FOR i IN 1 .. cardinality(v_idx) LOOP
            out_idx := v_idx[i];
            out_created := TRUE;
            out_id := v_ids[i];
            out_refusal := NULL;
            RETURN NEXT;
        END LOOP;
    END IF;

    FOR r IN SELECT * FROM jsonb_populate_recordset(NULL::kiebot_confirmation, v_batch) b
        WHERE NOT (b.idx = ANY(v_plain))
        ORDER BY b.idx
    LOOP
        out_idx := r.idx;
        BEGIN
            SELECT c.out_created, c.out_id INTO v_created, v_id
                FROM kiebot_create_generation(
                    r.user_id, r.draft_key, r.model, r.params, r.request, r.price,
                    r.chat_id, r.deadline_at, p_now, r.max_active, r.free_day,
                    r.free_limit, r.budget, r.traceparent, r.dialogue,
                    r.dialogue_field, r.dialogue_expires) c;
            out_created := v_created;
            out_id := v_id;
            out_refusal := NULL;
        EXCEPTION
            WHEN SQLSTATE 'KB001' THEN
                out_created := NULL;
                out_id := NULL;
                out_refusal := SQLERRM;
            WHEN foreign_key_violation THEN
                out_created := NULL;
                out_id := NULL;
                out_refusal := 'no_user';
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;
