"""The lease store in PostgreSQL: one pool shared by a fleet of gateways.

The same order of preference as the SQLite store (:mod:`tunhelper.store.sqlite`), the
same high-water mark and holes, in tables of the same names. What differs:

- Concurrency. An allocation locks its pool's row in ``pools`` (``SELECT ... FOR
  UPDATE``) before reading anything, so allocations in one pool are serialised fleet
  wide while other pools and releases go on (docs/architecture.md says why this and not
  insert-and-retry or ``SKIP LOCKED``). The grant itself is a compare-and-swap on the
  primary key ``(pool, slot)``: it overwrites only the row it judged (same token), so
  even a writer that skipped the lock could not put two sessions on one address.
- Lifetimes. A lease carries ``expires``; another gateway's active lease counts as
  live until then (:class:`tunhelper.store.liveness.Liveness`), and ``tunhelper renew``
  moves it on for this host's live leases.
- Releases that cannot be written (the database is away) wait in a file of the state
  directory and are done at the next open.

psycopg is imported here only: nothing else of tunhelper imports this module unless
a ``[store]`` with ``backend = postgresql`` is configured.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict

import psycopg
from psycopg import errors as pg_errors

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
    StoreConfig,
)
from tunhelper.store.pgconnect import Errors, connect_args, first_line, placeholder, unreachable
from tunhelper.store.pgschema import FAST_GRANT_FAILED, MIGRATIONS, SCHEMA, SCHEMA_VERSION

PENDING = statedir.PENDING_RELEASES  # releases the database missed
_ALL = [*LEASE_FIELDS, "expires"]
_COLUMNS = ", ".join(_ALL)
# Built from our own dataclass, never from input.
_SELECT = f"SELECT {_COLUMNS} FROM leases"  # noqa: S608
_GRANT = (
    f"INSERT INTO leases ({_COLUMNS}) VALUES ({', '.join('%s' for _ in _ALL)}) "  # noqa: S608
    "ON CONFLICT (pool, slot) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _ALL if c not in ("pool", "slot"))
    + " WHERE leases.token = %s"
)
_LOCK_SCHEMA = 0x74756E68  # "tunh": the advisory lock key for creating or migrating


class PostgresLeaseStore:
    """Leases in PostgreSQL, shared by every gateway configured with the same database."""

    def __init__(self, config: StoreConfig, state_dir: str, timeout: float = 10.0) -> None:
        self.config = config
        self.lifetime = config.lifetime
        self.state_dir = state_dir
        self.timeout = timeout
        self.where = config.where or "[store]"
        self._conn: psycopg.Connection | None = None

    @property
    def _db(self) -> psycopg.Connection:
        """The connection, made at first use: a session's release must not need it
        opened beforehand, and is queued instead when it cannot be made."""
        if self._conn is None or self._conn.closed:
            try:
                conn = psycopg.connect(
                    connect_args(self.config, self.timeout),
                    autocommit=True,
                    prepare_threshold=0,
                )
            except psycopg.Error as e:
                raise TunhelperError(
                    f"cannot reach the lease database ({first_line(e)}); check that "
                    f"PostgreSQL is up and [store] in {self.where}"
                ) from None
            self._conn = conn
            try:
                self._schema()
                self.replay_pending()
            except BaseException:
                self._conn = None
                conn.close()
                raise
        return self._conn

    # -- schema -------------------------------------------------------------------

    def schema_version(self) -> int | None:
        try:
            row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        except pg_errors.UndefinedTable:
            return None
        return None if row is None else row[0]

    def _schema(self) -> None:
        """Create or migrate the schema under an advisory lock, or refuse a newer one."""
        with self._errors():
            version = self.schema_version()
            if version == SCHEMA_VERSION:
                return
            if version is not None and version > SCHEMA_VERSION:
                raise TunhelperError(self._newer(version))
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
                )
                version = self.schema_version()
                if version is None:
                    for statement in SCHEMA:
                        self._db.execute(statement)
                    self._db.execute(
                        "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
                    )
                    return
                if version > SCHEMA_VERSION:
                    raise TunhelperError(self._newer(version))
                while version < SCHEMA_VERSION:
                    for statement in MIGRATIONS[version]:
                        self._db.execute(statement)
                    version += 1
                self._db.execute("UPDATE schema_version SET version = %s", (version,))

    def _newer(self, version: int) -> str:
        return (
            f"the lease database's schema is version {version}, newer than this tunhelper's "
            f"({SCHEMA_VERSION}): upgrade tunhelper on this gateway; nothing was changed"
        )

    # -- the interface -----------------------------------------------------------

    def allocate(self, request: Request, alive: Alive) -> Lease:
        if request.reserved is None and "." in request.address_of(0):
            lease = self._fast_grant(request)
            if lease is not None:
                return lease
        with self._errors(), self._db.transaction():
            high = self._lock_pool(request)
            if request.reserved is not None:
                slot, old = self._reserved(request, alive)
                lease = self._grant(request, slot, old, high)
                if lease is None:
                    raise self._changed(request, slot)
                return lease
            found = self._sticky(request, alive)
            if found is None:
                return self._grant_fresh(request, high, alive)
            lease = self._grant(request, *found, high)
            if lease is None:
                raise self._changed(request, found[0])
            return lease

    def _fast_grant(self, request: Request) -> Lease | None:
        """The allocations that need no liveness judgement, in one statement (the pool's
        lock held inside the server only); None: the Python path decides. IPv4 only:
        there the server's text of an address is netaddr's."""
        now = time.time()
        owner = request.owner
        token = uuid.uuid4().hex
        with self._errors():
            try:
                (slot,) = self._db.execute(
                    "SELECT tunhelper_grant(%s, %s, %s, %s, %s::integer[], %s::inet, %s, %s, "
                    "%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        request.pool, request.client, request.first, request.last,
                        sorted(request.excluded), request.address_of(0), token, now,
                        now + self.lifetime, owner.host, owner.boot_id, owner.helper_pid,
                        owner.helper_start, owner.session_pid, owner.session_start,
                        owner.device,
                    ),
                ).fetchone()  # fmt: skip
            except psycopg.Error as e:
                if e.sqlstate != FAST_GRANT_FAILED:
                    raise
                return None  # undone by the server: the Python path rebuilds and retries
        if slot is None:
            return None
        return Lease(
            pool=request.pool,
            slot=slot,
            address=request.address_of(slot),
            client=request.client,
            state=ACTIVE,
            token=token,
            since=now,
            released_at=None,
            **asdict(owner),
            expires=now + self.lifetime,
        )

    def _grant_fresh(self, request: Request, high: int, alive: Alive) -> Lease:
        """Never used, else released longest ago, else reclaimed from a dead holder.

        A never-used slot that turns out to have a row (written by hand, or the
        bookkeeping lost) makes the grant find a conflict and write nothing: the
        bookkeeping is then rebuilt from the leases and the search done again."""
        for attempt in range(3):
            found = self._fresh(request, high)
            if found is None:
                found = self._oldest_released(request)
            if found is None:
                found = self._reclaim(request, alive)
            if found is None and attempt == 0:
                high = self._rebuild(request)  # rows deleted by hand: recount first
                continue
            if found is None:
                break
            lease = self._grant(request, *found, high)
            if lease is not None:
                return lease
            if found[1] is not None:
                raise self._changed(request, found[0])
            high = self._rebuild(request)
        raise PoolExhausted(order.EXHAUSTED.format(pool=request.pool))

    def _changed(self, request: Request, slot: int) -> TunhelperError:
        return TunhelperError(
            f"lease database: address {request.address_of(slot)} of pool {request.pool} "
            "changed under the pool's lock (a row written by hand?); try again, and run "
            "'tunhelper doctor' if it persists"
        )

    def release(self, lease: Lease) -> bool:
        """Release this grant only: a lease since reclaimed by another session stays.

        If the database cannot be reached, the release waits in the state directory
        and is done at the next open of the store (by any session or ``renew``)."""
        try:
            cur = self._db.execute(
                "UPDATE leases SET state = %s, released_at = %s "
                "WHERE pool = %s AND slot = %s AND token = %s AND state = %s",
                (RELEASED, time.time(), lease.pool, lease.slot, lease.token, ACTIVE),
            )
        except (psycopg.OperationalError, TunhelperError) as e:
            if isinstance(e, TunhelperError) and not unreachable(e):
                raise
            self._queue(lease)
            self._conn = None
            return True
        return cur.rowcount == 1

    def release_address(self, address: str) -> int:
        with self._errors():
            cur = self._db.execute(
                "UPDATE leases SET state = %s, released_at = %s WHERE address = %s AND state = %s",
                (RELEASED, time.time(), address, ACTIVE),
            )
            return cur.rowcount

    def leases(self, pool: str | None = None, client: str | None = None) -> list[Lease]:
        with self._errors():
            if pool is None:
                rows = self._db.execute(_SELECT + " ORDER BY pool, slot")
            elif client is None:
                rows = self._db.execute(_SELECT + " WHERE pool = %s ORDER BY slot", (pool,))
            else:
                rows = self._db.execute(
                    _SELECT + " WHERE pool = %s AND client = %s ORDER BY since", (pool, client)
                )
            return [Lease(*r) for r in rows]

    def live_count(self, pool: str, client: str, alive: Alive) -> int:
        with self._errors():
            rows = self._db.execute(
                _SELECT + " WHERE pool = %s AND client = %s AND state = %s",
                (pool, client, ACTIVE),
            ).fetchall()
        return sum(1 for lease in (Lease(*r) for r in rows) if alive(lease))

    def renew(self, host: str, alive: Alive) -> tuple[int, int]:
        """Move on the expiry of ``host``'s live leases, in one statement, and release its
        dead ones; return how many of each."""
        with self._errors():
            rows = self._db.execute(
                _SELECT + " WHERE host = %s AND state = %s", (host, ACTIVE)
            ).fetchall()
            live, dead = [], []
            for lease in (Lease(*r) for r in rows):
                (live if alive(lease) else dead).append(lease.token)
            if live:
                self._db.execute(
                    "UPDATE leases SET expires = %s WHERE state = %s AND token = ANY(%s)",
                    (time.time() + self.lifetime, ACTIVE, live),
                )
            if dead:
                self._db.execute(
                    "UPDATE leases SET state = %s, released_at = %s "
                    "WHERE state = %s AND token = ANY(%s)",
                    (RELEASED, time.time(), ACTIVE, dead),
                )
        return len(live), len(dead)

    def server_time(self) -> float:
        """The database server's clock, for the doctor's skew check."""
        with self._errors():
            (now,) = self._db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        return float(now)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- releases the database missed ---------------------------------------------

    def _queue(self, lease: Lease) -> None:
        path = os.path.join(self.state_dir, PENDING)
        line = json.dumps({"pool": lease.pool, "slot": lease.slot, "token": lease.token})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def replay_pending(self) -> int:
        """Do the releases queued while the database was away; return how many ran."""
        path = os.path.join(self.state_dir, PENDING)
        work = path + f".{os.getpid()}"
        try:
            os.rename(path, work)  # ours alone now: a concurrent queue starts a new file
        except FileNotFoundError:
            return 0
        with open(work, encoding="utf-8") as f:
            entries = [json.loads(line) for line in f if line.strip()]
        try:
            with self._errors(), self._db.transaction():
                for e in entries:
                    self._db.execute(
                        "UPDATE leases SET state = %s, released_at = %s "
                        "WHERE pool = %s AND slot = %s AND token = %s AND state = %s",
                        (RELEASED, time.time(), e["pool"], e["slot"], e["token"], ACTIVE),
                    )
        except TunhelperError:
            for e in entries:  # still away: back in the queue
                self._queue(Lease(**placeholder(e)))
            raise
        finally:
            os.unlink(work)
        return len(entries)

    # -- allocation steps, in order of preference ----------------------------------

    def _lock_pool(self, request: Request) -> int:
        """Lock the pool's row (every allocation in the pool waits here); its mark."""
        row = self._db.execute(
            "SELECT high_water FROM pools WHERE pool = %s FOR UPDATE", (request.pool,)
        ).fetchone()
        if row is not None:
            return row[0]
        self._db.execute(
            "INSERT INTO pools (pool, high_water) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (request.pool, request.first - 1),
        )
        self._db.execute("SELECT 1 FROM pools WHERE pool = %s FOR UPDATE", (request.pool,))
        return self._rebuild(request)  # a pool new to the store: rows may exist already

    def _sticky(self, request: Request, alive: Alive) -> tuple[int, str | None] | None:
        rows = self._db.execute(
            _SELECT + " WHERE pool = %s AND client = %s ORDER BY since DESC",
            (request.pool, request.client),
        ).fetchall()
        lease = order.sticky(request, (Lease(*r) for r in rows), alive)
        return None if lease is None else (lease.slot, lease.token)

    def _reserved(self, request: Request, alive: Alive) -> tuple[int, str | None]:
        assert request.reserved is not None
        row = self._db.execute(
            _SELECT + " WHERE pool = %s AND slot = %s", (request.pool, request.reserved)
        ).fetchone()
        lease = None if row is None else Lease(*row)
        slot = order.check_reserved(request, lease, alive)
        return slot, None if lease is None else lease.token

    def _fresh(self, request: Request, high: int) -> tuple[int, None] | None:
        """The lowest never-used slot: the lowest usable hole, else above the mark."""
        rows = self._db.execute(
            "SELECT slot FROM pool_holes WHERE pool = %s AND slot >= %s AND slot <= %s "
            "ORDER BY slot",
            (request.pool, request.first, request.last),
        )
        for (slot,) in rows:
            if slot not in request.excluded:
                return slot, None
        slot = max(high + 1, request.first)
        while slot in request.excluded:
            slot += 1
        return None if slot > request.last else (slot, None)

    def _oldest_released(self, request: Request) -> tuple[int, str] | None:
        """Another client's released address, the one unused for longest (as DHCP does).

        Read a few rows at a time: all but a handful are usable."""
        with self._db.cursor(name="released") as cur:
            cur.itersize = 16
            cur.execute(
                "SELECT slot, token FROM leases WHERE pool = %s AND state = %s "
                "ORDER BY released_at",
                (request.pool, RELEASED),
            )
            for slot, token in cur:
                if order.usable(request, slot):
                    return slot, token
        return None

    def _reclaim(self, request: Request, alive: Alive) -> tuple[int, str] | None:
        """Active leases whose holder is dead (or whose lifetime ran out) are free again;
        only reached when every other slot is held; oldest first, stops at the first."""
        with self._db.cursor(name="reclaim") as cur:
            cur.itersize = 16
            cur.execute(
                _SELECT + " WHERE pool = %s AND state = %s ORDER BY since", (request.pool, ACTIVE)
            )
            lease = order.reclaimable(request, (Lease(*r) for r in cur), alive)
        return None if lease is None else (lease.slot, lease.token)

    # -- the never-used slots: high-water mark and holes ------------------------------

    def _mark_used(self, request: Request, slot: int, high: int) -> None:
        if slot <= high:
            self._db.execute(
                "DELETE FROM pool_holes WHERE pool = %s AND slot = %s", (request.pool, slot)
            )
            return
        skipped = list(range(max(high + 1, request.first), slot))
        if skipped:
            self._db.execute(
                "INSERT INTO pool_holes (pool, slot) SELECT %s, unnest(%s::integer[]) "
                "ON CONFLICT DO NOTHING",
                (request.pool, skipped),
            )
        self._db.execute("UPDATE pools SET high_water = %s WHERE pool = %s", (slot, request.pool))

    def _rebuild(self, request: Request) -> int:
        """Derive the mark and the holes from the leases, in SQL; return the mark."""
        pool = request.pool
        self._db.execute("DELETE FROM pool_holes WHERE pool = %s", (pool,))
        (top,) = self._db.execute(
            "SELECT max(slot) FROM leases WHERE pool = %s", (pool,)
        ).fetchone()
        high = request.first - 1 if top is None else max(top, request.first - 1)
        if high >= request.first:
            self._db.execute(
                "INSERT INTO pool_holes (pool, slot) SELECT %s, s "
                "FROM generate_series(%s::integer, %s::integer) s WHERE NOT EXISTS "
                "(SELECT 1 FROM leases l WHERE l.pool = %s AND l.slot = s)",
                (pool, request.first, high, pool),
            )
        self._db.execute("UPDATE pools SET high_water = %s WHERE pool = %s", (high, pool))
        return high

    def _grant(self, request: Request, slot: int, old_token: str | None, high: int) -> Lease | None:
        """Write the lease: a compare-and-swap on the row judged (``old_token``), or an
        insert where no row was. None if that row was not as judged: nothing written."""
        now = time.time()
        lease = Lease(
            pool=request.pool,
            slot=slot,
            address=request.address_of(slot),
            client=request.client,
            state=ACTIVE,
            token=uuid.uuid4().hex,
            since=now,
            released_at=None,
            **asdict(request.owner),
            expires=now + self.lifetime,
        )
        if old_token is None:
            self._mark_used(request, slot, high)
        values = [getattr(lease, c) for c in _ALL]
        cur = self._db.execute(_GRANT, (*values, old_token or ""))
        return lease if cur.rowcount == 1 else None

    # -- plumbing ----------------------------------------------------------------

    def _errors(self) -> Errors:
        return Errors(self.where)
