"""Discovery through /proc and sysfs: which devices a process holds, what a device is,
whether a process is still the one we saw, and this boot's id.

Below psutil on purpose: ``Process.open_files()`` lists regular files only and never
shows ``/dev/net/tun``, so the fd links and ``fdinfo`` are read here. Process identity is
read here too, so the keeper (:mod:`tunhelper.server.keeper`) need not import psutil.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable

from tunhelper.platform.base import DeviceInfo, same_start, terminate

TUN_RDEV = os.makedev(10, 200)  # /dev/net/tun: misc device 200
SYSFS_NET = "/sys/class/net"
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_PERSIST = 0x0800


def valid_ifname(name: str) -> bool:
    """A name the kernel could have given a link, and safe to put in a sysfs path."""
    return bool(_IFNAME.fullmatch(name)) and name not in (".", "..")


def held_devices(pid: int) -> list[str]:
    """Names of the tun/tap devices ``pid`` has attached (``iff:`` in fdinfo), sorted."""
    names: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            # By device number, not by path: a path read across mount namespaces (or
            # into a chroot) need not say /dev/net/tun.
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != TUN_RDEV:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("iff:"):
                        name = line[4:].strip()
                        if valid_ifname(name):
                            names.add(name)
        except OSError:  # the fd closed or the process exited while we looked
            continue
    return sorted(names)


def holds_pipe(pid: int, inode: int) -> bool:
    """Does ``pid`` still have the pipe ``inode`` open (for example, our stderr)?"""
    target = f"pipe:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def tun_flags(name: str, sysfs: str = SYSFS_NET) -> int | None:
    """The device's IFF_* tun flags from sysfs; ``None`` if it is gone or not tun/tap."""
    try:
        with open(f"{sysfs}/{name}/tun_flags", encoding="ascii") as f:
            return int(f.read(), 16)
    except (OSError, ValueError):
        return None


def ifindex(name: str) -> int | None:
    """The interface's index from sysfs; ``None`` if there is no such interface."""
    if not valid_ifname(name):
        return None
    try:
        with open(f"{SYSFS_NET}/{name}/ifindex", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def device_info(name: str) -> DeviceInfo | None:
    """The device's index and mode from sysfs; ``None`` if it is gone or not tun/tap."""
    index = ifindex(name)
    if index is None:
        return None
    flags = tun_flags(name)
    if flags is None:
        return None
    persistent = bool(flags & IFF_PERSIST)
    if flags & IFF_TAP:
        return DeviceInfo(name, index, "tap", persistent)
    if flags & IFF_TUN:
        return DeviceInfo(name, index, "tun", persistent)
    return None


def same_device(device: DeviceInfo) -> bool:
    """Is ``device`` still there under its name (not gone, not a new link of that name)?"""
    current = device_info(device.name)
    return current is not None and current.index == device.index


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


def _stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/PID/stat`` from field 3 (state) on: the command name may hold anything."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def _boot_time() -> int | None:
    try:
        with open("/proc/stat", "rb") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _start(fields: list[bytes], btime: int) -> float:
    # Field 22 (start time in clock ticks) is the 20th after the command name.
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_start(pid: int) -> float | None:
    """A process's start time as psutil's ``create_time()`` gives it, or ``None``."""
    fields, btime = _stat_fields(pid), _boot_time()
    if fields is None or btime is None or len(fields) < 20:
        return None
    return _start(fields, btime)


def same_process(pid: int, start: float) -> bool:
    """Is the process that had ``pid`` at ``start`` still running? (:func:`.base.same_start`)"""
    fields, btime = _stat_fields(pid), _boot_time()
    if fields is None or btime is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return same_start(None, start)
    return same_start(_start(fields, btime), start)


def end_process(pid: int, start: float) -> bool:
    """SIGTERM the process that had ``pid`` at ``start`` if it still runs; sent?"""
    return terminate(pid, start, same_process)


def open_regular(path: str, sound: Callable[[os.stat_result], bool]) -> int | None:
    """A read-only fd on ``path`` if ``sound`` accepts what it is, else ``None``.

    Judged before anything can act on the path: opened with ``O_PATH`` (which opens
    nothing: a device node is not armed, a FIFO not waited on), checked with
    ``fstat``, then reopened through that very handle, so a file swapped in between is
    not the one read.
    """
    try:
        handle = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(handle)
        if not sound(st):
            return None
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    finally:
        os.close(handle)
    again = os.fstat(fd)
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return fd
