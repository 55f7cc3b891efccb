"""``tunhelper doctor``'s shared-store checks against a real PostgreSQL (tests/pg.py):
connection, schema version, the config file's mode, clock skew, overlapping pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_postgres import POOL, always, request
from tunhelper.admin import doctor_store
from tunhelper.liveness import this_host
from tunhelper.store import POSTGRESQL, StoreConfig, open_store, pgverify


@pytest.fixture
def server(pg_server):
    pg_server.reset()
    return pg_server


def conf(tmp_path: Path, conninfo: str, mode: int = 0o600) -> StoreConfig:
    path = tmp_path / "tunhelper.conf"
    path.write_text(f"[store]\nbackend = postgresql\nconninfo = {conninfo}\n")
    path.chmod(mode)
    return StoreConfig(POSTGRESQL, conninfo, 600.0, str(path))


def lines(findings) -> list[str]:
    return [str(f) for f in findings]


def levels(findings) -> set[str]:
    """The levels of the store's own findings (not the renew service's: no systemd here)."""
    return {f.level for f in findings if doctor_store.RENEW_SERVICE not in f.text}


def test_a_sound_store_is_all_ok_and_nothing_is_created(server, tmp_path: Path) -> None:
    config = conf(tmp_path, server.conninfo())
    found = doctor_store.check_store(config, [POOL.name])
    assert levels(found) == {"ok"}, lines(found)
    assert any("no schema yet" in line for line in lines(found))
    tables = server.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db="tunhelper"
    )
    assert tables == []  # the doctor changes nothing

    store = open_store(str(tmp_path / "state"), 5, config)
    store.allocate(request("a"), always)
    store.close()
    found = doctor_store.check_store(config, [POOL.name])
    assert levels(found) == {"ok"}, lines(found)
    assert any("schema version 2, as this tunhelper expects" in line for line in lines(found))


def test_a_newer_schema_is_an_error(server, tmp_path: Path) -> None:
    config = conf(tmp_path, server.conninfo())
    store = open_store(str(tmp_path / "state"), 5, config)
    store.allocate(request("a"), always)
    store.close()
    server.sql("UPDATE schema_version SET version = 99", db="tunhelper")
    found = doctor_store.check_store(config, [POOL.name])
    assert [x for x in lines(found) if x.startswith("error:")] == [
        f"error: {config.where}: schema version 99 is newer than this tunhelper's 2: its "
        "sessions are refused; upgrade tunhelper on this gateway"
    ]


def test_a_pool_overlapping_another_gateways_with_another_prefix(server, tmp_path) -> None:
    config = conf(tmp_path, server.conninfo())
    store = open_store(str(tmp_path / "state"), 5, config)
    store.allocate(request("a"), always)  # another gateway's pool: 10.9.0.0/29
    store.close()
    found = lines(doctor_store.check_store(config, ["10.9.0.0/28"]))
    assert any(
        x.startswith("error:") and "10.9.0.0/28 overlaps pool 10.9.0.0/29" in x for x in found
    )
    found = lines(doctor_store.check_store(config, ["10.9.0.0/29", "10.9.1.0/24"]))
    assert not [x for x in found if x.startswith("error:")], found


def test_unreachable_database_and_a_readable_password(server, tmp_path: Path) -> None:
    dead = "host=127.0.0.1 port=1 dbname=tunhelper user=tunhelper connect_timeout=2"
    found = doctor_store.check_store(conf(tmp_path, dead), [])
    assert [x for x in lines(found) if x.startswith("error:")][0].startswith(
        "error: " + str(tmp_path / "tunhelper.conf") + ": cannot reach the lease database ("
    )
    leaky = conf(tmp_path, server.conninfo("127.0.0.1"), mode=0o644)  # holds a password
    found = lines(doctor_store.check_store(leaky, []))
    assert any(x.startswith("error:") and "holds a password" in x for x in found), found


def test_clock_skew_against_the_database(server, tmp_path: Path, monkeypatch) -> None:
    config = conf(tmp_path, server.conninfo())
    real = pgverify.time.time
    monkeypatch.setattr(pgverify.time, "time", lambda: real() + 120)  # this clock ahead
    found = lines(doctor_store.check_store(config, []))
    assert any(x.startswith("error:") and "ahead of the database's" in x for x in found), found
    monkeypatch.setattr(pgverify.time, "time", lambda: real() - 3)
    found = lines(doctor_store.check_store(config, []))
    assert any(x.startswith("warning:") and "behind the database's" in x for x in found), found


def test_the_renewal_margin_of_this_gateway(server, tmp_path: Path) -> None:
    """The real margin: how long before this gateway's leases look expired elsewhere."""
    config = conf(tmp_path, server.conninfo())
    store = open_store(str(tmp_path / "state"), 5, config)
    store.allocate(request("a", host=this_host()), always)
    store.allocate(request("b", host="another-gateway", n=2), always)
    store.close()

    def margin() -> str:
        (line,) = [x for x in lines(doctor_store.check_store(config, [])) if "active lease" in x]
        return line

    assert margin().startswith(f"ok: {config.where}: this gateway's 1 active lease(s) expire in")
    set_left = "UPDATE leases SET expires = extract(epoch FROM now()) + {} WHERE client = 'a'"
    server.sql(set_left.format(200), db="tunhelper")  # under half the lifetime: one missed
    assert margin().startswith("warning:") and "a renewal was missed" in margin()
    server.sql(set_left.format(-5), db="tunhelper")
    assert margin().startswith(f"error: {config.where}: this gateway's 1 active lease(s) expired")
    assert "other gateways count them dead" in margin()
    service = [x for x in lines(doctor_store.check_store(config, [])) if "renew.service is" in x]
    assert len(service) == 1, service
