"""The little rtnetlink tunhelper speaks itself, without pyroute2.

Two requests that configure a point-to-point link, on every connect's path to the
announcement (pyroute2's import alone cost more than the time target allows: issue 5,
``docs/performance.md``), and the parsing of a link's deletion message, which the watch
reads. ``tests/test_linux.py`` holds the requests to what pyroute2 sends. Nothing else
belongs here: everything else uses pyroute2 (:mod:`.links`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import time
from collections.abc import Iterator

from tunhelper.platform.base import DeviceInfo

# As in <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>.
RTMGRP_LINK = 0x1
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR = 16, 17, 20
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
NLATTR = struct.Struct("=HH")  # len, type
IFLA_MTU, IFLA_STATS64 = 4, 23
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
# NODAD makes an address usable at once, never "tentative"; TENTATIVE is how
# /proc/net/if_inet6 shows one not usable yet.
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
_TIMEOUT = 5.0  # the kernel answers at once; never hang a session on it
_IPV6_READY_TIMEOUT = 2.0


def family(address: str) -> tuple[int, int]:
    """The address family and host prefix length of an address (or network)."""
    return (socket.AF_INET6, 128) if ":" in address else (socket.AF_INET, 32)


def configure_p2p(device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
    """``ip link set DEV mtu N up; ip addr add LOCAL peer PEER/32 dev DEV``.

    The same on both ends of a link, with local and peer swapped; IPv6 is PEER/128.
    """
    af, prefixlen = family(local)
    with _socket() as nl:
        # MTU first: IPv6 needs a link of at least 1280 before it takes an address
        link = IFINFOMSG.pack(socket.AF_UNSPEC, 0, device.index, IFF_UP, IFF_UP)
        _request(nl, RTM_NEWLINK, 0, link + _attr(IFLA_MTU, struct.pack("=I", mtu)))
        addr = IFADDRMSG.pack(af, prefixlen, 0, 0, device.index)
        addr += _attr(IFA_LOCAL, socket.inet_pton(af, local))
        addr += _attr(IFA_ADDRESS, socket.inet_pton(af, peer))
        _request(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, addr)
    if af == socket.AF_INET6:
        _await_ipv6_link(device.name, local, peer)


def _await_ipv6_link(name: str, local: str, peer: str) -> None:
    """Return once an IPv6 point-to-point address works, not merely exists.

    The kernel acknowledges the address while it is still tentative, and adds the route
    to the peer only when its address work item runs: measured here, 15% of the time
    after the acknowledgement, longer under load. Announcing then sends the client's
    first packets' answers nowhere.
    """
    local_hex = socket.inet_pton(socket.AF_INET6, local).hex()
    peer_hex = socket.inet_pton(socket.AF_INET6, peer).hex()
    deadline = time.monotonic() + _IPV6_READY_TIMEOUT
    while not (ipv6_settled(name, local_hex) and ipv6_host_route(name, peer_hex)):
        if time.monotonic() >= deadline:
            raise OSError(errno.ETIMEDOUT, f"IPv6 address {local} on {name} never became usable")
        time.sleep(0.002)


def ipv6_settled(name: str, address_hex: str) -> bool:
    """``address`` is on ``name`` and no longer tentative (``/proc/net/if_inet6``)."""
    with open("/proc/net/if_inet6", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 6 and fields[0] == address_hex and fields[5] == name:
                return not int(fields[4], 16) & IFA_F_TENTATIVE
    return False


def ipv6_host_route(name: str, address_hex: str) -> bool:
    """A /128 route to ``address`` through ``name`` (``/proc/net/ipv6_route``)."""
    with open("/proc/net/ipv6_route", encoding="ascii") as f:
        for line in f:
            fields = line.split()  # dst, dst length (hex), ..., device
            if len(fields) == 10 and (fields[0], fields[1], fields[9]) == (address_hex, "80", name):
                return True
    return False


@contextlib.contextmanager
def _socket() -> Iterator[socket.socket]:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.settimeout(_TIMEOUT)
        nl.bind((0, 0))
        yield nl
    finally:
        nl.close()


def link_events() -> socket.socket:
    """A socket subscribed to link events (the watch reads deletions from it)."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.bind((0, RTMGRP_LINK))
    except BaseException:
        nl.close()
        raise
    return nl


def _attr(kind: int, payload: bytes) -> bytes:
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _request(nl: socket.socket, kind: int, flags: int, body: bytes) -> None:
    """Send one request and wait for its acknowledgement; a refusal raises ``OSError``."""
    seq = int.from_bytes(os.urandom(4), "little")
    flags |= NLM_F_REQUEST | NLM_F_ACK
    nl.sendto(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body, (0, 0))
    while True:
        error = acknowledgement(nl.recv(65536), seq)
        if error is not None:
            if error:
                raise OSError(error, os.strerror(error))
            return


def acknowledgement(data: bytes, seq: int) -> int | None:
    """The errno (0: done) the kernel answered request ``seq`` with, or ``None`` if absent."""
    offset = 0
    while offset + NLMSG_HDR.size + 4 <= len(data):
        length, kind, _, mseq, _ = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        if kind == NLMSG_ERROR and mseq == seq:
            (error,) = struct.unpack_from("=i", data, offset + NLMSG_HDR.size)
            return -error
        offset += (length + 3) & ~3
    return None


def link_deleted(data: bytes, index: int) -> tuple[bool, tuple[int, int] | None]:
    """Does this batch of rtnetlink messages delete ``index``, and with what counters?

    The deletion message carries the device's last statistics (IFLA_STATS64): the
    only place left to read how many bytes a session moved once sshd closed its device.
    """
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        body = offset + NLMSG_HDR.size
        end = min(offset + length, len(data))
        if (
            mtype == RTM_DELLINK
            and body + IFINFOMSG.size <= end
            and IFINFOMSG.unpack_from(data, body)[2] == index
        ):
            return True, _stats64(data[body + IFINFOMSG.size : end])
        offset += (length + 3) & ~3
    return False, None


def _stats64(attributes: bytes) -> tuple[int, int] | None:
    """``(rx_bytes, tx_bytes)`` from the IFLA_STATS64 attribute, if present."""
    offset = 0
    while offset + NLATTR.size <= len(attributes):
        length, kind = NLATTR.unpack_from(attributes, offset)
        if length < NLATTR.size:
            break
        if kind == IFLA_STATS64 and length >= NLATTR.size + 32:
            _rx_packets, _tx_packets, rx, tx = struct.unpack_from("=4Q", attributes, offset + 4)
            return rx, tx
        offset += (length + 3) & ~3
    return None
