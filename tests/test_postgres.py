"""The PostgreSQL store's own behaviour, against a real server (tests/pg.py): the
environment ignored, the schema version, releases queued while the database is away,
lifetimes across gateways, renewal, and many processes allocating at once.

The order of preference itself is tested for both backends in tests/test_lease.py.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tunhelper import conffile
from tunhelper.errors import TunhelperError, UsageError
from tunhelper.liveness import Liveness
from tunhelper.pool import Pool
from tunhelper.store import (
    ACTIVE,
    POSTGRESQL,
    RELEASED,
    Lease,
    Owner,
    PoolExhausted,
    Request,
    StoreConfig,
    open_store,
    renew_period,
)

POOL = Pool.parse("10.9.0.0/29")


def request(client: str, host: str = "gw1", pool: Pool = POOL, n: int = 1) -> Request:
    return Request(
        pool=pool.name,
        first=pool.first,
        last=pool.last,
        excluded=pool.excluded([]),
        client=client,
        owner=Owner(host, "boot", 1000 + n, 1.0, 2000 + n, 2.0, f"tun{n}"),
        address_of=pool.address,
    )


def always(_: Lease) -> bool:
    return True


@pytest.fixture
def server(pg_server):
    pg_server.reset()
    return pg_server


def config(server, lifetime: float = 600.0) -> StoreConfig:
    return StoreConfig(POSTGRESQL, server.conninfo(), lifetime, "test.conf")


# -- configuration ------------------------------------------------------------------


def write_conf(tmp_path: Path, text: str, mode: int = 0o644) -> str:
    path = tmp_path / "tunhelper.conf"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_store_section_read(tmp_path: Path) -> None:
    path = write_conf(
        tmp_path,
        "[store]\nbackend = postgresql\n"
        "conninfo = host=db1,db2 dbname=th target_session_attrs=read-write\nlifetime = 30\n",
    )
    got = conffile.store(path, conffile.read(path))
    assert got == StoreConfig(
        POSTGRESQL, "host=db1,db2 dbname=th target_session_attrs=read-write", 30.0, path
    )
    service = write_conf(tmp_path, "[store]\nbackend = postgresql\nservice = fleet\n")
    assert conffile.store(service, conffile.read(service)).conninfo == "service=fleet"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[store]\nbackend = mysql\n", "backend: give sqlite or postgresql"),
        ("[store]\nbackend = postgresql\n", "needs conninfo"),
        ("[store]\nbackend = postgresql\nconninfo = x\nlifetime = 1\n", "lifetime"),
        ("[store]\nhost = db\n", "not a store setting"),
        ("[store]\nconninfo = a\nservice = b\n", "not both"),
    ],
)
def test_store_section_errors_are_one_line(tmp_path: Path, text: str, expect: str) -> None:
    path = write_conf(tmp_path, text)
    with pytest.raises(UsageError) as e:
        conffile.store(path, conffile.read(path))
    assert expect in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("lifetime", ["14.9", "10", "5"])
def test_a_lifetime_the_renew_schedule_cannot_keep_is_refused(tmp_path, lifetime) -> None:
    """Renewed every lifetime/3, each renewal waiting up to half of that (libpq waits at
    least 2 s): under 15 s a slow database lets a live lease expire."""
    path = write_conf(
        tmp_path, f"[store]\nbackend = postgresql\nconninfo = x\nlifetime = {lifetime}\n"
    )
    with pytest.raises(UsageError) as e:
        conffile.store(path, conffile.read(path))
    assert str(e.value) == (
        f"{path}:4: lifetime: {lifetime} s is too short for the renew service (a renewal every "
        "lifetime/3, each waiting up to half of that): give at least 15"
    )
    path = write_conf(tmp_path, "[store]\nbackend = postgresql\nconninfo = x\nlifetime = 15\n")
    config = conffile.store(path, conffile.read(path))
    assert config.lifetime == 15 and renew_period(config.lifetime) == 5


@pytest.mark.parametrize("conninfo", ["host=db password=s3cret", "postgresql://th:s3cret@db/th"])
def test_a_password_needs_a_private_file(tmp_path: Path, conninfo: str) -> None:
    text = f"[store]\nbackend = postgresql\nconninfo = {conninfo}\n"
    with pytest.raises(UsageError, match="chmod 600"):
        conffile.read(write_conf(tmp_path, text, 0o644))
    path = write_conf(tmp_path, text, 0o600)
    assert conffile.store(path, conffile.read(path)).conninfo == conninfo


def test_sqlite_path_does_not_import_psycopg(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tunhelper.store import open_store; "
        f"open_store({str(tmp_path / 's')!r}).close(); "
        "from tunhelper.server import session; "
        "print('psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- connecting -----------------------------------------------------------------------


def test_libpq_environment_is_ignored(server, tmp_path: Path, monkeypatch) -> None:
    """PG* variables a client could send through sshd's AcceptEnv change nothing."""
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "standby")  # would refuse our primary
    monkeypatch.setenv("PGOPTIONS", "-c default_transaction_read_only=on")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "evil-pgpass"))
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "evil-service"))
    store = open_store(str(tmp_path / "s"), 5, config(server))
    try:
        assert store.allocate(request("a"), always).address == "10.9.0.2"
        assert not [k for k in os.environ if k.startswith("PG") and k != "PGSERVICEFILE"]
        assert os.environ["PGSERVICEFILE"].endswith("/.pg_service.conf")
        assert str(tmp_path) not in os.environ["PGSERVICEFILE"]
    finally:
        store.close()


def test_multi_host_conninfo_skips_a_dead_host(server, tmp_path: Path) -> None:
    conninfo = (
        f"host=/nonexistent,{server.sockets} port={server.port},{server.port} "
        "dbname=tunhelper user=tunhelper target_session_attrs=read-write"
    )
    store = open_store(str(tmp_path / "s"), 5, StoreConfig(POSTGRESQL, conninfo))
    try:
        assert store.allocate(request("a"), always).address == "10.9.0.2"
    finally:
        store.close()


def test_database_away_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    from tests.pg import free_port

    away = StoreConfig(POSTGRESQL, f"host=127.0.0.1 port={free_port()} dbname=x user=x")
    started = time.monotonic()
    store = open_store(str(tmp_path / "s"), 2, away)
    with pytest.raises(TunhelperError) as e:
        store.allocate(request("a"), always)
    assert time.monotonic() - started < 4
    assert str(e.value).startswith("cannot reach the lease database")
    assert "\n" not in str(e.value)


# -- schema ---------------------------------------------------------------------------


def test_schema_version_recorded_and_a_newer_one_refused(server, tmp_path: Path) -> None:
    from tunhelper.store.postgres import SCHEMA_VERSION

    store = open_store(str(tmp_path / "s"), 5, config(server))
    store.allocate(request("a"), always)
    store.close()
    assert server.sql("SELECT version FROM schema_version", db="tunhelper") == [(SCHEMA_VERSION,)]
    server.sql("UPDATE schema_version SET version = 99", db="tunhelper")
    store = open_store(str(tmp_path / "s"), 5, config(server))
    with pytest.raises(TunhelperError, match="version 99, newer .* upgrade tunhelper"):
        store.all_leases()
    assert len(server.sql("SELECT * FROM leases", db="tunhelper")) == 1  # untouched


def test_many_gateways_creating_the_schema_at_once(server, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_first_allocation, args=(config(server), str(tmp_path), i, results))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(got) == [f"10.9.0.{i}" for i in range(2, 7)] + ["exhausted"] * 3


def _first_allocation(cfg: StoreConfig, state: str, i: int, results) -> None:
    store = open_store(state, 30, cfg)
    try:
        results.put(store.allocate(request(f"c{i}"), always).address)
    except PoolExhausted:
        results.put("exhausted")
    except TunhelperError as e:
        results.put(str(e))


def test_a_duplicate_active_address_cannot_be_written(server, tmp_path: Path) -> None:
    """Not only unlikely: the primary key and a partial unique index refuse it."""
    import psycopg

    store = open_store(str(tmp_path / "s"), 5, config(server))
    lease = store.allocate(request("a"), always)
    store.close()
    with pytest.raises(psycopg.errors.UniqueViolation):
        server.sql(
            "INSERT INTO leases SELECT pool, slot, address, 'b', state, 'x', since, "
            "released_at, host, boot_id, helper_pid, helper_start, session_pid, "
            "session_start, device, expires FROM leases",
            db="tunhelper",
        )
    with pytest.raises(psycopg.errors.UniqueViolation):  # same address, another pool name
        server.sql(
            f"INSERT INTO leases SELECT 'other', slot, address, 'b', state, 'x', since, "
            f"released_at, host, boot_id, helper_pid, helper_start, session_pid, "
            f"session_start, device, expires FROM leases WHERE address = '{lease.address}'",
            db="tunhelper",
        )


# -- the database going away ------------------------------------------------------------


def test_a_release_the_database_missed_is_queued_and_done_later(server, tmp_path) -> None:
    from tests.pg import free_port

    state = str(tmp_path / "s")
    store = open_store(state, 5, config(server))
    lease = store.allocate(request("a"), always)
    store.close()
    away = StoreConfig(POSTGRESQL, f"host=127.0.0.1 port={free_port()} dbname=x user=x")
    assert open_store(state, 2, away).release(lease)  # queued, not lost
    queued = Path(state) / "pending-releases"
    assert stat.S_IMODE(queued.stat().st_mode) == 0o600
    assert [x.state for x in open_store(state, 5, config(server)).all_leases()] == [RELEASED]
    assert not queued.exists()


# -- lifetimes across gateways ----------------------------------------------------------


def test_another_gateways_lease_lives_until_it_expires(server, tmp_path: Path) -> None:
    here = Liveness()
    other = open_store(str(tmp_path / "o"), 5, config(server, lifetime=2))
    for i in range(5):
        other.allocate(request(f"c{i}", host=f"{here.host}-other", n=i), always)
    mine = open_store(str(tmp_path / "m"), 5, config(server))
    with pytest.raises(PoolExhausted):
        mine.allocate(request("new", host=here.host), here)  # all live on gw "other"
    time.sleep(2.2)
    got = mine.allocate(request("new", host=here.host), here)
    assert got.address == "10.9.0.2"  # the oldest expired one


def test_a_rebooted_gateway_reclaims_its_own_leases_at_once(server, tmp_path: Path) -> None:
    """Its own leases from before the reboot are dead at once, though unexpired; another
    gateway's equally unexpired ones are not touched."""
    here = Liveness()
    store = open_store(str(tmp_path / "s"), 5, config(server, lifetime=600))
    before = Owner(here.host, f"not-{here.boot_id}", 4000, 1.0, 4001, 2.0, "tun0")
    for i in range(4):
        store.allocate(replace(request(f"c{i}", n=i), owner=before), always)
    store.allocate(request("elsewhere", host=f"{here.host}-other"), always)
    assert len(store.all_leases()) == 5 and all(
        x.expires > time.time() + 500 for x in store.all_leases()
    )
    got = store.allocate(request("new", host=here.host), here)
    assert got.address == "10.9.0.2"  # the first of the pre-reboot leases, reclaimed now
    held = {x.address: x.client for x in store.all_leases() if x.state == ACTIVE}
    assert held["10.9.0.6"] == "elsewhere"  # the other gateway's lease stays


def test_leases_of_names_its_identities_and_pools_never_everyone(server, tmp_path) -> None:
    store = open_store(str(tmp_path / "s"), 5, config(server))
    for i, who in enumerate(("alice", "bob", "carol")):
        store.allocate(request(who, n=i), always)
    assert [x.client for x in store.leases_of({"alice"}, [POOL.name])] == ["alice"]
    assert sorted(x.client for x in store.leases_of(["carol", "alice"], {POOL.name})) == [
        "alice",
        "carol",
    ]
    assert store.leases_of({"alice"}, ["10.0.0.0/24"]) == []
    assert len(store.all_leases()) == 3
    for identities, pools in (([], [POOL.name]), (["alice"], []), ("alice", [POOL.name])):
        with pytest.raises(ValueError, match="non-empty"):
            store.leases_of(identities, pools)


def test_renew_moves_on_live_leases_and_releases_dead_ones(server, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"), 5, config(server, lifetime=60))
    a = store.allocate(request("a"), always)
    b = store.allocate(request("b"), always)
    store.allocate(request("c", host="gw2"), always)
    before = {x.token: x.expires for x in store.all_leases()}
    time.sleep(0.05)
    assert store.renew("gw1", lambda lease: lease.token == a.token) == (1, 1)
    after = {x.token: x for x in store.all_leases()}
    assert after[a.token].expires > before[a.token]
    assert after[b.token].state == RELEASED
    assert [x.state for x in after.values() if x.owner.host == "gw2"] == [ACTIVE]


# -- many processes, one pool -------------------------------------------------------------


def _grab(cfg: StoreConfig, state: str, i: int, barrier, results) -> None:
    store = open_store(state, 60, cfg)
    pool = Pool.parse("10.8.0.0/25")  # 125 client addresses
    barrier.wait()
    try:
        lease = store.allocate(request(f"c{i}", host=f"gw{i % 3}", pool=pool, n=i), always)
        results.put(lease.address)
    except PoolExhausted:
        results.put(None)
    except TunhelperError as e:
        results.put(f"error: {e}")
    store.close()


def test_many_processes_of_three_gateways_never_share_an_address(server, tmp_path) -> None:
    n = 150
    open_store(str(tmp_path), 5, config(server)).close()
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_grab, args=(config(server), str(tmp_path), i, barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert not [g for g in got if g and g.startswith("error")], got
    granted = [g for g in got if g]
    assert len(granted) == 125 and len(set(granted)) == 125
    rows = server.sql("SELECT address FROM leases WHERE state = 'active'", db="tunhelper")
    assert sorted(a for (a,) in rows) == sorted(granted)


def test_the_fleet_example_config_is_valid() -> None:
    from tests.lab import REPO

    path = str(REPO / "contrib" / "fleet" / "tunhelper.conf")
    got = conffile.store(path, conffile.read(path))
    assert got.backend == POSTGRESQL and "target_session_attrs=read-write" in got.conninfo
