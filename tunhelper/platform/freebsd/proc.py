"""Discovery through procstat: which devices a process holds, whether it holds a pipe,
whether a process is still the one we saw, and this boot's id.

sshd opens ``/dev/tunN`` or ``/dev/tapN`` itself, so the session's device is named by
the path of an fd its process holds. psutil's FreeBSD ``open_files()`` lists regular
files only, never a character device, so the fds come from ``procstat -f``. psutil is
imported only inside the functions that need it.
"""

from __future__ import annotations

import os
import re
import time
from collections import namedtuple
from collections.abc import Callable

from tunhelper.platform.base import PlatformError, same_start, terminate
from tunhelper.platform.freebsd import command
from tunhelper.platform.freebsd.command import PROCSTAT, SYSCTL, failure

PIPE_CHECK_INTERVAL = 0.1  # holds_pipe's caller polls every 10 ms; procstat need not
_NO_BOOT_ID = "freebsd-without-kern.boot_id"


OpenFile = namedtuple("OpenFile", ["pid", "fd", "type", "vtype", "name"])
OpenFile.__doc__ = """The fields of one ``procstat -f`` row that tunhelper looks at.

``fd`` is a number or text/cwd/root/jail/trace/ctty; ``type`` v vnode, p pipe, s socket...;
``vtype`` for a vnode: c character device, r regular file, x revoked...; ``name`` the
path, socket addresses, or "-".
"""


# procstat_files.c: PID, COMM (may hold spaces), FD, T, V, FLAGS, REF, OFFSET, PRO, NAME.
_PROCSTAT_ROW = re.compile(
    r"\s*(?P<pid>\d+)\s+(?P<comm>.*?)\s+(?P<fd>\d+|text|cwd|root|jail|trace|ctty)\s+"
    r"(?P<type>\S)\s+(?P<vtype>\S)\s+\S+\s+\S+\s+\S+\s+\S+\s+(?P<name>.*?)\s*"
)
_TUNTAP_PATH = re.compile(r"/dev/((?:tun|tap)\d{1,5})")


def parse_procstat_files(text: str) -> list[OpenFile]:
    """Rows of ``procstat -h -f`` output; lines that are not rows are skipped."""
    rows = []
    for line in text.splitlines():
        m = _PROCSTAT_ROW.fullmatch(line)
        if m:
            rows.append(OpenFile(int(m["pid"]), m["fd"], m["type"], m["vtype"], m["name"]))
    return rows


def _open_files(pid: int) -> list[OpenFile]:
    """``pid``'s open files; empty if it is gone or cannot be read."""
    if pid <= 0:
        return []
    result = command.runner([PROCSTAT, "-h", "-f", str(pid)])
    return [f for f in parse_procstat_files(result.text) if f.pid == pid]


# Each device's session process: the last one seen holding it (see held_by_session).
_holders: dict[str, int] = {}


def held_devices(pid: int) -> list[str]:
    """Names of the tun/tap devices ``pid`` holds open (character devices), sorted."""
    names = set()
    for f in _open_files(pid):
        m = _TUNTAP_PATH.fullmatch(f.name)
        if m and f.type == "v" and f.vtype == "c":
            names.add(m[1])
    for name in names:
        _holders[name] = pid
    return sorted(names)


def held_by_session(name: str) -> bool:
    """Does the session process that held ``name`` hold it still?

    Only then is the device this session's: once sshd closed it, the persisting
    interface may be reopened by another session at any moment. The process is the one
    :func:`held_devices` last saw holding it: discovery (the server's sshd, the client's
    ssh child) and the watch (``wait_for_end``, given the session's pid) both ask it,
    so no rule of who the session is lives here. A device never seen held is not ours.
    """
    pid = _holders.get(name)
    return pid is not None and name in held_devices(pid)


_pipe_answers: dict[int, tuple[float, bool]] = {}


def holds_pipe(pid: int, inode: int) -> bool:
    """Does ``pid`` still hold a pipe? Any pipe: ``inode`` cannot be matched here.

    procstat names no pipe (its NAME is "-"), so another process's pipes cannot be
    told apart by inode on FreeBSD. Counting any pipe errs towards waiting longer,
    never shorter, and the caller bounds the wait. procstat runs at most every
    PIPE_CHECK_INTERVAL seconds per process, however fast the caller asks.
    """
    now = time.monotonic()
    last = _pipe_answers.get(pid)
    if last is not None and now - last[0] < PIPE_CHECK_INTERVAL:
        return last[1]
    held = any(f.type == "p" for f in _open_files(pid))
    _pipe_answers[pid] = (now, held)
    return held


def open_regular(path: str, sound: Callable[[os.stat_result], bool]) -> int | None:
    """A read-only fd on ``path`` if ``sound`` accepts what it is, else ``None``.

    Without Linux's reopening through an ``O_PATH`` handle, the path is judged with
    ``lstat`` first (a device node or FIFO is never opened) and the opened file is
    checked to be the one judged. Unverified on a FreeBSD host (docs/platforms.md).
    """
    try:
        st = os.lstat(path)
        if not sound(st):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        return None
    again = os.fstat(fd)
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) or not sound(again):
        os.close(fd)
        return None
    return fd


def boot_id() -> str:
    """``kern.boot_id``: 16 random bytes the kernel draws once per boot, as hex.

    Where the kernel has no kern.boot_id, a constant: never wrongly "another boot"
    (which would mark a live lease stale), only never "another boot" at all, and leases
    from before a reboot are still judged dead by pid and start time. kern.boottime is
    no substitute: it moves when the clock is stepped.
    """
    result = command.runner([SYSCTL, "-b", "kern.boot_id"])
    if result.returncode == 0 and len(result.stdout) == 16:
        return result.stdout.hex()
    if "unknown oid" in result.stderr:
        return _NO_BOOT_ID
    why = failure([SYSCTL, "-b", "kern.boot_id"], result)
    raise PlatformError(None, f"could not read the boot id ({why}); check that sysctl(8) works")


def process_start(pid: int) -> float | None:
    """A process's start time (psutil's ``create_time()``), or ``None`` if it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _running_start(pid: int) -> float | None:
    """The start time of ``pid`` if it runs (not a zombie), else ``None``."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return p.create_time()
    except psutil.Error:
        return None


def same_process(pid: int, start: float) -> bool:
    """Is the process that had ``pid`` at ``start`` still running? (:func:`.base.same_start`)"""
    return same_start(_running_start(pid), start)


def end_process(pid: int, start: float) -> bool:
    """SIGTERM the process that had ``pid`` at ``start`` if it still runs; sent?"""
    return terminate(pid, start, same_process)
