-- kiebot_finish_generation: its current definition, the one a fully migrated database runs.
--
-- Migrations are history and never change; this file is where the function
-- is read and reviewed. A change is made here and in a new migration that
-- carries the same text; `cargo test -p kiebot-store --test pg_functions`
-- fails while the two differ. Last defined by 20261124000007_finish_generation_function.sql.

CREATE OR REPLACE FUNCTION kiebot_finish_generation(
    p_id          BIGINT,
    p_to          TEXT,
    p_sources     TEXT,
    p_now         BIGINT,
    p_result      TEXT,
    p_fail_code   TEXT,
    p_fail_reason TEXT,
    p_lease       BIGINT
) RETURNS SETOF generations
LANGUAGE plpgsql AS $$
DECLARE
    v_row    generations%ROWTYPE;
    v_fund   generations%ROWTYPE;
    v_kind   TEXT;
    v_want   TEXT;
    v_state  TEXT;
    v_user   BIGINT;
    v_amount BIGINT;
BEGIN
    IF p_to NOT IN ('succeeded', 'failed', 'expired', 'canceled') THEN
        RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'corrupt cannot finish as ' || p_to;
    END IF;

    -- The deciding write: only one caller moves the row out of its sources.
    UPDATE generations SET status = p_to, updated_at = p_now, claimed_until = p_lease,
            delivery_attempts = delivery_attempts + CASE WHEN p_lease IS NULL THEN 0 ELSE 1 END,
            finished_at = p_now, next_poll_at = NULL, next_delivery_at = p_now,
            result = COALESCE(p_result, result), fail_code = COALESCE(p_fail_code, fail_code),
            fail_reason = COALESCE(p_fail_reason, fail_reason)
        WHERE id = p_id AND status = ANY (string_to_array(p_sources, ','))
        RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF v_row.price > 0 THEN
        IF p_to = 'succeeded' THEN
            v_kind := 'capture';
            v_want := 'captured';
        ELSE
            v_kind := 'release';
            v_want := 'released';
        END IF;
        UPDATE holds SET state = v_want, settled_at = p_now
            WHERE generation_id = p_id AND state = 'held'
            RETURNING user_id, amount INTO v_user, v_amount;
        IF NOT FOUND THEN
            -- Settled before (only a repeat of the same settlement stands).
            SELECT state INTO v_state FROM holds WHERE generation_id = p_id;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'no_hold';
            END IF;
            IF v_state <> v_want THEN
                RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'hold_settled ' || v_state;
            END IF;
            PERFORM 1 FROM ledger_entries WHERE key = v_kind || ':' || p_id;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'corrupt hold of generation '
                    || p_id || ' is ' || v_state || ' without a ' || v_kind || ':' || p_id || ' entry';
            END IF;
        ELSE
            INSERT INTO ledger_entries (user_id, kind, amount, generation_id, key, created_at)
                VALUES (v_user, v_kind, v_amount, p_id, v_kind || ':' || p_id, p_now)
                ON CONFLICT (key) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'corrupt ' || v_kind || ':'
                    || p_id || ' exists while the hold was still held';
            END IF;
            IF v_kind = 'capture' THEN
                UPDATE wallets SET balance = balance - v_amount, held = held - v_amount
                    WHERE user_id = v_user AND held >= v_amount;
            ELSE
                UPDATE wallets SET held = held - v_amount
                    WHERE user_id = v_user AND held >= v_amount;
            END IF;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'KB001', MESSAGE = 'corrupt wallet of user '
                    || v_user || ' holds less than the hold of generation ' || p_id;
            END IF;
        END IF;
    END IF;

    IF p_to <> 'succeeded' THEN
        -- The free use or admin budget the confirmation took, given back once.
        UPDATE generations SET funding_returned_at = p_now
            WHERE id = p_id AND funding_returned_at IS NULL
                AND (free_day IS NOT NULL OR budget_spent IS NOT NULL)
            RETURNING * INTO v_fund;
        IF FOUND THEN
            v_row := v_fund;
            IF v_fund.free_day IS NOT NULL THEN
                -- `used > 0` keeps a counter reset by hand from going negative.
                UPDATE free_usage SET used = used - 1
                    WHERE user_id = v_fund.user_id AND model = v_fund.model
                        AND day = v_fund.free_day AND used > 0;
            END IF;
            IF v_fund.budget_spent IS NOT NULL THEN
                -- A budget removed meanwhile (NULL) stays removed.
                UPDATE users SET admin_budget = admin_budget + v_fund.budget_spent
                    WHERE id = v_fund.user_id AND admin_budget IS NOT NULL;
            END IF;
        END IF;
    END IF;

    RETURN NEXT v_row;
END;
$$;
