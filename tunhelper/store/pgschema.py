"""The PostgreSQL store's schema: tables, the one-statement grant, migrations.

Version 2 added :data:`GRANT_FUNCTION`, so that the common allocations (a new client,
a returning client whose address is released, another client's address released
longest ago) lock the pool's row for one statement inside the server instead of
across several round trips of Python, and replaced the index on (pool, state,
released_at) by one of released rows only (docs/performance.md has the figures).
"""

from __future__ import annotations

SCHEMA_VERSION = 2
FAST_GRANT_FAILED = "TH001"  # SQLSTATE: the grant's row was not as judged; nothing kept

# The allocation without liveness judgement, in one statement: lock the pool's row,
# then the client's own released address (none of its rows active: an active one needs
# its holder judged, in Python), else the lowest never-used slot (holes, then the
# high-water mark), else the address released longest ago; grant it by the same
# compare-and-swap as the Python path. Returns the slot, or NULL: take the Python path
# (a pool new to the store, an active row of the client, a pool where only reclaiming
# is left). A row not as judged raises FAST_GRANT_FAILED, undoing the statement.
GRANT_FUNCTION = """
CREATE OR REPLACE FUNCTION tunhelper_grant(
    p_pool text, p_client text, p_first integer, p_last integer, p_excluded integer[],
    p_base inet, p_token text, p_now double precision, p_expires double precision,
    p_host text, p_boot_id text, p_helper_pid integer, p_helper_start double precision,
    p_session_pid integer, p_session_start double precision, p_device text
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_high integer;
    v_slot integer;
    v_old text;
    v_from integer;
    v_rows integer;
    v_row record;
BEGIN
    SELECT high_water INTO v_high FROM pools WHERE pool = p_pool FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- the client's rows by (pool, client) only: a condition on state would let the
    -- planner walk every active row of the pool by the state index
    FOR v_row IN SELECT slot, token, state FROM leases
            WHERE pool = p_pool AND client = p_client ORDER BY since DESC LOOP
        IF v_row.state = 'active' THEN
            RETURN NULL;
        END IF;
        IF v_slot IS NULL AND v_row.slot BETWEEN p_first AND p_last
                AND NOT (v_row.slot = ANY (p_excluded)) THEN
            v_slot := v_row.slot;
            v_old := v_row.token;
        END IF;
    END LOOP;
    IF v_slot IS NULL THEN
        SELECT slot INTO v_slot FROM pool_holes
            WHERE pool = p_pool AND slot BETWEEN p_first AND p_last
            AND NOT (slot = ANY (p_excluded))
            ORDER BY slot LIMIT 1;
        IF v_slot IS NOT NULL THEN
            DELETE FROM pool_holes WHERE pool = p_pool AND slot = v_slot;
        ELSE
            v_from := greatest(v_high + 1, p_first);
            v_slot := v_from;
            WHILE v_slot = ANY (p_excluded) LOOP
                v_slot := v_slot + 1;
            END LOOP;
            IF v_slot <= p_last THEN
                INSERT INTO pool_holes (pool, slot)
                    SELECT p_pool, s FROM generate_series(v_from, v_slot - 1) s
                    ON CONFLICT DO NOTHING;
                UPDATE pools SET high_water = v_slot WHERE pool = p_pool;
            ELSE
                v_slot := NULL;
            END IF;
        END IF;
    END IF;
    IF v_slot IS NULL THEN
        SELECT slot, token INTO v_slot, v_old FROM leases
            WHERE pool = p_pool AND state = 'released' AND slot BETWEEN p_first AND p_last
            AND NOT (slot = ANY (p_excluded))
            ORDER BY released_at LIMIT 1;
        IF v_slot IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO leases (pool, slot, address, client, state, token, since, released_at,
                        host, boot_id, helper_pid, helper_start, session_pid,
                        session_start, device, expires)
        VALUES (p_pool, v_slot, host(p_base + v_slot), p_client, 'active', p_token, p_now,
                NULL, p_host, p_boot_id, p_helper_pid, p_helper_start, p_session_pid,
                p_session_start, p_device, p_expires)
        ON CONFLICT (pool, slot) DO UPDATE SET
            address = EXCLUDED.address, client = EXCLUDED.client, state = EXCLUDED.state,
            token = EXCLUDED.token, since = EXCLUDED.since, released_at = NULL,
            host = EXCLUDED.host, boot_id = EXCLUDED.boot_id,
            helper_pid = EXCLUDED.helper_pid, helper_start = EXCLUDED.helper_start,
            session_pid = EXCLUDED.session_pid, session_start = EXCLUDED.session_start,
            device = EXCLUDED.device, expires = EXCLUDED.expires
        WHERE leases.token = coalesce(v_old, '');
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows <> 1 THEN
        RAISE EXCEPTION 'the grant''s row changed' USING ERRCODE = 'TH001';
    END IF;
    RETURN v_slot;
END
$$
"""

# Released rows only, for "released longest ago": version 1's index on (pool, state,
# released_at) let the planner, without statistics yet, walk every active row of a
# large pool for a release by (pool, slot) (15 ms in a /16 at 90%, not 0.1 ms).
RELEASED_INDEX = (
    "CREATE INDEX IF NOT EXISTS leases_released ON leases (pool, released_at) "
    "WHERE state = 'released'"
)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS leases (
        pool          text             NOT NULL,
        slot          integer          NOT NULL,
        address       text             NOT NULL,
        client        text             NOT NULL,
        state         text             NOT NULL CHECK (state IN ('active', 'released')),
        token         text             NOT NULL,
        since         double precision NOT NULL,
        released_at   double precision,
        host          text             NOT NULL,
        boot_id       text             NOT NULL,
        helper_pid    integer          NOT NULL,
        helper_start  double precision NOT NULL,
        session_pid   integer          NOT NULL,
        session_start double precision NOT NULL,
        device        text             NOT NULL,
        expires       double precision,
        PRIMARY KEY (pool, slot)
    )""",
    "CREATE INDEX IF NOT EXISTS leases_by_client ON leases (pool, client)",
    RELEASED_INDEX,
    "CREATE INDEX IF NOT EXISTS leases_by_host ON leases (host) WHERE state = 'active'",
    # One active row per address across pools too: overlapping pools of two gateways
    # must not hand one address to two clients (doctor reports such pools).
    "CREATE UNIQUE INDEX IF NOT EXISTS one_active_address ON leases (address) "
    "WHERE state = 'active'",
    """CREATE TABLE IF NOT EXISTS pools (
        pool       text    NOT NULL PRIMARY KEY,
        high_water integer NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS pool_holes (
        pool text    NOT NULL,
        slot integer NOT NULL,
        PRIMARY KEY (pool, slot)
    )""",
    GRANT_FUNCTION,
]
# Migrations from version N to N+1, run under the schema lock.
MIGRATIONS: dict[int, list[str]] = {
    1: ["DROP INDEX IF EXISTS leases_by_state", RELEASED_INDEX, GRANT_FUNCTION],
}
