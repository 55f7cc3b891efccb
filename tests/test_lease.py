"""The lease store alone: no OS, no netlink, liveness given as a plain callback."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tunhelper.errors import TunhelperError
from tunhelper.lease import (
    ACTIVE,
    RELEASED,
    Holder,
    Lease,
    PoolExhausted,
    Request,
    SqliteLeaseStore,
    open_store,
)
from tunhelper.pool import Pool

POOL = Pool.parse("192.168.3.0/29")  # clients .2-.6: five addresses


def holder(n: int = 1) -> Holder:
    return Holder("host", "boot", 1000 + n, 1.0, 2000 + n, 2.0, f"tun{n}")


def request(client: str, pool: Pool = POOL, excluded=None, n: int = 1) -> Request:
    return Request(
        pool=pool.name,
        first=pool.first,
        last=pool.last,
        excluded=pool.excluded([]) if excluded is None else excluded,
        client=client,
        holder=holder(n),
        address_of=pool.address,
    )


def always(_: Lease) -> bool:
    return True


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(str(tmp_path / "state"))
    yield s
    s.close()


def test_state_dir_created_private(tmp_path: Path) -> None:
    open_store(str(tmp_path / "new")).close()
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700


def test_state_dir_writable_by_others_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(TunhelperError, match="writable by others"):
        open_store(str(d))


def test_distinct_addresses_never_gateway(store: SqliteLeaseStore) -> None:
    got = [store.allocate(request(f"c{i}"), always).address for i in range(5)]
    assert got == ["192.168.3.2", "192.168.3.3", "192.168.3.4", "192.168.3.5", "192.168.3.6"]


def test_exhausted_pool_is_a_clear_error(store: SqliteLeaseStore) -> None:
    for i in range(5):
        store.allocate(request(f"c{i}"), always)
    with pytest.raises(PoolExhausted, match="exhausted"):
        store.allocate(request("late"), always)
    assert sum(lease.state == ACTIVE for lease in store.leases()) == 5


def test_excluded_addresses_skipped(store: SqliteLeaseStore) -> None:
    excluded = POOL.excluded(["192.168.3.2", "192.168.3.4"])
    got = [store.allocate(request(f"c{i}", excluded=excluded), always).address for i in range(3)]
    assert got == ["192.168.3.3", "192.168.3.5", "192.168.3.6"]


def test_sticky_after_release_in_either_order(store: SqliteLeaseStore) -> None:
    a = store.allocate(request("alice"), always)
    b = store.allocate(request("bob"), always)
    assert store.release(a) and store.release(b)
    assert store.allocate(request("bob"), always).address == b.address
    assert store.allocate(request("alice"), always).address == a.address


def test_new_clients_prefer_never_used_addresses(store: SqliteLeaseStore) -> None:
    a = store.allocate(request("alice"), always)
    store.release(a)
    assert store.allocate(request("carol"), always).address != a.address


def test_released_addresses_reused_oldest_first_when_fresh_run_out(store) -> None:
    leases = [store.allocate(request(f"c{i}"), always) for i in range(5)]
    store.release(leases[3])
    store.release(leases[1])
    assert store.allocate(request("new1"), always).address == leases[3].address
    assert store.allocate(request("new2"), always).address == leases[1].address


def test_live_lease_is_never_reclaimed(store: SqliteLeaseStore) -> None:
    for i in range(5):
        store.allocate(request(f"c{i}"), always)
    with pytest.raises(PoolExhausted):
        store.allocate(request("c0"), always)  # c0's own live session keeps its address


def test_dead_lease_reclaimed_and_old_release_is_harmless(store) -> None:
    leases = [store.allocate(request(f"c{i}"), always) for i in range(5)]
    dead = leases[2]
    alive = lambda lease: lease.token != dead.token  # noqa: E731
    new = store.allocate(request("newcomer"), alive)
    assert new.address == dead.address
    assert not store.release(dead)  # the dead holder's late release must not free it
    assert [x.state for x in store.leases() if x.address == dead.address] == [ACTIVE]


def test_dead_lease_returns_to_its_own_client_first(store) -> None:
    a = store.allocate(request("alice"), always)
    store.allocate(request("bob"), always)
    again = store.allocate(request("alice"), lambda lease: lease.token != a.token)
    assert again.address == a.address


def test_release_keeps_the_row_as_sticky_memory(store: SqliteLeaseStore) -> None:
    a = store.allocate(request("alice"), always)
    assert store.release(a)
    (row,) = store.leases()
    assert (row.state, row.client, row.address) == (RELEASED, "alice", a.address)
    assert not store.release(a)  # releasing twice changes nothing


def test_release_address_by_hand(store: SqliteLeaseStore) -> None:
    a = store.allocate(request("alice"), always)
    assert store.release_address(a.address) == 1
    assert store.release_address(a.address) == 0


def test_holder_recorded(store: SqliteLeaseStore) -> None:
    lease = store.allocate(request("alice", n=7), always)
    assert lease.holder == holder(7)
    assert store.leases()[0].holder == holder(7)


def test_corrupt_database_is_one_clear_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "leases.sqlite3").write_bytes(b"this is not a database" * 100)
    before = (state / "leases.sqlite3").read_bytes()
    with pytest.raises(TunhelperError, match="unusable.*left untouched"):
        open_store(str(state)).allocate(request("x"), always)
    assert (state / "leases.sqlite3").read_bytes() == before


def test_locked_database_waits_then_fails_clearly(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"), timeout=0.2)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TunhelperError, match="locked"):
            store.allocate(request("x"), always)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()


# -- many processes at once -------------------------------------------------------


def _hold_once(state: str, client: str, barrier, results) -> None:
    store = open_store(state, timeout=30)
    barrier.wait()
    try:
        lease = store.allocate(request(client), always)
        results.put(("ok", client, lease.address))
    except PoolExhausted:
        results.put(("exhausted", client, None))


def _churn(state: str, client: str, rounds: int, marks: str, errors) -> None:
    pool = Pool.parse("192.168.3.0/28")  # 13 client addresses for 20 processes
    store = open_store(state, timeout=30)
    for _ in range(rounds):
        try:
            lease = store.allocate(request(client, pool=pool), always)
        except PoolExhausted:
            continue
        mark = os.path.join(marks, lease.address)
        try:
            fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if held twice
            os.close(fd)
        except FileExistsError:
            errors.put(f"{lease.address} handed out twice")
            return
        os.unlink(mark)
        if not store.release(lease):
            errors.put(f"{lease.address} could not be released by its holder")
            return
    store.close()


def test_many_processes_one_small_pool_no_duplicates_nothing_lost(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    open_store(state).close()
    ctx = multiprocessing.get_context("fork")
    n = 12
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_hold_once, args=(state, f"c{i}", barrier, results)) for i in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    granted = [addr for kind, _, addr in outcomes if kind == "ok"]
    assert len(granted) == 5 and len(set(granted)) == 5  # all of a /29, each once
    assert sum(kind == "exhausted" for kind, _, _ in outcomes) == n - 5
    store = open_store(state)
    active = sorted(lease.address for lease in store.leases() if lease.state == ACTIVE)
    assert active == sorted(granted)  # nothing lost, nothing extra


def test_concurrent_churn_never_hands_an_address_out_twice(tmp_path: Path) -> None:
    state, marks = str(tmp_path / "state"), tmp_path / "marks"
    marks.mkdir()
    open_store(state).close()
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_churn, args=(state, f"c{i}", 25, str(marks), errors)) for i in range(20)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert errors.empty(), errors.get()
    store = open_store(state)
    assert [lease for lease in store.leases() if lease.state == ACTIVE] == []


def test_live_count_counts_one_clients_live_active_leases(store: SqliteLeaseStore) -> None:
    a1 = store.allocate(request("alice", n=1), always)
    a2 = store.allocate(request("alice", n=2), always)
    store.allocate(request("bob", n=3), always)
    assert store.live_count(POOL.name, "alice", always) == 2
    assert store.live_count(POOL.name, "alice", lambda lease: lease.token != a2.token) == 1
    store.release(a1)
    assert store.live_count(POOL.name, "alice", always) == 1
    assert store.live_count("10.0.0.0/24", "alice", always) == 0
