"""What a session took, and giving it all back: the one record of a session's state.

Every step that takes something (a lease, an address on a device, a bridge port,
routes, a pending down hook) adds it to the session's :class:`Taken` before the next
step starts. Unwinding after an error or a signal, and the keeper process that holds
the session for its life (:mod:`tunhelper.server.keeper`), both give back from this
one list: the keeper receives it as JSON, so a kind of thing that can be taken but not
written down cannot exist. Finally the ssh connection is ended (:func:`end_connection`),
because sshd keeps a tunnel open after its forced command exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tunhelper import log, platform
from tunhelper.errors import TunhelperError
from tunhelper.link import configure, discover
from tunhelper.platform import DeviceInfo, SessionDevice
from tunhelper.server import hooks, replaced
from tunhelper.store import Lease, LeaseStore, StoreConfig, open_store

STDERR_DRAIN_TIMEOUT = 2.0
NOT_SET_UP = "the session was not set up"


class _Store:
    """The lease store, opened when the first lease is taken or given back."""

    def __init__(
        self, state_dir: str, db_timeout: float, config: StoreConfig | None = None
    ) -> None:
        self.state_dir, self.db_timeout, self.config = state_dir, db_timeout, config
        self._store: LeaseStore | None = None

    def get(self) -> LeaseStore:
        if self._store is None:
            self._store = open_store(self.state_dir, self.db_timeout, self.config)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class Item(Protocol):
    """One thing a session took."""

    kind: str
    what: str  # "release the lease": for the one line if giving back fails

    def give_back(self, taken: Taken, reason: str) -> None: ...

    def fields(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Leased:
    """A lease of the store: released by its grant token (a lease since reclaimed by
    another session is not touched), the row kept so the address stays sticky."""

    lease: Lease
    kind = "lease"
    what = "release the lease"

    def give_back(self, taken: Taken, reason: str) -> None:
        taken.store.get().release(self.lease)

    def fields(self) -> dict[str, Any]:
        return asdict(self.lease)

    @classmethod
    def load(cls, fields: dict[str, Any]) -> Leased:
        return cls(Lease(**fields))


@dataclass(frozen=True)
class Configured:
    """A change to a device or the routing table (:mod:`tunhelper.link.configure`)."""

    applied: configure.Applied
    kind = "configured"
    what = "deconfigure the device"

    def give_back(self, taken: Taken, reason: str) -> None:
        self.applied.undo()

    def fields(self) -> dict[str, Any]:
        return {"applied": configure.to_record(self.applied)}

    @classmethod
    def load(cls, fields: dict[str, Any]) -> Configured:
        return cls(configure.from_record(fields["applied"]))


@dataclass(frozen=True)
class DownHook:
    """The admin's ``--down`` hook, owed once the up hook may have run."""

    argv: list[str]
    values: dict[str, Any]
    timeout: float
    device: DeviceInfo
    kind = "down"
    what = "run the down hook"

    def give_back(self, taken: Taken, reason: str) -> None:
        counters = platform.link_counters(self.device) or taken.counters  # live ones first
        values = {
            **self.values,
            "event": "down",
            "reason": reason,
            "bytes_in": None if counters is None else counters[0],
            "bytes_out": None if counters is None else counters[1],
        }
        try:
            hooks.run("down", self.argv, hooks.environment(values), self.timeout)
        except TunhelperError as e:
            log.error(str(e))  # a failed down hook is reported; the rest goes on

    def fields(self) -> dict[str, Any]:
        return {**asdict(self), "device": self.device._asdict()}

    @classmethod
    def load(cls, fields: dict[str, Any]) -> DownHook:
        return cls(**{**fields, "device": DeviceInfo(**fields["device"])})


@dataclass(frozen=True)
class Guarded:
    """The source filter on the session's device (platform.guard_link)."""

    device: DeviceInfo
    kind = "guard"
    what = "remove the source filter"

    def give_back(self, taken: Taken, reason: str) -> None:
        platform.unguard_link(self.device)

    def fields(self) -> dict[str, Any]:
        return {"device": self.device._asdict()}

    @classmethod
    def load(cls, fields: dict[str, Any]) -> Guarded:
        return cls(DeviceInfo(**fields["device"]))


KINDS: dict[str, Any] = {cls.kind: cls for cls in (Leased, Configured, DownHook, Guarded)}


class Taken:
    """The session's things, in the order taken; given back in reverse."""

    def __init__(
        self, state_dir: str, db_timeout: float, store_config: StoreConfig | None = None
    ) -> None:
        self.store = _Store(state_dir, db_timeout, store_config)
        self.items: list[Item] = []
        self.counters: tuple[int, int] | None = None  # the device's last byte counts

    def add(self, item: Item) -> None:
        self.items.append(item)

    def give_back(self, reason: str) -> None:
        """Give back everything, each step on its own: one failure never stops the rest.

        A session a newer one replaced first tells its client so (:mod:`replaced`)."""
        self._tell_if_replaced()
        try:
            while self.items:
                item = self.items.pop()
                log.quietly(item.what, item.give_back, self, reason)
        finally:
            self.store.close()

    def _tell_if_replaced(self) -> None:
        lease = next((x.lease for x in self.items if isinstance(x, Leased)), None)
        if lease is not None:
            note = replaced.take_note(self.store.state_dir, lease.token)
            if note:
                log.error(note)

    def record(self) -> dict[str, Any]:
        """JSON-able, for the keeper process."""
        return {
            "state_dir": self.store.state_dir,
            "db_timeout": self.store.db_timeout,
            "store": None if self.store.config is None else asdict(self.store.config),
            "taken": [{"kind": item.kind, **item.fields()} for item in self.items],
        }

    @classmethod
    def load(cls, record: dict[str, Any]) -> Taken:
        config = record.get("store")  # a keeper started before the shared store: none
        taken = cls(
            record["state_dir"],
            record["db_timeout"],
            None if config is None else StoreConfig(**config),
        )
        for fields in record["taken"]:
            fields = dict(fields)
            taken.add(KINDS[fields.pop("kind")].load(fields))
        return taken


def finish(
    record: dict[str, Any],
    found: SessionDevice,
    reason: str,
    counters: tuple[int, int] | None = None,
) -> int:
    """The keeper's end of the session: give back what the helper took, as serve would."""
    leased = [x["address"] for x in record["taken"] if x["kind"] == Leased.kind]
    log.info(
        f"session end: address {leased[0] if leased else '-'} device {found.device.name}: {reason}"
    )
    taken = Taken.load(record)
    taken.counters = counters
    taken.give_back(reason)
    end_connection(found)
    return 0


def end_connection(found: SessionDevice | None) -> None:
    """End the ssh connection whose tunnel we served, if it is still there.

    Otherwise the client's ssh sits on a tunnel nobody configures. The client must
    see why first: our stdio is handed back (so sshd reads what we wrote, then EOF)
    and sshd is stopped only once it has closed its end of our stderr, that is,
    after it has passed everything we wrote on to the client.
    """
    if found is not None:
        pid, start = found.session_pid, found.session_start
    else:
        near = discover.find_session_process()
        if near is None:
            return  # no tunnel: our exit ends the session by itself
        pid, start = near
    if not platform.same_process(pid, start):
        return
    pipe = _stderr_pipe()
    _detach_stdio()
    if pipe is not None:
        deadline = time.monotonic() + STDERR_DRAIN_TIMEOUT
        while platform.holds_pipe(pid, pipe) and time.monotonic() < deadline:
            time.sleep(0.01)
    if platform.same_process(pid, start):  # still the same process, not a reused pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _stderr_pipe() -> int | None:
    """The inode of the pipe on our stderr, if it is one (sshd's, without a pty)."""
    try:
        st = os.fstat(2)
    except OSError:
        return None
    return st.st_ino if stat.S_ISFIFO(st.st_mode) else None


def _detach_stdio() -> None:
    """Point fds 0-2 at /dev/null: sshd then sees EOF after all we wrote."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
