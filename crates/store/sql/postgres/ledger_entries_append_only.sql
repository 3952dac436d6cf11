-- ledger_entries_append_only: its current definition, the one a fully migrated database runs.
--
-- Migrations are history and never change; this file is where the function
-- is read and reviewed. A change is made here and in a new migration that
-- carries the same text; `cargo test -p kiebot-store --test pg_functions`
-- fails while the two differ. Last defined by 20261124000000_initial_schema.sql.

CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END;
$$;
