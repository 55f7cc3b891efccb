"""The lease store in one SQLite file: the embedded default for a single gateway.

The SQL is plain (no SQLite-only syntax except the lock taken in
:meth:`SqliteLeaseStore._begin`). Rows are never deleted, so the slots never handed out
are known without scanning the leases: every slot above a pool's high-water mark (the
highest slot that has a row), and the few below it that were skipped while excluded
(the pool's holes). Both are kept in the same transaction as the leases, so one
allocation costs a few index lookups however large the pool.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import asdict
from typing import Callable

from tunhelper import statedir
from tunhelper.errors import TunhelperError
from tunhelper.store import order
from tunhelper.store.base import (
    ACTIVE,
    LEASE_FIELDS,
    RELEASED,
    Alive,
    Lease,
    PoolExhausted,
    Request,
)

DB_NAME = statedir.LEASES_DB
_COLUMNS = ", ".join(LEASE_FIELDS)
# Built from our own dataclass, never from input: the only SQL assembled at run time.
_SELECT = f"SELECT {_COLUMNS} FROM leases"  # noqa: S608
_INSERT = f"INSERT INTO leases ({_COLUMNS}) VALUES ({', '.join('?' for _ in LEASE_FIELDS)})"  # noqa: S608

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    pool          TEXT    NOT NULL,
    slot          INTEGER NOT NULL,
    address       TEXT    NOT NULL,
    client        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    token         TEXT    NOT NULL,
    since         REAL    NOT NULL,
    released_at   REAL,
    host          TEXT    NOT NULL,
    boot_id       TEXT    NOT NULL,
    helper_pid    INTEGER NOT NULL,
    helper_start  REAL    NOT NULL,
    session_pid   INTEGER NOT NULL,
    session_start REAL    NOT NULL,
    device        TEXT    NOT NULL,
    PRIMARY KEY (pool, slot)
);
CREATE INDEX IF NOT EXISTS leases_by_client ON leases (pool, client);
CREATE INDEX IF NOT EXISTS leases_by_state ON leases (pool, state, released_at);
CREATE TABLE IF NOT EXISTS pools (
    pool          TEXT    NOT NULL PRIMARY KEY,
    high_water    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pool_holes (
    pool          TEXT    NOT NULL,
    slot          INTEGER NOT NULL,
    PRIMARY KEY (pool, slot)
);
"""
# pools: per pool, the highest slot that has a row in leases (the pool's first slot
# minus one while it has none). pool_holes: the slots at or below it that have no
# row. A database written before these tables existed has no pools row for its
# pools; the first allocation in such a pool builds both from the leases table.


class SqliteLeaseStore:
    """Leases in one SQLite file; many helper processes allocate at once, safely.

    Every allocation is one write transaction taken up front (``BEGIN IMMEDIATE``), so
    two helpers can never both see an address as free.
    """

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self._timeout = timeout
        try:
            self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise _db_error(path, e) from None

    # -- the interface -----------------------------------------------------------

    def allocate(self, request: Request, alive: Alive) -> Lease:
        with self._transaction():
            if request.reserved is not None:
                return self._grant(request, self._reserved(request, alive))
            slot = self._sticky(request, alive)
            if slot is None:
                slot = self._fresh(request)
            if slot is None:
                slot = self._oldest_released(request)
            if slot is None:
                slot = self._reclaim(request, alive)
            if slot is None:
                # Before refusing, recount the never-used slots from the leases
                # themselves, in case rows were deleted by hand behind our back.
                self._rebuild(request)
                slot = self._fresh(request)
            if slot is None:
                raise PoolExhausted(order.EXHAUSTED.format(pool=request.pool))
            return self._grant(request, slot)

    def release(self, lease: Lease) -> bool:
        """Release this grant only: a lease since reclaimed by another session stays."""
        with self._transaction():
            cur = self._db.execute(
                "UPDATE leases SET state = ?, released_at = ? "
                "WHERE pool = ? AND slot = ? AND token = ? AND state = ?",
                (RELEASED, time.time(), lease.pool, lease.slot, lease.token, ACTIVE),
            )
            return cur.rowcount == 1

    def release_address(self, address: str) -> int:
        with self._transaction():
            cur = self._db.execute(
                "UPDATE leases SET state = ?, released_at = ? WHERE address = ? AND state = ?",
                (RELEASED, time.time(), address, ACTIVE),
            )
            return cur.rowcount

    def leases(self, pool: str | None = None, client: str | None = None) -> list[Lease]:
        """All leases, or those of one pool, or of one client in one pool."""
        try:
            if pool is None:
                rows = self._db.execute(_SELECT + " ORDER BY pool, slot")
            elif client is None:
                rows = self._db.execute(_SELECT + " WHERE pool = ? ORDER BY slot", (pool,))
            else:
                rows = self._db.execute(
                    _SELECT + " WHERE pool = ? AND client = ? ORDER BY since", (pool, client)
                )
            return [Lease(*r) for r in rows]
        except sqlite3.DatabaseError as e:
            raise _db_error(self.path, e) from None

    def live_count(self, pool: str, client: str, alive: Alive) -> int:
        """How many addresses of ``pool`` live sessions of ``client`` hold right now."""
        try:
            rows = self._db.execute(
                _SELECT + " WHERE pool = ? AND client = ? AND state = ?", (pool, client, ACTIVE)
            ).fetchall()
        except sqlite3.DatabaseError as e:
            raise _db_error(self.path, e) from None
        return sum(1 for lease in (Lease(*r) for r in rows) if alive(lease))

    def renew(self, host: str, alive: Alive) -> tuple[int, int]:
        """One gateway's own store has no lifetimes to renew: release its dead leases."""
        with self._transaction():
            rows = self._db.execute(
                _SELECT + " WHERE host = ? AND state = ?", (host, ACTIVE)
            ).fetchall()
            dead = [lease for lease in (Lease(*r) for r in rows) if not alive(lease)]
            for lease in dead:
                self._db.execute(
                    "UPDATE leases SET state = ?, released_at = ? WHERE token = ? AND state = ?",
                    (RELEASED, time.time(), lease.token, ACTIVE),
                )
        return len(rows) - len(dead), len(dead)

    def close(self) -> None:
        self._db.close()

    # -- allocation steps, in order of preference ----------------------------------

    def _sticky(self, request: Request, alive: Alive) -> int | None:
        """The client's own previous address, if no live session holds it."""
        rows = self._db.execute(
            _SELECT + " WHERE pool = ? AND client = ? ORDER BY since DESC",
            (request.pool, request.client),
        ).fetchall()
        lease = order.sticky(request, (Lease(*r) for r in rows), alive)
        return None if lease is None else lease.slot

    def _reserved(self, request: Request, alive: Alive) -> int:
        """The reserved slot, unless a live session holds it."""
        assert request.reserved is not None
        row = self._db.execute(
            _SELECT + " WHERE pool = ? AND slot = ?", (request.pool, request.reserved)
        ).fetchone()
        slot = order.check_reserved(request, None if row is None else Lease(*row), alive)
        if row is None:
            self._mark_used(request, slot, self._high_water(request))
        return slot

    def _fresh(self, request: Request) -> int | None:
        """The lowest address never handed out, skipping excluded ones.

        The lowest hole that is not excluded, else the first slot above the high-water
        mark that is not excluded: two index lookups, not a scan of the leases. The
        slot is checked to have no row, in case a version of tunhelper that does not
        keep the mark wrote to this database since; if it has one, the bookkeeping is
        rebuilt and the search done again.
        """
        for _ in range(2):
            high = self._high_water(request)
            slot = self._lowest_hole(request)
            if slot is None:
                slot = max(high + 1, request.first)
                while slot in request.excluded:
                    slot += 1
                if slot > request.last:
                    return None
            if not self._has_row(request.pool, slot):
                self._mark_used(request, slot, high)
                return slot
            self._rebuild(request)
        return None

    def _oldest_released(self, request: Request) -> int | None:
        """Another client's released address, the one unused for longest (as DHCP does)."""
        rows = self._db.execute(
            "SELECT slot FROM leases WHERE pool = ? AND state = ? ORDER BY released_at",
            (request.pool, RELEASED),
        )
        return _first_slot(rows, lambda slot: order.usable(request, slot))

    def _reclaim(self, request: Request, alive: Alive) -> int | None:
        """Active leases whose helper and session are both gone are free again.

        Only reached when every other slot is held; asks about the oldest leases first
        and stops at the first dead one.
        """
        rows = self._db.execute(
            _SELECT + " WHERE pool = ? AND state = ? ORDER BY since",
            (request.pool, ACTIVE),
        )
        try:
            lease = order.reclaimable(request, (Lease(*r) for r in rows), alive)
            return None if lease is None else lease.slot
        finally:
            rows.close()

    # -- the never-used slots: high-water mark and holes ------------------------------

    def _high_water(self, request: Request) -> int:
        row = self._db.execute(
            "SELECT high_water FROM pools WHERE pool = ?", (request.pool,)
        ).fetchone()
        return self._rebuild(request) if row is None else row[0]

    def _lowest_hole(self, request: Request) -> int | None:
        rows = self._db.execute(
            "SELECT slot FROM pool_holes WHERE pool = ? AND slot >= ? AND slot <= ? ORDER BY slot",
            (request.pool, request.first, request.last),
        )
        return _first_slot(rows, lambda slot: slot not in request.excluded)

    def _has_row(self, pool: str, slot: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM leases WHERE pool = ? AND slot = ?", (pool, slot)
        ).fetchone()
        return row is not None

    def _mark_used(self, request: Request, slot: int, high: int) -> None:
        """Record that a never-used slot is being handed out."""
        if slot <= high:
            self._db.execute(
                "DELETE FROM pool_holes WHERE pool = ? AND slot = ?", (request.pool, slot)
            )
            return
        # The slots skipped on the way up were excluded: they stay never used.
        skipped = range(max(high + 1, request.first), slot)
        self._db.executemany(
            "INSERT INTO pool_holes (pool, slot) VALUES (?, ?)",
            ((request.pool, s) for s in skipped),
        )
        self._db.execute("UPDATE pools SET high_water = ? WHERE pool = ?", (slot, request.pool))

    def _rebuild(self, request: Request) -> int:
        """Derive the high-water mark and the holes from the leases table; return the mark.

        Done once per pool in a database written before they were kept, and again only
        if they are found wrong. One pass over the pool's slots, in SQL: rows whose
        successor has no row start a gap, and each gap ends below the next row.
        """
        pool = request.pool
        self._db.execute("DELETE FROM pool_holes WHERE pool = ?", (pool,))
        self._db.execute("DELETE FROM pools WHERE pool = ?", (pool,))
        (top,) = self._db.execute("SELECT MAX(slot) FROM leases WHERE pool = ?", (pool,)).fetchone()
        high = request.first - 1 if top is None else max(top, request.first - 1)
        starts = [
            s
            for (s,) in self._db.execute(
                "SELECT l.slot + 1 FROM leases l WHERE l.pool = ? AND l.slot >= ? "
                "AND l.slot < ? AND NOT EXISTS "
                "(SELECT 1 FROM leases n WHERE n.pool = l.pool AND n.slot = l.slot + 1)",
                (pool, request.first - 1, high),
            )
        ]
        if request.first <= high and not self._has_row(pool, request.first):
            starts.append(request.first)
        for start in sorted(set(starts)):
            (end,) = self._db.execute(
                "SELECT MIN(slot) FROM leases WHERE pool = ? AND slot > ?", (pool, start)
            ).fetchone()
            self._db.executemany(
                "INSERT INTO pool_holes (pool, slot) VALUES (?, ?)",
                ((pool, s) for s in range(start, end)),
            )
        self._db.execute("INSERT INTO pools (pool, high_water) VALUES (?, ?)", (pool, high))
        return high

    def _grant(self, request: Request, slot: int) -> Lease:
        lease = Lease(
            pool=request.pool,
            slot=slot,
            address=request.address_of(slot),
            client=request.client,
            state=ACTIVE,
            token=uuid.uuid4().hex,
            since=time.time(),
            released_at=None,
            **asdict(request.owner),
        )
        self._db.execute("DELETE FROM leases WHERE pool = ? AND slot = ?", (request.pool, slot))
        self._db.execute(_INSERT, tuple(getattr(lease, f) for f in LEASE_FIELDS))
        return lease

    # -- plumbing ----------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def _begin(self) -> None:
        # SQLite's way of taking the write lock before reading; PostgreSQL would lock
        # the pool's row in ``pools`` (SELECT ... FOR UPDATE) or take an advisory lock.
        self._db.execute("BEGIN IMMEDIATE")


class _Transaction:
    """Commit on success, roll back on error, and turn SQLite errors into one line."""

    def __init__(self, store: SqliteLeaseStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        try:
            self.store._begin()
        except sqlite3.DatabaseError as e:
            raise _db_error(self.store.path, e) from None

    def __exit__(self, kind, value, tb) -> bool:
        db = self.store._db
        if kind is None:
            try:
                db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                db.execute("ROLLBACK")
                raise _db_error(self.store.path, e) from None
            return False
        db.execute("ROLLBACK")
        if isinstance(value, sqlite3.DatabaseError):
            raise _db_error(self.store.path, value) from None
        return False


def _first_slot(rows: sqlite3.Cursor, wanted: Callable[[int], bool]) -> int | None:
    """The first slot (rows of one column) wanted; reads no further than that."""
    try:
        for (slot,) in rows:
            if wanted(slot):
                return slot
        return None
    finally:
        rows.close()


def _db_error(path: str, e: sqlite3.DatabaseError) -> TunhelperError:
    text = str(e)
    if "locked" in text or "busy" in text:
        return TunhelperError(
            f"lease database {path} stayed locked by another process; try again, "
            "and if it persists look for a stuck process holding it"
        )
    if isinstance(e, sqlite3.OperationalError) and ("readonly" in text or "disk" in text):
        return TunhelperError(
            f"cannot write lease database {path} ({text}{_no_space(path)}); "
            "check the state directory"
        )
    return TunhelperError(
        f"lease database {path} is unusable ({text}); it was left untouched for the admin: "
        "run 'tunhelper doctor'"
    )


def _no_space(path: str) -> str:
    """SQLite may call a full file system a "disk I/O error": say which it is."""
    try:
        full = os.statvfs(os.path.dirname(path)).f_bavail == 0
    except OSError:
        return ""
    return ": no space left on its file system" if full else ""
