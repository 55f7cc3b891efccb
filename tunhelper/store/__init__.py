"""The lease store: who holds which address of which pool, like a DHCP server's leases.

This package is the whole interface the session and the admin commands use (its names
are defined in :mod:`~tunhelper.store.base`); a backend is chosen once, when the store
is opened (:func:`open_store`). Deliberately free of OS, IP and
netlink code: a lease is a slot (an offset in its pool), and whether its owner still
lives is judged by a callback the caller passes in (:mod:`tunhelper.store.liveness`).

One row per address ever handed out. A released row is kept: it remembers the
address's last client, which is what makes addresses sticky.
"""

from __future__ import annotations

from tunhelper import statedir
from tunhelper.errors import TunhelperError
from tunhelper.store.base import (
    ACTIVE,
    DEFAULT_LIFETIME,
    LEASE_FIELDS,
    POSTGRESQL,
    RELEASED,
    SQLITE,
    AddressTaken,
    Alive,
    Lease,
    LeaseStore,
    Owner,
    PoolExhausted,
    Request,
    StoreConfig,
)

__all__ = [
    "ACTIVE",
    "AddressTaken",
    "Alive",
    "DEFAULT_LIFETIME",
    "LEASE_FIELDS",
    "Lease",
    "LeaseStore",
    "Owner",
    "POSTGRESQL",
    "PoolExhausted",
    "RELEASED",
    "Request",
    "SQLITE",
    "StoreConfig",
    "open_store",
]


def open_store(
    state_dir: str, timeout: float = 10.0, config: StoreConfig | None = None
) -> LeaseStore:
    """Open (creating 0700 if missing) the state directory and its lease database:
    SQLite in the state directory, or the PostgreSQL database ``config`` names (the
    state directory then keeps only the releases the database missed).

    A state directory that others could write would let them forge leases, and one they
    could enter would let them read every lease or hold SQLite's locks (stalling every
    session): one not owned by us or open to group or others is refused.
    """
    statedir.prepare(state_dir)
    if config is not None and config.backend == POSTGRESQL:
        try:
            from tunhelper.store.postgres import PostgresLeaseStore
        except ImportError:
            raise TunhelperError(
                f"{config.where or '[store]'}: backend = postgresql needs psycopg 3: "
                "apt install python3-psycopg (or pip install 'tunhelper[pg]')"
            ) from None
        return PostgresLeaseStore(config, state_dir, timeout)
    from tunhelper.store.sqlite import SqliteLeaseStore

    return SqliteLeaseStore(statedir.path(state_dir, statedir.LEASES_DB), timeout)
