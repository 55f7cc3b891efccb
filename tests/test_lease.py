"""The lease store alone: no OS, no netlink, liveness given as a plain callback.

Every test that is about the interface runs against both backends: SQLite, and a real
PostgreSQL server started by the harness (tests/pg.py); those about SQLite's file only
against SQLite.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tunhelper.store.sqlite as lease_module
from tunhelper.errors import TunhelperError
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
)
from tunhelper.store.sqlite import SqliteLeaseStore

POOL = Pool.parse("192.168.3.0/29")  # clients .2-.6: five addresses


def holder(n: int = 1) -> Owner:
    return Owner("host", "boot", 1000 + n, 1.0, 2000 + n, 2.0, f"tun{n}")


def request(client: str, pool: Pool = POOL, excluded=None, n: int = 1) -> Request:
    return Request(
        pool=pool.name,
        first=pool.first,
        last=pool.last,
        excluded=pool.excluded([]) if excluded is None else excluded,
        client=client,
        owner=holder(n),
        address_of=pool.address,
    )


def always(_: Lease) -> bool:
    return True


class Backend:
    """Opens stores of one backend; the PostgreSQL one empties its database first."""

    def __init__(self, name: str, server=None) -> None:
        self.name, self.server = name, server
        self.config = None if server is None else StoreConfig(POSTGRESQL, server.conninfo())

    def open(self, state: str, timeout: float = 10.0):
        return open_store(state, timeout, self.config)

    def fresh(self, state: str):
        if self.server is not None:
            self.server.reset()
        return self.open(state)

    @property
    def module(self):
        if self.server is None:
            return lease_module
        import tunhelper.store.postgres as pg_module

        return pg_module


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite")
    server = request.getfixturevalue("pg_server")
    server.reset()
    return Backend("postgresql", server)


@pytest.fixture
def store(tmp_path: Path, backend: Backend):
    s = backend.open(str(tmp_path / "state"))
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


@pytest.mark.parametrize("mode", [0o710, 0o701, 0o750, 0o755])
def test_state_dir_others_can_enter_refused(tmp_path: Path, mode: int) -> None:
    """Entering is enough to read 0644 files or hold SQLite's shared lock."""
    d = tmp_path / "enterable"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(TunhelperError, match="open to others"):
        open_store(str(d))


def test_everything_in_the_state_dir_is_private(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    (d / "old.lock").write_text("")
    (d / "old.lock").chmod(0o644)  # as an older version left it
    store = open_store(str(d))
    pool = Pool.parse("10.0.0.0/24")
    holder = Owner("h", "b", 1, 1.0, 2, 2.0, "tun0")
    store.allocate(
        Request(pool.name, pool.first, pool.last, set(), "c", holder, pool.address),
        lambda lease: True,
    )
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}
    store.close()
    assert {n for n in modes if n.startswith("leases.sqlite3")} >= {"leases.sqlite3"}
    assert set(modes.values()) == {0o600}, modes


def test_distinct_addresses_never_gateway(store: SqliteLeaseStore) -> None:
    got = [store.allocate(request(f"c{i}"), always).address for i in range(5)]
    assert got == ["192.168.3.2", "192.168.3.3", "192.168.3.4", "192.168.3.5", "192.168.3.6"]


def test_exhausted_pool_is_a_clear_error(store: SqliteLeaseStore) -> None:
    for i in range(5):
        store.allocate(request(f"c{i}"), always)
    with pytest.raises(PoolExhausted, match="exhausted"):
        store.allocate(request("late"), always)
    assert sum(lease.state == ACTIVE for lease in store.all_leases()) == 5


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
    assert [x.state for x in store.all_leases() if x.address == dead.address] == [ACTIVE]


def test_dead_lease_returns_to_its_own_client_first(store) -> None:
    a = store.allocate(request("alice"), always)
    store.allocate(request("bob"), always)
    again = store.allocate(request("alice"), lambda lease: lease.token != a.token)
    assert again.address == a.address


def test_release_keeps_the_row_as_sticky_memory(store: SqliteLeaseStore) -> None:
    a = store.allocate(request("alice"), always)
    assert store.release(a)
    (row,) = store.all_leases()
    assert (row.state, row.client, row.address) == (RELEASED, "alice", a.address)
    assert not store.release(a)  # releasing twice changes nothing


def test_holder_recorded(store: SqliteLeaseStore) -> None:
    lease = store.allocate(request("alice", n=7), always)
    assert lease.owner == holder(7)
    assert store.all_leases()[0].owner == holder(7)


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


def _hold_once(backend: Backend, state: str, client: str, barrier, results) -> None:
    store = backend.open(state, timeout=30)
    barrier.wait()
    try:
        lease = store.allocate(request(client), always)
        results.put(("ok", client, lease.address))
    except PoolExhausted:
        results.put(("exhausted", client, None))


def _churn(backend: Backend, state: str, client: str, rounds: int, marks: str, errors) -> None:
    pool = Pool.parse("192.168.3.0/28")  # 13 client addresses for 20 processes
    store = backend.open(state, timeout=30)
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


def test_many_processes_one_small_pool_no_duplicates_nothing_lost(tmp_path, backend) -> None:
    state = str(tmp_path / "state")
    backend.open(state).close()
    ctx = multiprocessing.get_context("fork")
    n = 12
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_hold_once, args=(backend, state, f"c{i}", barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    granted = [addr for kind, _, addr in outcomes if kind == "ok"]
    assert len(granted) == 5 and len(set(granted)) == 5  # all of a /29, each once
    assert sum(kind == "exhausted" for kind, _, _ in outcomes) == n - 5
    store = backend.open(state)
    active = sorted(lease.address for lease in store.all_leases() if lease.state == ACTIVE)
    assert active == sorted(granted)  # nothing lost, nothing extra


def test_concurrent_churn_never_hands_an_address_out_twice(tmp_path, backend) -> None:
    state, marks = str(tmp_path / "state"), tmp_path / "marks"
    marks.mkdir()
    backend.open(state).close()
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_churn, args=(backend, state, f"c{i}", 25, str(marks), errors))
        for i in range(20)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert errors.empty(), errors.get()
    store = backend.open(state)
    assert [lease for lease in store.all_leases() if lease.state == ACTIVE] == []


# -- never-used slots: high-water mark and holes ------------------------------------

# The schema of the store before it kept a high-water mark: a database written by it
# has only this table.
OLD_SCHEMA = """
CREATE TABLE leases (
    pool TEXT NOT NULL, slot INTEGER NOT NULL, address TEXT NOT NULL,
    client TEXT NOT NULL, state TEXT NOT NULL, token TEXT NOT NULL, since REAL NOT NULL,
    released_at REAL, host TEXT NOT NULL, boot_id TEXT NOT NULL,
    helper_pid INTEGER NOT NULL, helper_start REAL NOT NULL,
    session_pid INTEGER NOT NULL, session_start REAL NOT NULL, device TEXT NOT NULL,
    PRIMARY KEY (pool, slot)
);
CREATE INDEX leases_by_client ON leases (pool, client);
CREATE INDEX leases_by_state ON leases (pool, state, released_at);
"""


def write_row(where, slot: int, client: str, state: str = ACTIVE, pool: Pool = POOL) -> None:
    """Write a lease row directly, as an older tunhelper (or an admin) would.

    ``where`` is a SQLite file's path, or an open store of either backend."""
    released = 2.0 + slot if state == RELEASED else None
    row = (pool.name, slot, pool.address(slot), client, state, f"t{slot}", 1.0 + slot,
           released, "host", "boot", 1, 1.0, 2, 2.0, "tun9")  # fmt: skip
    if not isinstance(where, str) and not hasattr(where, "path"):  # PostgreSQL
        marks = ", ".join("%s" for _ in row)
        where._db.execute(f"INSERT INTO leases VALUES ({marks})", row)  # noqa: S608
        return
    db = sqlite3.connect(where if isinstance(where, str) else where.path, isolation_level=None)
    db.execute(f"INSERT INTO leases VALUES ({', '.join('?' for _ in row)})", row)  # noqa: S608
    db.close()


def delete_row(store, address: str) -> None:
    if not hasattr(store, "path"):
        store._db.execute("DELETE FROM leases WHERE address = %s", (address,))
        return
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("DELETE FROM leases WHERE address = ?", (address,))
    db.close()


def addresses(store: SqliteLeaseStore, clients, **kwargs) -> list[str]:
    return [store.allocate(request(c, **kwargs), always).address for c in clients]


def test_excluded_slot_above_the_mark_is_skipped_and_later_used_first(store) -> None:
    assert addresses(store, ["a"]) == ["192.168.3.2"]
    skip_3 = POOL.excluded(["192.168.3.3"])
    assert addresses(store, ["b", "c"], excluded=skip_3) == ["192.168.3.4", "192.168.3.5"]
    # .3 was never handed out: once no longer excluded, it is the lowest never-used one.
    assert addresses(store, ["d", "e"]) == ["192.168.3.3", "192.168.3.6"]


def test_excluded_slot_below_the_mark_stays_excluded_until_freed(store) -> None:
    addresses(store, ["a", "b"], excluded=POOL.excluded(["192.168.3.2"]))  # .3, .4
    assert addresses(store, ["c"], excluded=POOL.excluded(["192.168.3.2"])) == ["192.168.3.5"]
    assert addresses(store, ["d"]) == ["192.168.3.2"]


def test_the_gateway_slot_is_handed_out_when_it_is_no_longer_the_gateway(store) -> None:
    assert addresses(store, ["a", "b"]) == ["192.168.3.2", "192.168.3.3"]
    moved = Pool.parse("192.168.3.0/29", gateway="192.168.3.6")
    assert addresses(store, ["c"], excluded=moved.excluded([])) == ["192.168.3.1"]


def test_released_and_reclaimed_slots_do_not_count_as_never_used(store) -> None:
    leases = [store.allocate(request(c), always) for c in ("a", "b", "c")]
    store.release(leases[0])
    dead = leases[1]
    alive = lambda lease: lease.token != dead.token  # noqa: E731
    got = [store.allocate(request(c), alive).address for c in ("x", "y", "z", "w")]
    # Never-used .5 and .6 first, then the released .2, then the dead holder's .3.
    assert got == ["192.168.3.5", "192.168.3.6", "192.168.3.2", "192.168.3.3"]


def bookkeeping(store: SqliteLeaseStore, pool: Pool = POOL) -> tuple[int, list[int]]:
    """The pool's high-water mark and holes, as the store keeps them."""
    db, mark = store._db, "?" if hasattr(store, "path") else "%s"
    (high,) = db.execute(
        f"SELECT high_water FROM pools WHERE pool = {mark}", (pool.name,)
    ).fetchone()
    holes = db.execute(
        f"SELECT slot FROM pool_holes WHERE pool = {mark} ORDER BY slot",  # noqa: S608
        (pool.name,),
    )
    return high, [s for (s,) in holes]


def test_high_water_mark_and_holes_follow_first_use_only(store) -> None:
    a, b = (store.allocate(request(c), always) for c in ("a", "b"))
    assert bookkeeping(store) == (3, [1])  # .1 is the gateway: never handed out
    store.allocate(request("c", excluded=POOL.excluded(["192.168.3.4"])), always)
    assert bookkeeping(store) == (5, [1, 4])
    store.release(a)
    store.allocate(request("d", excluded=POOL.excluded(["192.168.3.4", "192.168.3.6"])), always)
    assert bookkeeping(store) == (5, [1, 4])  # the released .2 again: not a first use
    dead = lambda lease: lease.token != b.token  # noqa: E731
    store.allocate(request("e", excluded=POOL.excluded(["192.168.3.4", "192.168.3.6"])), dead)
    assert bookkeeping(store) == (5, [1, 4])  # b's .3 reclaimed: not a first use either
    store.allocate(request("f"), always)
    assert bookkeeping(store) == (5, [1])  # the hole .4 filled


def test_pools_are_kept_apart(store: SqliteLeaseStore) -> None:
    other = Pool.parse("10.0.0.0/29")
    assert addresses(store, ["a", "b"]) == ["192.168.3.2", "192.168.3.3"]
    assert addresses(store, ["a", "b"], pool=other) == ["10.0.0.2", "10.0.0.3"]
    assert addresses(store, ["c"]) == ["192.168.3.4"]


def test_database_written_before_the_mark_existed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = str(state / "leases.sqlite3")
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    for slot in (2, 3, 5):  # .4 never used; .2 and .5 still held
        write_row(path, slot, f"old{slot}", RELEASED if slot == 3 else ACTIVE)
    store = open_store(str(state))
    try:
        # Never used first (.4, .6), then the released .3; the held .2 and .5 never.
        got = addresses(store, ["new1", "new2", "new3"])
        assert got == ["192.168.3.4", "192.168.3.6", "192.168.3.3"]
        with pytest.raises(PoolExhausted):
            store.allocate(request("new4"), always)
    finally:
        store.close()


def test_rows_written_behind_its_back_are_never_handed_out_again(store) -> None:
    """An older tunhelper sharing the database writes rows the mark does not know of."""
    assert addresses(store, ["a"]) == ["192.168.3.2"]
    addresses(store, ["b"], excluded=POOL.excluded(["192.168.3.3"]))  # .4; .3 is a hole
    write_row(store, 3, "old-a")  # into the hole
    write_row(store, 5, "old-b")  # just above the mark
    assert addresses(store, ["c"]) == ["192.168.3.6"]
    with pytest.raises(PoolExhausted):
        store.allocate(request("d"), always)
    assert sorted(x.address for x in store.all_leases() if x.state == ACTIVE) == [
        f"192.168.3.{i}" for i in range(2, 7)
    ]


def test_rows_deleted_by_hand_are_found_before_refusing(store) -> None:
    addresses(store, [f"c{i}" for i in range(5)])
    delete_row(store, "192.168.3.4")
    assert addresses(store, ["late"]) == ["192.168.3.4"]
    with pytest.raises(PoolExhausted):
        store.allocate(request("later"), always)


class _Model:
    """The order of preference, written the obvious way, over a plain dict of rows."""

    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}

    def allocate(self, client: str, excluded: set[int], dead: set[str]) -> int | None:
        def usable(s: int) -> bool:
            return POOL.first <= s <= POOL.last and s not in excluded

        def alive(r: dict) -> bool:
            return r["token"] not in dead

        own = sorted(
            (r for r in self.rows.values() if r["client"] == client), key=lambda r: -r["since"]
        )
        for r in own:
            if usable(r["slot"]) and (r["state"] == RELEASED or not alive(r)):
                return r["slot"]
        for s in range(POOL.first, POOL.last + 1):
            if usable(s) and s not in self.rows:
                return s
        released = sorted(
            (r for r in self.rows.values() if r["state"] == RELEASED),
            key=lambda r: r["released_at"],
        )
        for r in released:
            if usable(r["slot"]):
                return r["slot"]
        active = sorted(
            (r for r in self.rows.values() if r["state"] == ACTIVE), key=lambda r: r["since"]
        )
        for r in active:
            if usable(r["slot"]) and not alive(r):
                return r["slot"]
        return None


class _Clock:
    """A clock that always moves on, so no two leases tie on a timestamp."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


_slots = st.integers(min_value=POOL.first, max_value=POOL.last)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("allocate"), st.integers(0, 7), st.frozensets(_slots, max_size=3)),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("kill"), st.integers(0, 30)),
        st.tuples(st.just("old version writes"), _slots, st.booleans()),
    ),
    max_size=40,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=_ops)
def test_same_choices_as_the_plain_order_of_preference(tmp_path_factory, backend, ops) -> None:
    """Random allocations (with random exclusions), releases, deaths of holders and
    rows written by an older version: every choice is the one the plain order makes."""
    clock, state = _Clock(), str(tmp_path_factory.mktemp("s"))
    model, granted, dead = _Model(), [], set()
    with (
        mock.patch.object(backend.module, "time", clock),
        closing(backend.fresh(state)) as store,
    ):
        for op in ops:
            if op[0] == "allocate":
                client, excluded = f"c{op[1]}", set(op[2]) | POOL.excluded([])
                expected = model.allocate(client, excluded, dead)
                alive = lambda lease: lease.token not in dead  # noqa: E731
                try:
                    lease = store.allocate(request(client, excluded=excluded), alive)
                except PoolExhausted:
                    assert expected is None
                    continue
                assert lease.slot == expected
                model.rows[lease.slot] = {
                    "slot": lease.slot, "client": client, "state": ACTIVE,
                    "token": lease.token, "since": lease.since, "released_at": None,
                }  # fmt: skip
                granted.append(lease)
            elif op[0] == "release" and granted:
                lease = granted[op[1] % len(granted)]
                row = model.rows[lease.slot]
                mine = row["token"] == lease.token and row["state"] == ACTIVE
                assert store.release(lease) == mine
                if mine:
                    (stored,) = [x for x in store.all_leases() if x.slot == lease.slot]
                    row.update(state=RELEASED, released_at=stored.released_at)
            elif op[0] == "kill" and granted:
                dead.add(granted[op[1] % len(granted)].token)
            elif op[0] == "old version writes" and op[1] not in model.rows:
                state = RELEASED if op[2] else ACTIVE
                write_row(store, op[1], f"old{op[1]}", state)
                model.rows[op[1]] = {
                    "slot": op[1], "client": f"old{op[1]}", "state": state,
                    "token": f"t{op[1]}", "since": 1.0 + op[1],
                    "released_at": 2.0 + op[1] if state == RELEASED else None,
                }  # fmt: skip


def test_a_reserved_slot_is_granted_even_above_the_high_water_mark(store) -> None:
    reserved = Request(**{**request("vip").__dict__, "reserved": 5})
    assert store.allocate(reserved, always).address == "192.168.3.5"
    # never-used slots below it are still handed out, lowest first, and 5 is skipped
    got = [store.allocate(request(f"c{i}"), always).address for i in range(4)]
    assert got == ["192.168.3.2", "192.168.3.3", "192.168.3.4", "192.168.3.6"]


def test_a_reserved_slot_held_by_a_live_session_is_refused_and_a_dead_one_taken(store) -> None:
    other = store.allocate(request("squatter"), always)  # takes .2
    reserved = Request(**{**request("vip").__dict__, "reserved": other.slot})
    with pytest.raises(TunhelperError, match="held by another live session"):
        store.allocate(reserved, always)
    assert store.allocate(reserved, lambda lease: False).address == other.address


def test_leases_of_names_its_identities_and_pools_never_everyone(store) -> None:
    store.allocate(request("alice"), always)
    store.allocate(request("bob"), always)
    store.allocate(request("carol"), always)
    assert [x.client for x in store.leases_of({"alice"}, [POOL.name])] == ["alice"]
    both = store.leases_of(["carol", "alice"], [POOL.name])
    assert sorted(x.client for x in both) == ["alice", "carol"]
    assert store.leases_of({"alice"}, ["10.0.0.0/24"]) == []
    assert len(store.all_leases()) == 3
    for identities, pools in (([], [POOL.name]), (["alice"], []), ("alice", [POOL.name])):
        with pytest.raises(ValueError, match="non-empty"):
            store.leases_of(identities, pools)


def test_live_count_counts_one_clients_live_active_leases(store: SqliteLeaseStore) -> None:
    a1 = store.allocate(request("alice", n=1), always)
    a2 = store.allocate(request("alice", n=2), always)
    store.allocate(request("bob", n=3), always)
    assert store.live_count(POOL.name, "alice", always) == 2
    assert store.live_count(POOL.name, "alice", lambda lease: lease.token != a2.token) == 1
    store.release(a1)
    assert store.live_count(POOL.name, "alice", always) == 1
    assert store.live_count("10.0.0.0/24", "alice", always) == 0
