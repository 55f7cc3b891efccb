"""One forced-command session: discover -> lease -> configure -> announce -> hold -> release.

Every step that takes something registers how to give it back before the next step
starts, so any failure, signal or end of session unwinds the same way. A helper that
stops also ends its ssh connection, because sshd keeps a tunnel open after its forced
command exits: a client must never be left on an unconfigured link.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import psutil

from tunhelper import bridge, configure, discover, holder, identity, log, platform
from tunhelper.announce import Announcement, announce, wants_description
from tunhelper.bridge import BridgePlan
from tunhelper.errors import TunhelperError
from tunhelper.hold import Interrupted, become_holder, hold, ignore_end_signals
from tunhelper.lease import Lease, Request, open_store
from tunhelper.platform import DeviceInfo
from tunhelper.pool import Pool

STDERR_DRAIN_TIMEOUT = 2.0


@dataclass(frozen=True)
class Settings:
    """Everything the admin configured; nothing here comes from the environment."""

    pool: Pool
    state_dir: str
    wait: float
    mtu: int | None  # None: the most the device's kind of channel carries
    client: str | None
    bridge: BridgePlan
    db_timeout: float = 10.0  # bounded wait for a lease database another process holds
    max_leases: int | None = None  # live sessions per client identity; None: no limit


def local_addresses() -> list[str]:
    """IPv4 addresses already on this host's interfaces: never to be handed out."""
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET
    ]


def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run the session; return the exit code. Errors reach the client as one line."""
    found: discover.SessionDevice | None = None
    try:
        with contextlib.ExitStack() as undo:
            try:
                found = discover.find_device(settings.wait, environ)
                _run(settings, environ, found, undo)
            finally:
                ignore_end_signals()  # from here on, nothing may cut the cleanup short
        status = 0
    except Interrupted as e:
        log.error(f"interrupted by {e} before the session was set up; reconnect")
        status = 1
    except TunhelperError as e:
        log.error(str(e))
        status = e.exit_code
    end_connection(found)
    return status


def _run(
    settings: Settings,
    environ: Mapping[str, str],
    found: discover.SessionDevice,
    undo: contextlib.ExitStack,
) -> None:
    device = found.device
    pool = settings.pool
    if device.mode == "tun" and pool.gateway is None:
        raise TunhelperError(
            "this pool has no gateway (--bridge without --gateway), so it serves ethernet "
            "links only: connect with -o Tunnel=ethernet (tunhelper connect --tap)"
        )
    mtu = configure.choose_mtu(device.mode, settings.mtu, settings.bridge)
    command = environ.get("SSH_ORIGINAL_COMMAND")
    describe = wants_description(command)
    if command and not describe:
        log.info(f"ignoring the command the client sent: {command[:80]!r}")
    client = identity.client_identity(settings.client, environ)

    store = open_store(settings.state_dir, settings.db_timeout)
    undo.callback(store.close)
    alive = holder.Liveness()
    lease = store.allocate(
        Request(
            pool=pool.name,
            first=pool.first,
            last=pool.last,
            excluded=pool.excluded(local_addresses()),
            client=client,
            holder=holder.current(found.holder_pid, found.holder_start, device.name),
            address_of=pool.address,
        ),
        alive,
    )
    undo.callback(_quietly, "release the lease", store.release, lease)
    _check_limit(store, settings, client, alive)

    gateway = None if pool.gateway is None else str(pool.gateway)
    if device.mode == "tun":
        assert gateway is not None
        applied = configure.point_to_point(device, gateway, lease.address, mtu)
        prefix = 32
    else:
        applied = configure.bridge_port(device, settings.bridge, mtu, settings.state_dir)
        prefix = bridge.announced_prefix(settings.bridge, pool.name)
    undo.callback(_quietly, "deconfigure the device", configure.undo, applied)
    if device.mode == "tun":
        _filter_sources(device)

    announce(Announcement(lease.address, prefix, gateway, device.mode, mtu), describe)
    log.info(
        f"session start: client {client} address {lease.address} gateway {gateway} "
        f"{device.mode} device {device.name} sshd pid {found.holder_pid}"
    )
    record = {
        "state_dir": settings.state_dir,
        "db_timeout": settings.db_timeout,
        "lease": asdict(lease),
        "applied": configure.to_record(applied),
        "session": {**found._asdict(), "device": found.device._asdict()},
    }
    become_holder(record, [lease.address, device.name, settings.state_dir])
    _, reason = hold(found)  # only if the slim holder could not be started
    log.info(f"session end: address {lease.address} device {device.name}: {reason}")


def _filter_sources(device: DeviceInfo) -> None:
    """Only the client's own address may arrive on its tun (see platform.filter_sources).

    Where the kernel setting cannot be written (a read-only /proc/sys in a container)
    the session goes on and the admin is told: ``tunhelper doctor`` checks it too.
    """
    try:
        platform.filter_sources(device)
    except OSError as e:
        log.warning(
            f"could not filter source addresses on {device.name} ({e.strerror}): its client "
            "could send packets in another client's name"
        )


def _check_limit(store, settings: Settings, client: str, alive: holder.Liveness) -> None:
    """Refuse a client that already holds ``--max-leases`` addresses of the pool.

    Counted after our own allocation, in its own read: two sessions of one client that
    allocate at the same moment may both be refused, never both be let past the limit.
    """
    limit = settings.max_leases
    if limit is None:
        return
    held = store.live_count(settings.pool.name, client, alive)
    if held > limit:
        raise TunhelperError(
            f"client {client} already has {held - 1} live session(s) in pool "
            f"{settings.pool.name}, the most it may hold (--max-leases {limit}): end one first"
        )


def finish(record: dict, reason: str) -> int:
    """The slim holder's end of the session: give back what the helper took, as serve would."""
    lease = Lease(**record["lease"])
    s = record["session"]
    found = discover.SessionDevice(DeviceInfo(**s["device"]), s["holder_pid"], s["holder_start"])
    log.info(f"session end: address {lease.address} device {found.device.name}: {reason}")
    try:
        with contextlib.ExitStack() as undo:
            store = open_store(record["state_dir"], record["db_timeout"])
            undo.callback(store.close)
            undo.callback(_quietly, "release the lease", store.release, lease)
            undo.callback(
                _quietly,
                "deconfigure the device",
                configure.undo,
                configure.from_record(record["applied"]),
            )
        status = 0
    except TunhelperError as e:
        log.error(str(e))
        status = e.exit_code
    end_connection(found)
    return status


def _quietly(what: str, step, *args) -> None:
    """Run one cleanup step; a failure is reported but never stops the others."""
    try:
        step(*args)
    except Exception as e:  # noqa: BLE001 - cleanup must go on whatever failed
        log.error(f"could not {what}: {e}")


def end_connection(found: discover.SessionDevice | None) -> None:
    """End the ssh connection whose tunnel we served, if it is still there.

    Otherwise the client's ssh sits on a tunnel nobody configures. The client must
    see why first: our stdio is handed back (so sshd reads what we wrote, then EOF)
    and sshd is stopped only once it has closed its end of our stderr, that is,
    after it has passed everything we wrote on to the client.
    """
    if found is not None:
        pid, start = found.holder_pid, found.holder_start
    else:
        near = discover.find_holder()
        if near is None:
            return  # no tunnel: our exit ends the session by itself
        pid, start = near
    if not holder.running(pid, start):
        return
    pipe = _stderr_pipe()
    _detach_stdio()
    if pipe is not None:
        deadline = time.monotonic() + STDERR_DRAIN_TIMEOUT
        while platform.holds_pipe(pid, pipe) and time.monotonic() < deadline:
            time.sleep(0.01)
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if abs(proc.create_time() - start) <= 1.0:
            proc.terminate()


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
