"""Linux: /proc for discovery, pyroute2 for configuration, pidfd + netlink for hold.

Discovery goes below psutil on purpose: ``Process.open_files()`` lists regular files
only and never shows ``/dev/net/tun``, so the fd links and ``fdinfo`` are read here,
and nowhere else.
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import stat
import struct

from tunhelper.platform.base import DeviceInfo

# /dev/net/tun, by number (misc major 10, TUN_MINOR 200) rather than by the name readlink
# shows: seen from another mount namespace or a chroot, that name differs.
TUN_RDEV = os.makedev(10, 200)
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_IFF_TUN = 0x0001
_IFF_TAP = 0x0002

# rtnetlink, as in <linux/rtnetlink.h>: the link multicast group and its deletion message.
_RTMGRP_LINK = 0x1
_RTM_DELLINK = 17
_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change


def _valid_ifname(name: str) -> bool:
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
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != TUN_RDEV:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("iff:"):
                        name = line[4:].strip()
                        if _valid_ifname(name):
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


def device_info(name: str) -> DeviceInfo | None:
    """The device's index and mode from sysfs; ``None`` if it is gone or not tun/tap."""
    if not _valid_ifname(name):
        return None
    base = f"/sys/class/net/{name}"
    try:
        with open(f"{base}/ifindex", encoding="ascii") as f:
            index = int(f.read())
        with open(f"{base}/tun_flags", encoding="ascii") as f:
            flags = int(f.read(), 16)
    except (OSError, ValueError):
        return None
    if flags & _IFF_TAP:
        return DeviceInfo(name, index, "tap")
    if flags & _IFF_TUN:
        return DeviceInfo(name, index, "tun")
    return None


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


def configure_p2p(device: DeviceInfo, local: str, peer: str, mtu: int | None) -> None:
    """``ip addr add LOCAL peer PEER/32 dev DEV; ip link set DEV [mtu N] up``."""
    from pyroute2 import IPRoute  # costly import (~150 ms): only on the path that needs it

    with IPRoute() as ipr:
        ipr.addr("add", index=device.index, local=local, address=peer, prefixlen=32)
        link = {"state": "up"}
        if mtu is not None:
            link["mtu"] = mtu
        ipr.link("set", index=device.index, **link)


def deconfigure_p2p(device: DeviceInfo, local: str, peer: str) -> None:
    """Undo :func:`configure_p2p` on whatever is left; a vanished device is not an error."""
    current = device_info(device.name)
    if current is None or current.index != device.index:
        return  # sshd closed it: the kernel already removed the device and its address
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    gone = (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT)
    with IPRoute() as ipr:
        try:
            ipr.addr("del", index=device.index, local=local, address=peer, prefixlen=32)
            ipr.link("set", index=device.index, state="down")
        except NetlinkError as e:
            if e.code not in gone:  # sshd may close the device at any moment
                raise


def _link_deleted(data: bytes, index: int) -> bool:
    """Does this batch of rtnetlink messages contain RTM_DELLINK for ``index``?"""
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size:
            break
        body = offset + _NLMSG_HDR.size
        if (
            mtype == _RTM_DELLINK
            and body + _IFINFOMSG.size <= len(data)
            and _IFINFOMSG.unpack_from(data, body)[2] == index
        ):
            return True
        offset += (length + 3) & ~3
    return False


def _device_present(device: DeviceInfo) -> bool:
    try:
        return socket.if_nametoindex(device.name) == device.index
    except OSError:
        return False


def wait_for_end(pid: int, start_time: float, device: DeviceInfo) -> str:
    """Sleep in poll(2) on a pidfd and a netlink link socket: no busy loop.

    Signals interrupt poll(2); their handler raises, and the sockets are closed on the
    way out.
    """
    import psutil

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return "session process ended"
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.bind((0, _RTMGRP_LINK))
        # Subscribed first, checked second: an end that happened before we listened
        # is seen here, one that happens after arrives as an event.
        try:
            if abs(psutil.Process(pid).create_time() - start_time) > 1.0:
                return "session process ended"
        except psutil.NoSuchProcess:
            return "session process ended"
        if not _device_present(device):
            return f"device {device.name} disappeared"
        poller = select.poll()
        for fd in (pidfd, nl.fileno()):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    return "session process ended"
                try:
                    data = nl.recv(65536)
                except OSError as e:  # ENOBUFS: events were lost, so look directly
                    if e.errno != errno.ENOBUFS:
                        raise
                    data = b""
                    if not _device_present(device):
                        return f"device {device.name} disappeared"
                if _link_deleted(data, device.index):
                    return f"device {device.name} disappeared"
    finally:
        nl.close()
        os.close(pidfd)
