-- kiebot_create_generation: its current definition, the one a fully migrated database runs.
--
-- Migrations are history and never change; this file is where the function
-- is read and reviewed. A change is made here and in a new migration that
-- carries the same text; `cargo test -p kiebot-store --test pg_functions`
-- fails while the two differ. Last defined by 20261124000005_create_generation_function.sql.

CREATE OR REPLACE FUNCTION kiebot_create_generation(
    p_user             BIGINT,
    p_draft_key        TEXT,
    p_model            TEXT,
    p_params           TEXT,
    p_request          TEXT,
    p_price            BIGINT,
    p_chat_id          BIGINT,
    p_deadline_at      BIGINT,
    p_now              BIGINT,
    p_max_active       BIGINT,
    p_free_day         TEXT,
    p_free_limit       BIGINT,
    p_budget           BIGINT,
    p_traceparent      TEXT,
    -- The dialogue to store once the generation exists (NULL: leave it),
    -- with the new id written into its field p_dialogue_field.
    p_dialogue         TEXT,
    p_dialogue_field   TEXT,
    p_dialogue_expires BIGINT
) RETURNS TABLE (out_created BOOLEAN, out_id BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_id      BIGINT;
    v_owner   BIGINT;
    v_blocked BOOLEAN;
    v_others  BIGINT;
    v_left    BIGINT;
    v_avail   BIGINT;
BEGIN
    -- The deciding write: the draft key is unique, so a second tap (even a
    -- concurrent one, which waits for the first to commit) inserts nothing.
    INSERT INTO generations (user_id, draft_key, model, params, request, price, status,
            chat_id, deadline_at, created_at, updated_at,
            submit_attempts, poll_attempts, delivery_attempts, free_day, budget_spent, traceparent)
        VALUES (p_user, p_draft_key, p_model, p_params, p_request, p_price, 'pending',
            p_chat_id, p_deadline_at, p_now, p_now, 0, 0, 0, p_free_day, p_budget, p_traceparent)
        ON CONFLICT (draft_key) DO NOTHING
        RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT g.id, g.user_id INTO v_id, v_owner FROM generations g WHERE g.draft_key = p_draft_key;
        IF v_owner IS DISTINCT FROM p_user THEN
            RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'key_conflict';
        END IF;
        RETURN QUERY SELECT FALSE, v_id;
        RETURN;
    END IF;

    -- Locks the user's row, so that concurrent confirmations of one user
    -- count each other's generations.
    UPDATE users SET last_seen_at = p_now WHERE id = p_user RETURNING blocked INTO v_blocked;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'no_user';
    END IF;
    IF v_blocked THEN
        RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'blocked';
    END IF;

    SELECT COUNT(*) INTO v_others FROM generations
        WHERE user_id = p_user AND status IN ('pending', 'submitted') AND id <> v_id;
    IF v_others >= p_max_active THEN
        RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'too_many_active';
    END IF;

    IF p_free_day IS NOT NULL THEN
        IF p_free_limit IS NULL OR p_free_limit <= 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'free_quota_used_up';
        END IF;
        INSERT INTO free_usage (user_id, model, day, used) VALUES (p_user, p_model, p_free_day, 1)
            ON CONFLICT (user_id, model, day) DO UPDATE SET used = free_usage.used + 1
            WHERE free_usage.used < p_free_limit
            RETURNING used INTO v_left;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'free_quota_used_up';
        END IF;
    ELSIF p_budget IS NOT NULL THEN
        UPDATE users SET admin_budget = admin_budget - p_budget
            WHERE id = p_user AND admin_budget >= p_budget
            RETURNING admin_budget INTO v_left;
        IF NOT FOUND THEN
            SELECT admin_budget INTO v_avail FROM users WHERE id = p_user;
            RAISE EXCEPTION USING ERRCODE = 'KB001',
                MESSAGE = rtrim('budget_exhausted ' || COALESCE(v_avail::TEXT, ''));
        END IF;
    END IF;

    IF p_price > 0 THEN
        INSERT INTO ledger_entries (user_id, kind, amount, generation_id, key, created_at)
            VALUES (p_user, 'hold', p_price, v_id, 'hold:' || v_id, p_now);
        UPDATE wallets SET held = held + p_price
            WHERE user_id = p_user AND balance - held >= p_price;
        IF NOT FOUND THEN
            SELECT balance - held INTO v_avail FROM wallets WHERE user_id = p_user;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'no_wallet';
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'insufficient_funds ' || v_avail;
        END IF;
        INSERT INTO holds (generation_id, user_id, amount, state, created_at)
            VALUES (v_id, p_user, p_price, 'held', p_now);
    END IF;

    IF p_dialogue IS NOT NULL THEN
        INSERT INTO dialogues (user_id, state, updated_at, expires_at)
            VALUES (p_user,
                    jsonb_set(p_dialogue::JSONB, ARRAY[p_dialogue_field], to_jsonb(v_id))::TEXT,
                    p_now, p_dialogue_expires)
            ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,
                updated_at = excluded.updated_at, expires_at = excluded.expires_at;
    END IF;

    RETURN QUERY SELECT TRUE, v_id;
END;
$$;
