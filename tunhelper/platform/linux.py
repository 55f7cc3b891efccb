"""Linux: /proc for discovery, pyroute2 for configuration, pidfd + netlink for hold.

Discovery goes below psutil on purpose: ``Process.open_files()`` lists regular files
only and never shows ``/dev/net/tun``, so the fd links and ``fdinfo`` are read here,
and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import socket
import stat
import struct
from collections.abc import Iterator

from tunhelper.platform.base import DEVICE_GONE, PROCESS_ENDED, DeviceInfo

TUN_RDEV = os.makedev(10, 200)  # /dev/net/tun: misc device 200
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_IFF_TUN = 0x0001
_IFF_TAP = 0x0002
_IFF_PERSIST = 0x0800

# rtnetlink, as in <linux/rtnetlink.h>: the link multicast group and its deletion message.
_RTMGRP_LINK = 0x1
_RTM_DELLINK = 17
_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLATTR = struct.Struct("=HH")  # len, type
_IFLA_STATS64 = 23


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
            # By device number, not by path: a path read across mount namespaces (or
            # into a chroot) need not say /dev/net/tun.
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
    persistent = bool(flags & _IFF_PERSIST)
    if flags & _IFF_TAP:
        return DeviceInfo(name, index, "tap", persistent)
    if flags & _IFF_TUN:
        return DeviceInfo(name, index, "tun", persistent)
    return None


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


def _family(address: str) -> tuple[int, int]:
    """The address family and host prefix length of an address (pyroute2 needs both)."""
    return (socket.AF_INET6, 128) if ":" in address else (socket.AF_INET, 32)


def configure_p2p(device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
    """``ip addr add LOCAL peer PEER/32 dev DEV; ip link set DEV mtu N up``.

    The same on both ends of a link, with local and peer swapped; IPv6 is PEER/128,
    with its family given to pyroute2 explicitly (it assumes IPv4 otherwise).
    """
    from pyroute2 import IPRoute  # costly import (~150 ms): only on the path that needs it

    family, prefixlen = _family(local)
    with IPRoute() as ipr:
        ipr.link("set", index=device.index, state="up", mtu=mtu)  # IPv6 needs the MTU first
        ipr.addr(
            "add",
            index=device.index,
            family=family,
            local=local,
            address=peer,
            prefixlen=prefixlen,
        )


def filter_sources(device: DeviceInfo) -> None:
    """Drop packets arriving on ``device`` from addresses not routed through it.

    Strict reverse-path filtering: a session's tun is routed only its client's /32, so
    a client cannot send packets in another client's name. The kernel applies the
    larger of this and ``conf/all/rp_filter``: a loose (2) ``all`` overrides it
    (``tunhelper doctor`` says so). The setting goes with the device.
    """
    if not _valid_ifname(device.name):
        raise OSError(errno.EINVAL, f"bad interface name {device.name!r}")
    with open(f"/proc/sys/net/ipv4/conf/{device.name}/rp_filter", "w", encoding="ascii") as f:
        f.write("1\n")


def deconfigure_p2p(device: DeviceInfo, local: str, peer: str) -> None:
    """Undo :func:`configure_p2p` on whatever is left; a vanished device is not an error."""
    if not _same_device(device):
        return  # sshd closed it: the kernel already removed the device and its address
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    family, prefixlen = _family(local)
    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.addr(
            "del",
            index=device.index,
            family=family,
            local=local,
            address=peer,
            prefixlen=prefixlen,
        )
        ipr.link("set", index=device.index, state="down")


def configure_address(device: DeviceInfo, address: str, prefixlen: int, mtu: int) -> None:
    """``ip addr add ADDRESS/PREFIX dev DEV; ip link set DEV mtu N up`` (a tap client)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.addr("add", index=device.index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=device.index, state="up", mtu=mtu)


def deconfigure_address(device: DeviceInfo, address: str, prefixlen: int) -> None:
    """Undo :func:`configure_address` on whatever is left."""
    if not _same_device(device):
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.addr("del", index=device.index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=device.index, state="down")


def bridge_ports(name: str) -> list[str] | None:
    """The ports of bridge ``name``, or ``None`` if there is no such bridge."""
    if not _valid_ifname(name) or not os.path.isdir(f"/sys/class/net/{name}/bridge"):
        return None
    try:
        return sorted(os.listdir(f"/sys/class/net/{name}/brif"))
    except OSError:
        return None


def create_bridge(name: str, address: str | None, prefixlen: int, mtu: int) -> None:
    """``ip link add NAME type bridge; ip addr add ADDRESS/PREFIX dev NAME; ... up``."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        (index,) = ipr.link_lookup(ifname=name)
        if address is not None:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up", mtu=mtu)


def delete_bridge(name: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.link("del", ifname=name)


def add_port(device: DeviceInfo, bridge: str, mtu: int) -> None:
    """MTU first, so the bridge (which follows its smallest port) never shrinks below it."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        (master,) = ipr.link_lookup(ifname=bridge)
        ipr.link("set", index=device.index, mtu=mtu)
        ipr.link("set", index=device.index, master=master, state="up")


def remove_port(device: DeviceInfo, bridge: str) -> None:
    """``ip link set DEV nomaster down``, if the device still exists and is on ``bridge``."""
    if not _same_device(device):
        return
    try:
        master = os.path.basename(os.readlink(f"/sys/class/net/{device.name}/master"))
    except OSError:
        return
    if master != bridge:
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.link("set", index=device.index, master=0, state="down")


# Routes tunhelper installs carry their own protocol number (as routing daemons do,
# see /etc/iproute2/rt_protos), so that its routes can be told from anyone else's.
RTPROT_TUNHELPER = 113


def add_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """``ip route add NETWORK [via VIA] dev DEV proto 113``."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        route = {"dst": network, "oif": device.index, "proto": RTPROT_TUNHELPER}
        if via is not None:
            route["gateway"] = via
        ipr.route("add", **route)


def delete_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """Undo :func:`add_route`; a route that went with its device is not an error."""
    if not _same_device(device):
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.route("del", dst=network, oif=device.index, proto=RTPROT_TUNHELPER)


def our_routes() -> list[tuple[str, str]]:
    """``(network, device)`` of every route tunhelper installed that is still there."""
    from pyroute2 import IPRoute

    out = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for r in ipr.get_routes(family=socket.AF_INET, proto=RTPROT_TUNHELPER):
            dst = r.get_attr("RTA_DST") or "0.0.0.0"  # noqa: S104 - a route, not a bind
            out.append((f"{dst}/{r['dst_len']}", names.get(r.get_attr("RTA_OIF"), "?")))
    return out


def apply_dns(device: DeviceInfo, servers: list[str]) -> str | None:
    """Give the link's DNS servers to the system's resolver manager, if it has one.

    systemd-resolved (``resolvectl dns DEV ...``) or resolvconf (``resolvconf -a DEV``
    with ``nameserver`` lines on stdin). Returns what was done, or ``None`` if the
    system offers neither; a failure is an error.
    """
    import shutil
    import subprocess

    if shutil.which("resolvectl"):
        argv = ["resolvectl", "dns", device.name, *servers]
        stdin = None
    elif shutil.which("resolvconf"):
        argv = ["resolvconf", "-a", f"{device.name}.tunhelper"]
        stdin = "".join(f"nameserver {s}\n" for s in servers)
    else:
        return None
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise OSError(f"{argv[0]} failed: {result.stderr.strip() or result.returncode}")
    return argv[0]


def revert_dns(device: DeviceInfo, tool: str) -> None:
    """Undo :func:`apply_dns` with the tool that applied it."""
    import subprocess

    argv = (
        ["resolvectl", "revert", device.name]
        if tool == "resolvectl"
        else ["resolvconf", "-d", f"{device.name}.tunhelper"]
    )
    subprocess.run(argv, capture_output=True, timeout=10)


def _same_device(device: DeviceInfo) -> bool:
    current = device_info(device.name)
    return current is not None and current.index == device.index


@contextlib.contextmanager
def _tolerate_gone(error: type[Exception]) -> Iterator[None]:
    """sshd may close a device at any moment: "no such device/address" is not an error."""
    try:
        yield
    except error as e:
        if getattr(e, "code", None) not in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT):
            raise


def process_start(pid: int) -> float | None:
    """A process's start time as psutil's ``create_time()`` gives it, or ``None``.

    Read here rather than through psutil so that the slim holding process (see
    :mod:`tunhelper.hold`) need not import psutil for the life of a session.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, StopIteration, ValueError):
        return None
    # Field 22 (start time in clock ticks), counted after the parenthesised command name.
    ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _link_deleted(data: bytes, index: int) -> tuple[bool, tuple[int, int] | None]:
    """Does this batch of rtnetlink messages delete ``index``, and with what counters?

    The deletion message carries the device's last statistics (IFLA_STATS64): the
    only place left to read how many bytes a session moved once sshd closed its device.
    """
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size:
            break
        body = offset + _NLMSG_HDR.size
        end = min(offset + length, len(data))
        if (
            mtype == _RTM_DELLINK
            and body + _IFINFOMSG.size <= end
            and _IFINFOMSG.unpack_from(data, body)[2] == index
        ):
            return True, _stats64(data[body + _IFINFOMSG.size : end])
        offset += (length + 3) & ~3
    return False, None


def _stats64(attributes: bytes) -> tuple[int, int] | None:
    """``(rx_bytes, tx_bytes)`` from the IFLA_STATS64 attribute, if present."""
    offset = 0
    while offset + _NLATTR.size <= len(attributes):
        length, kind = _NLATTR.unpack_from(attributes, offset)
        if length < _NLATTR.size:
            break
        if kind == _IFLA_STATS64 and length >= _NLATTR.size + 32:
            _rx_packets, _tx_packets, rx, tx = struct.unpack_from("=4Q", attributes, offset + 4)
            return rx, tx
        offset += (length + 3) & ~3
    return None


# Counters of devices deleted while we watched them, by index (see link_counters).
_final_counters: dict[int, tuple[int, int]] = {}


def link_counters(device: DeviceInfo) -> tuple[int, int] | None:
    """Bytes ``(received, sent)`` through the device: now, or as it was deleted."""
    if _same_device(device):
        try:
            base = f"/sys/class/net/{device.name}/statistics"
            with open(f"{base}/rx_bytes") as rx, open(f"{base}/tx_bytes") as tx:
                return int(rx.read()), int(tx.read())
        except (OSError, ValueError):
            pass
    return _final_counters.get(device.index)


def _device_present(device: DeviceInfo) -> bool:
    try:
        return socket.if_nametoindex(device.name) == device.index
    except OSError:
        return False


def _note_deletion(data: bytes, device: DeviceInfo) -> bool:
    deleted, counters = _link_deleted(data, device.index)
    if deleted and counters is not None:
        _final_counters[device.index] = counters
    return deleted


def _drain(nl: socket.socket, device: DeviceInfo) -> None:
    """Read what is already queued on the netlink socket, without waiting."""
    while True:
        try:
            data = nl.recv(65536, socket.MSG_DONTWAIT)
        except OSError:
            return
        if not data or _note_deletion(data, device):
            return


def wait_for_end(pid: int, start_time: float, device: DeviceInfo) -> str:
    """Sleep in poll(2) on a pidfd and a netlink link socket: no busy loop.

    Signals interrupt poll(2); their handler raises, and the sockets are closed on the
    way out.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return PROCESS_ENDED
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.bind((0, _RTMGRP_LINK))
        # Subscribed first, checked second: an end that happened before we listened
        # is seen here, one that happens after arrives as an event.
        started = process_start(pid)
        if started is None or abs(started - start_time) > 1.0:
            return PROCESS_ENDED  # gone, or the pid now names another process
        if not _device_present(device):
            return DEVICE_GONE
        poller = select.poll()
        for fd in (pidfd, nl.fileno()):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    _drain(nl, device)  # the device went as sshd exited: keep its counters
                    return PROCESS_ENDED
                try:
                    data = nl.recv(65536)
                except OSError as e:  # ENOBUFS: events were lost, so look directly
                    if e.errno != errno.ENOBUFS:
                        raise
                    data = b""
                    if not _device_present(device):
                        return DEVICE_GONE
                if _note_deletion(data, device):
                    return DEVICE_GONE
    finally:
        nl.close()
        os.close(pidfd)
