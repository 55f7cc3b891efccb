"""Linux: /proc for discovery, pyroute2 for configuration, pidfd + netlink for hold.

One exception on purpose: the two requests that configure a point-to-point link, on
every connect's path to the announcement, are sent here without pyroute2, whose import
alone cost more than the time target allows (issue 5, ``docs/performance.md``).

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
import sys
import time
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
# ... and the two requests that configure a point-to-point link (see configure_p2p).
_RTM_NEWLINK = 16
_RTM_NEWADDR = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_IFLA_MTU = 4
_IFF_UP = 0x1
_RTNETLINK_TIMEOUT = 5.0  # the kernel answers at once; never hang a session on it
# Address flags (<linux/if_addr.h>): NODAD makes an address usable at once, never
# "tentative"; TENTATIVE is how /proc/net/if_inet6 shows one not usable yet.
_IFA_F_NODAD = 0x02
_IFA_F_TENTATIVE = 0x40
_IPV6_READY_TIMEOUT = 2.0


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


def _rtnl() -> tuple[type, type[Exception]]:
    """pyroute2's ``IPRoute`` and ``NetlinkError``, without its package ``__init__``.

    ``import pyroute2`` imports the whole library (IPDB, NDB, conntrack, nftables,
    ethtool...): 110-150 ms that every connect waited for, to send two messages. The
    package object is created from its spec but not executed while the two modules
    that hold these classes load, then dropped, so a later ``import pyroute2`` runs the
    real ``__init__`` and finds them already loaded. A pyroute2 laid out differently
    gets the plain import: slower, never wrong.
    """
    import importlib
    import importlib.util

    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)
            try:
                linux = importlib.import_module("pyroute2.iproute.linux")
                exceptions = importlib.import_module("pyroute2.netlink.exceptions")
                return linux.IPRoute, exceptions.NetlinkError
            except (ImportError, AttributeError):
                pass  # fall through to the plain import
            finally:
                del sys.modules["pyroute2"]
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError


def _family(address: str) -> tuple[int, int]:
    """The address family and host prefix length of an address (pyroute2 needs both)."""
    return (socket.AF_INET6, 128) if ":" in address else (socket.AF_INET, 32)


def configure_p2p(device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
    """``ip link set DEV mtu N up; ip addr add LOCAL peer PEER/32 dev DEV``.

    The same on both ends of a link, with local and peer swapped; IPv6 is PEER/128.
    This is every connect's path to the announcement, so it sends its two rtnetlink
    requests itself rather than import pyroute2 (issue 5: ~60 ms even without its
    package ``__init__``, for two messages); everything else uses pyroute2, and
    ``tests/test_linux.py`` holds these requests to what pyroute2 sends.
    """
    family, prefixlen = _family(local)
    with _rtnetlink() as nl:
        # MTU first: IPv6 needs a link of at least 1280 before it takes an address
        link = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, device.index, _IFF_UP, _IFF_UP)
        _request(nl, _RTM_NEWLINK, 0, link + _attr(_IFLA_MTU, struct.pack("=I", mtu)))
        addr = _IFADDRMSG.pack(family, prefixlen, 0, 0, device.index)
        addr += _attr(_IFA_LOCAL, socket.inet_pton(family, local))
        addr += _attr(_IFA_ADDRESS, socket.inet_pton(family, peer))
        _request(nl, _RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, addr)
    if family == socket.AF_INET6:
        _await_ipv6_link(device.name, local, peer)


def _await_ipv6_link(name: str, local: str, peer: str) -> None:
    """Return once an IPv6 point-to-point address works, not merely exists.

    The kernel acknowledges the address while it is still tentative, and adds the route
    to the peer only when its address work item runs (no duplicate detection on a tun,
    but the same deferred step): measured here, 15% of the time after the
    acknowledgement, longer under load. Announcing then sends the client's first
    packets' answers nowhere.
    """
    local_hex = socket.inet_pton(socket.AF_INET6, local).hex()
    peer_hex = socket.inet_pton(socket.AF_INET6, peer).hex()
    deadline = time.monotonic() + _IPV6_READY_TIMEOUT
    while not (_ipv6_settled(name, local_hex) and _ipv6_host_route(name, peer_hex)):
        if time.monotonic() >= deadline:
            raise OSError(errno.ETIMEDOUT, f"IPv6 address {local} on {name} never became usable")
        time.sleep(0.002)


def _ipv6_settled(name: str, address_hex: str) -> bool:
    """``address`` is on ``name`` and no longer tentative (``/proc/net/if_inet6``)."""
    with open("/proc/net/if_inet6", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 6 and fields[0] == address_hex and fields[5] == name:
                return not int(fields[4], 16) & _IFA_F_TENTATIVE
    return False


def _ipv6_host_route(name: str, address_hex: str) -> bool:
    """A /128 route to ``address`` through ``name`` (``/proc/net/ipv6_route``)."""
    with open("/proc/net/ipv6_route", encoding="ascii") as f:
        for line in f:
            fields = line.split()  # dst, dst length (hex), ..., device
            if len(fields) == 10 and (fields[0], fields[1], fields[9]) == (address_hex, "80", name):
                return True
    return False


@contextlib.contextmanager
def _rtnetlink() -> Iterator[socket.socket]:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.settimeout(_RTNETLINK_TIMEOUT)
        nl.bind((0, 0))
        yield nl
    finally:
        nl.close()


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _request(nl: socket.socket, kind: int, flags: int, body: bytes) -> None:
    """Send one request and wait for its acknowledgement; a refusal raises ``OSError``."""
    seq = int.from_bytes(os.urandom(4), "little")
    flags |= _NLM_F_REQUEST | _NLM_F_ACK
    nl.sendto(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body, (0, 0))
    while True:
        error = _acknowledgement(nl.recv(65536), seq)
        if error is not None:
            if error:
                raise OSError(error, os.strerror(error))
            return


def _acknowledgement(data: bytes, seq: int) -> int | None:
    """The errno (0: done) the kernel answered request ``seq`` with, or ``None`` if absent."""
    offset = 0
    while offset + _NLMSG_HDR.size + 4 <= len(data):
        length, kind, _, mseq, _ = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size:
            break
        if kind == _NLMSG_ERROR and mseq == seq:
            (error,) = struct.unpack_from("=i", data, offset + _NLMSG_HDR.size)
            return -error
        offset += (length + 3) & ~3
    return None


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
    IPRoute, NetlinkError = _rtnl()

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


def _add_address(ipr, index: int, address: str, prefixlen: int) -> None:
    """``ip addr add ADDRESS/PREFIX dev INDEX``; an IPv6 address with ``nodad``.

    Duplicate address detection would keep an IPv6 address "tentative" (unusable) for
    a second or more after it is added, and not even start on a bridge without a port
    yet, so an address just announced would not work at once. Waiting for it instead
    would put that second on every tap session's path to the announcement, to find a
    duplicate that cannot exist: the lease store hands each address to one session
    only and never hands out the gateway or an address already on this host. Both
    pyroute2 0.7.2 (Debian 12) and 0.9.x take ``flags`` as IFA_FLAGS.
    """
    family, _ = _family(address)
    extra = {"flags": _IFA_F_NODAD} if family == socket.AF_INET6 else {}
    ipr.addr("add", index=index, family=family, address=address, prefixlen=prefixlen, **extra)


def configure_address(device: DeviceInfo, address: str, prefixlen: int, mtu: int) -> None:
    """``ip addr add ADDRESS/PREFIX dev DEV; ip link set DEV mtu N up`` (a tap client).

    IPv6 without duplicate address detection (see :func:`_add_address`).
    """
    IPRoute, _ = _rtnl()

    with IPRoute() as ipr:
        _add_address(ipr, device.index, address, prefixlen)
        ipr.link("set", index=device.index, state="up", mtu=mtu)


def deconfigure_address(device: DeviceInfo, address: str, prefixlen: int) -> None:
    """Undo :func:`configure_address` on whatever is left."""
    if not _same_device(device):
        return
    IPRoute, NetlinkError = _rtnl()

    family, _ = _family(address)
    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.addr("del", index=device.index, family=family, address=address, prefixlen=prefixlen)
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
    """``ip link add NAME address MAC type bridge; ip addr add ADDRESS/PREFIX ...; up``.

    The bridge gets a MAC address of its own: without one, Linux gives it the lowest
    MAC of its ports, which changes when that port's session ends, and every other
    client's neighbour entry for the gateway then points at a MAC no one has.
    """
    IPRoute, _ = _rtnl()
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFE) | 0x02  # unicast, locally administered
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge", address=mac.hex(":"))
        (index,) = ipr.link_lookup(ifname=name)
        if address is not None:
            _add_address(ipr, index, address, prefixlen)
        ipr.link("set", index=index, state="up", mtu=mtu)


def add_address(name: str, address: str, prefixlen: int) -> None:
    """``ip addr add ADDRESS/PREFIX dev NAME`` (a gateway on a pool's bridge), IPv6 nodad."""
    IPRoute, _ = _rtnl()

    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=name)
        _add_address(ipr, index, address, prefixlen)


def delete_bridge(name: str) -> None:
    IPRoute, NetlinkError = _rtnl()

    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.link("del", ifname=name)


def add_port(device: DeviceInfo, bridge: str, mtu: int) -> None:
    """MTU first, so the bridge (which follows its smallest port) never shrinks below it."""
    IPRoute, _ = _rtnl()

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
    IPRoute, NetlinkError = _rtnl()

    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.link("set", index=device.index, master=0, state="down")


# Routes tunhelper installs carry their own protocol number (as routing daemons do,
# see /etc/iproute2/rt_protos), so that its routes can be told from anyone else's.
RTPROT_TUNHELPER = 113


def add_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """``ip route add NETWORK [via VIA] dev DEV proto 113`` (``ip -6`` for IPv6).

    The family is given explicitly: pyroute2 assumes IPv4 without it.
    """
    IPRoute, _ = _rtnl()

    family, _ = _family(network)
    with IPRoute() as ipr:
        route = {"dst": network, "oif": device.index, "proto": RTPROT_TUNHELPER, "family": family}
        if via is not None:
            route["gateway"] = via
        ipr.route("add", **route)


def delete_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """Undo :func:`add_route`; a route that went with its device is not an error."""
    if not _same_device(device):
        return
    IPRoute, NetlinkError = _rtnl()

    family, _ = _family(network)
    with IPRoute() as ipr, _tolerate_gone(NetlinkError):
        ipr.route("del", dst=network, oif=device.index, proto=RTPROT_TUNHELPER, family=family)


def our_routes() -> list[tuple[str, str]]:
    """``(network, device)`` of every route tunhelper installed that is still there, of
    both families (a client network may be IPv6)."""
    IPRoute, _ = _rtnl()

    out = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for family, default in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # noqa: S104
            for r in ipr.get_routes(family=family, proto=RTPROT_TUNHELPER):
                dst = r.get_attr("RTA_DST") or default
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
