"""A database left by an older tunhelper (schema version 1) is migrated under the lock,
its leases kept; a real PostgreSQL (tests/pg.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_postgres import always, config, request
from tunhelper.store import RELEASED, open_store, pgschema

VERSION_1 = [
    s
    if s != pgschema.RELEASED_INDEX
    else "CREATE INDEX IF NOT EXISTS leases_by_state ON leases (pool, state, released_at)"
    for s in pgschema.SCHEMA
    if s != pgschema.GRANT_FUNCTION
]


@pytest.fixture
def server(pg_server):
    pg_server.reset()
    pg_server.sql("DROP FUNCTION IF EXISTS tunhelper_grant", db="tunhelper")
    return pg_server


def test_version_1_is_migrated_and_its_leases_kept(server, tmp_path: Path) -> None:
    as_owner = "SET ROLE tunhelper; "  # as the old tunhelper made them
    for statement in VERSION_1:
        server.sql(as_owner + statement, db="tunhelper")
    server.sql(as_owner + "CREATE TABLE schema_version (version integer NOT NULL)", db="tunhelper")
    server.sql("INSERT INTO schema_version VALUES (1)", db="tunhelper")
    server.sql(
        "INSERT INTO leases VALUES ('10.9.0.0/29', 2, '10.9.0.2', 'old', 'released', 't0', "
        "1.0, 2.0, 'gw9', 'b', 1, 1.0, 1, 1.0, 'tun0', NULL)",
        db="tunhelper",
    )
    server.sql("INSERT INTO pools VALUES ('10.9.0.0/29', 2)", db="tunhelper")

    store = open_store(str(tmp_path / "s"), 5, config(server))
    lease = store.allocate(request("old"), always)  # the returning client: sticky
    assert lease.address == "10.9.0.2"
    fresh = store.allocate(request("new", n=2), always)
    assert fresh.address == "10.9.0.3"
    store.close()
    version = server.sql("SELECT version FROM schema_version", db="tunhelper")
    assert version == [(pgschema.SCHEMA_VERSION,)]
    indexes = {name for (name,) in server.sql("SELECT indexname FROM pg_indexes", db="tunhelper")}
    assert "leases_released" in indexes and "leases_by_state" not in indexes
    ours = server.sql("SELECT 1 FROM pg_proc WHERE proname = 'tunhelper_grant'", db="tunhelper")
    assert ours == [(1,)]
    store = open_store(str(tmp_path / "s"), 5, config(server))
    assert store.release(lease) and store.release(fresh)
    assert {x.state for x in store.all_leases()} == {RELEASED}
    store.close()
