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

import contextlib
import os
import stat

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


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _make_private(state_dir: str) -> None:
    """Files an older version created 0644 in the directory become 0600."""
    with contextlib.suppress(OSError), os.scandir(state_dir) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                os.chmod(entry.path, 0o600)


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
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        st = os.stat(state_dir)
    except OSError as e:
        raise TunhelperError(
            f"cannot create state directory {state_dir} ({e.strerror}); check --state-dir"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise TunhelperError(f"state directory {state_dir} is not a directory; check --state-dir")
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise TunhelperError(
            f"state directory {state_dir} is open to others (they could read every lease or "
            f"lock the database); run: chown root {state_dir} && chmod 700 {state_dir}"
        )
    os.umask(0o077)  # the database, its WAL and SHM, lock files, markers: all 0600
    _make_private(state_dir)
    if not os.access(state_dir, os.W_OK):
        # Else SQLite says only "unable to open database file", which reads like damage.
        why = "read-only file system" if _read_only(state_dir) else "permission denied"
        raise TunhelperError(
            f"cannot write to state directory {state_dir} ({why}); check its mount and --state-dir"
        )
    if config is not None and config.backend == POSTGRESQL:
        try:
            from tunhelper.store.postgres import PostgresLeaseStore
        except ImportError:
            raise TunhelperError(
                f"{config.where or '[store]'}: backend = postgresql needs psycopg 3: "
                "apt install python3-psycopg (or pip install 'tunhelper[pg]')"
            ) from None
        return PostgresLeaseStore(config, state_dir, timeout)
    from tunhelper.store.sqlite import DB_NAME, SqliteLeaseStore

    return SqliteLeaseStore(os.path.join(state_dir, DB_NAME), timeout)
