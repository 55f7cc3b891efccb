"""Who owns a lease, and whether that owner still lives: the ``alive`` callback the
lease store is given, judged through the platform.

A lease stays taken while either its helper or its sshd session process lives: a
helper killed with SIGKILL leaves its address on a device that sshd still carries,
and handing that address out again would put two clients on it. It lives here, above
the store, so that the store itself touches no process and no OS.
"""

from __future__ import annotations

import os
import socket
import time

from tunhelper import platform
from tunhelper.store import Lease, Owner


def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> float:
    """The start time of a live process (ours, or one the caller knows is running)."""
    start = platform.process_start(pid)
    if start is None:
        raise platform.PlatformError(None, f"process {pid} is gone")
    return start


def current(session_pid: int, session_start: float, device: str) -> Owner:
    """The owner record for this helper serving the given session."""
    pid = os.getpid()
    return Owner(
        host=this_host(),
        boot_id=platform.boot_id(),
        helper_pid=pid,
        helper_start=process_start(pid),
        session_pid=session_pid,
        session_start=session_start,
        device=device,
    )


def running(pid: int, start: float) -> bool:
    """Is the process that had ``pid`` at ``start`` still running (not a reused pid)?"""
    return platform.same_process(pid, start)


def end(lease: Lease) -> None:
    """End a live session: its helper if it runs (it then gives everything back and ends
    the ssh connection), else the sshd session process it left behind.

    Only a session of this host and boot: another gateway's pids mean nothing here."""
    owner = lease.owner
    if owner.host != this_host() or owner.boot_id != platform.boot_id():
        return
    for pid, start in (
        (owner.helper_pid, owner.helper_start),
        (owner.session_pid, owner.session_start),
    ):
        if platform.end_process(pid, start):
            return


class Liveness:
    """The ``alive`` judgement the lease store is given; caches the boot id and host."""

    def __init__(self) -> None:
        self.host = this_host()
        self.boot_id = platform.boot_id()

    def __call__(self, lease: Lease) -> bool:
        owner = lease.owner
        if owner.host != self.host:
            # Another gateway's lease: only that gateway can judge it, and a shared
            # store's lease lives until its lifetime runs out unless that gateway renews it.
            return lease.expires is None or lease.expires > time.time()
        if owner.boot_id != self.boot_id:
            return False  # from before a reboot: every session of it is gone
        return running(owner.helper_pid, owner.helper_start) or running(
            owner.session_pid, owner.session_start
        )
