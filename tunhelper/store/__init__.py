"""The lease store: who holds which address of which pool, like a DHCP server's leases.

This is the whole interface the session and the admin commands use; a backend is chosen
once, when the store is opened (:func:`open_store`). Deliberately free of OS, IP and
netlink code: a lease is a slot (an offset in its pool), and whether its owner still
lives is judged by a callback the caller passes in (:mod:`tunhelper.store.liveness`).

One row per address ever handed out. A released row is kept: it remembers the
address's last client, which is what makes addresses sticky.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Callable, Protocol

from tunhelper.errors import TunhelperError

ACTIVE = "active"
RELEASED = "released"


class PoolExhausted(TunhelperError):
    pass


class AddressTaken(TunhelperError):
    pass


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
    pool: str
    slot: int
    address: str
    client: str
    state: str
    token: str
    since: float
    released_at: float | None
    host: str
    boot_id: str
    helper_pid: int
    helper_start: float
    session_pid: int
    session_start: float
    device: str

    @property
    def owner(self) -> Owner:
        return Owner(
            self.host,
            self.boot_id,
            self.helper_pid,
            self.helper_start,
            self.session_pid,
            self.session_start,
            self.device,
        )


LEASE_FIELDS = [f.name for f in fields(Lease)]


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


class LeaseStore(Protocol):
    """The whole interface a store offers; everything else is private to a store."""

    def allocate(self, request: Request, alive: Alive) -> Lease: ...

    def release(self, lease: Lease) -> bool: ...

    def release_address(self, address: str) -> int: ...

    def leases(self, pool: str | None = None, client: str | None = None) -> list[Lease]: ...

    def live_count(self, pool: str, client: str, alive: Alive) -> int: ...

    def close(self) -> None: ...


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


def open_store(state_dir: str, timeout: float = 10.0) -> LeaseStore:
    """Open (creating 0700 if missing) the state directory and its lease database.

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
    from tunhelper.store.sqlite import DB_NAME, SqliteLeaseStore

    return SqliteLeaseStore(os.path.join(state_dir, DB_NAME), timeout)
