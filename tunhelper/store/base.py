"""The lease store's interface: what a lease is, what an allocation asks, what a store offers.

Backends (:mod:`~tunhelper.store.sqlite`, :mod:`~tunhelper.store.postgres`) import this
module, never the package, which chooses among them (:func:`tunhelper.store.open_store`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any, Callable, Protocol

from tunhelper.errors import TunhelperError

ACTIVE = "active"
RELEASED = "released"


class StoreError(TunhelperError):
    """The lease database or the state directory is unusable, locked or away."""

    reason = "database"


class PoolExhausted(TunhelperError):
    reason = "pool_exhausted"


class AddressTaken(TunhelperError):
    reason = "address_taken"


@dataclass(frozen=True)
class Owner:
    """Who owns a lease (its helper and sshd session process): enough to tell, later
    and from another process, if it is alive.

    Start times guard against pid reuse; the boot id makes every lease from before a
    reboot stale; the host keeps a shared store from judging another gateway's pids.
    """

    host: str
    boot_id: str
    helper_pid: int
    helper_start: float
    session_pid: int
    session_start: float
    device: str


@dataclass(frozen=True)
class Lease:
    """One address of a pool and who has it: a row of the store."""

    pool: str
    slot: int
    address: str
    client: str
    state: str
    token: str
    since: float
    released_at: float | None
    owner: Owner
    expires: float | None = None  # a shared store's lifetime; None: judged by its owner only

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Lease:
        """A row of :data:`LEASE_FIELDS`, then ``expires`` if the store keeps it."""
        own, rest = len(_OWN_FIELDS), len(_OWN_FIELDS) + len(OWNER_FIELDS)
        return cls(*row[:own], Owner(*row[own:rest]), *row[rest:])  # type: ignore[arg-type]

    def row(self) -> tuple:
        """The values of :data:`LEASE_FIELDS`, in order."""
        return (*(getattr(self, f) for f in _OWN_FIELDS), *astuple(self.owner))

    def record(self) -> dict[str, Any]:
        """Flat and JSON-able (the keeper's record, a queued release)."""
        return {**dict(zip(LEASE_FIELDS, self.row())), "expires": self.expires}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Lease:
        return cls.from_row([*(record[f] for f in LEASE_FIELDS), record.get("expires")])


# The columns every store keeps, the owner's flattened; a shared store keeps ``expires``.
_OWN_FIELDS = [f.name for f in fields(Lease) if f.name not in ("owner", "expires")]
OWNER_FIELDS = [f.name for f in fields(Owner)]
LEASE_FIELDS = [*_OWN_FIELDS, *OWNER_FIELDS]
SQLITE, POSTGRESQL = "sqlite", "postgresql"
DEFAULT_LIFETIME = 600.0  # seconds a shared store's lease lives unless renewed
# The renew service (``tunhelper renew --loop``) renews every lifetime/3, and waits for
# the database at most half of that: two renewals in a row can fail and the lease still
# lives. libpq's shortest connect timeout is 2 s, so the shortest period is 5 s (2.5 s
# of wait), and the shortest lifetime the schedule can keep is three of those.
RENEWALS_PER_LIFETIME = 3
MIN_RENEW_PERIOD = 5.0
MIN_LIFETIME = RENEWALS_PER_LIFETIME * MIN_RENEW_PERIOD
MAX_LIFETIME = 86400.0


def renew_period(lifetime: float) -> float:
    """Seconds between two renewals of a store whose leases live ``lifetime``."""
    return lifetime / RENEWALS_PER_LIFETIME


@dataclass(frozen=True)
class StoreConfig:
    """Which store to open: the config file's ``[store]`` (SQLite when there is none).

    ``conninfo`` is a libpq connection string (or ``service=NAME``); it may hold a
    password, so it comes only from a root-owned file, never argv or the environment.
    """

    backend: str = SQLITE
    conninfo: str = ""
    lifetime: float = DEFAULT_LIFETIME
    where: str = ""  # the config file, for messages


@dataclass(frozen=True)
class Check:
    """One fact a backend reports about itself (``verify``), for doctor to print:
    only the backend knows its schema and what damage looks like."""

    level: str  # "ok", "warning" or "error"
    text: str


@dataclass(frozen=True)
class Request:
    """What an allocation needs to know about the pool, without knowing IP at all.

    Slots are offsets in the pool; ``address_of`` renders one for display.
    """

    pool: str
    first: int
    last: int
    excluded: Collection[int]
    client: str
    owner: Owner
    address_of: Callable[[int], str]
    reserved: int | None = None  # the admin's --address for this client: that slot or none


Alive = Callable[[Lease], bool]


def scope(identities: Collection[str], pools: Collection[str]) -> tuple[list[str], list[str]]:
    """The sorted identities and pools of a scoped query; refuses an empty or a bare
    string set, so that an unscoped call cannot be written by accident."""
    out = []
    for name, values in (("identities", identities), ("pools", pools)):
        if isinstance(values, str) or not values:
            raise ValueError(f"a scoped lease query needs a non-empty set of {name}")
        out.append(sorted(set(values)))
    return out[0], out[1]


class LeaseStore(Protocol):
    """The whole interface a store offers; everything else is private to a store."""

    def allocate(self, request: Request, alive: Alive) -> Lease: ...

    def release(self, lease: Lease) -> bool: ...

    def all_leases(self) -> list[Lease]:
        """Every lease of every pool and client: for views of the whole store only."""
        ...

    def leases_of(self, identities: Collection[str], pools: Collection[str]) -> list[Lease]:
        """The leases of these client identities in these pools, oldest first; both
        must be named (:func:`scope`): an empty set is an error, never "everyone"."""
        ...

    def live_count(self, pool: str, client: str, alive: Alive) -> int: ...

    def renew(self, host: str, alive: Alive) -> tuple[int, int]: ...

    def close(self) -> None: ...
