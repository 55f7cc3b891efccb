"""Configuration through pyroute2: addresses, bridges and their ports, routes, counters.

pyroute2 is loaded only when one of these runs, and without its package ``__init__``
(:func:`_rtnl`). Its ``NetlinkError`` never leaves this module: it becomes
:class:`PlatformError` with the kernel's errno.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from collections.abc import Iterator

from tunhelper.platform.base import DeviceInfo, PlatformError
from tunhelper.platform.linux.proc import SYSFS_NET, same_device, valid_ifname
from tunhelper.platform.linux.rtnetlink import IFA_F_NODAD, family

# Routes tunhelper installs carry their own protocol number (as routing daemons do,
# see /etc/iproute2/rt_protos), so that its routes can be told from anyone else's.
RTPROT_TUNHELPER = 113
_GONE = (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT)


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


@contextlib.contextmanager
def _ipr(tolerate_gone: bool = False) -> Iterator:
    """An ``IPRoute``; a kernel refusal leaves as :class:`PlatformError`.

    With ``tolerate_gone``: sshd may close a device at any moment, so "no such
    device/address" is not an error for what undoes a step.
    """
    IPRoute, NetlinkError = _rtnl()
    try:
        with IPRoute() as ipr:
            yield ipr
    except NetlinkError as e:
        code = getattr(e, "code", None)
        if tolerate_gone and code in _GONE:
            return
        raise PlatformError(code, f"netlink: {e}") from e


def deconfigure_p2p(device: DeviceInfo, local: str, peer: str) -> None:
    """Undo ``configure_p2p`` on whatever is left; a vanished device is not an error."""
    if not same_device(device):
        return  # sshd closed it: the kernel already removed the device and its address
    af, prefixlen = family(local)
    with _ipr(tolerate_gone=True) as ipr:
        ipr.addr(
            "del", index=device.index, family=af, local=local, address=peer, prefixlen=prefixlen
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
    af, _ = family(address)
    extra = {"flags": IFA_F_NODAD} if af == socket.AF_INET6 else {}
    ipr.addr("add", index=index, family=af, address=address, prefixlen=prefixlen, **extra)


def configure_address(device: DeviceInfo, address: str, prefixlen: int, mtu: int) -> None:
    """``ip addr add ADDRESS/PREFIX dev DEV; ip link set DEV mtu N up`` (a tap client).

    IPv6 without duplicate address detection (see :func:`_add_address`).
    """
    with _ipr() as ipr:
        _add_address(ipr, device.index, address, prefixlen)
        ipr.link("set", index=device.index, state="up", mtu=mtu)


def deconfigure_address(device: DeviceInfo, address: str, prefixlen: int) -> None:
    """Undo :func:`configure_address` on whatever is left."""
    if not same_device(device):
        return
    af, _ = family(address)
    with _ipr(tolerate_gone=True) as ipr:
        ipr.addr("del", index=device.index, family=af, address=address, prefixlen=prefixlen)
        ipr.link("set", index=device.index, state="down")


def bridge_ports(name: str) -> list[str] | None:
    """The ports of bridge ``name``, or ``None`` if there is no such bridge."""
    if not valid_ifname(name) or not os.path.isdir(f"{SYSFS_NET}/{name}/bridge"):
        return None
    try:
        return sorted(os.listdir(f"{SYSFS_NET}/{name}/brif"))
    except OSError:
        return None


def create_bridge(name: str, address: str | None, prefixlen: int, mtu: int) -> None:
    """``ip link add NAME address MAC type bridge; ip addr add ADDRESS/PREFIX ...; up``.

    The bridge gets a MAC address of its own: without one, Linux gives it the lowest
    MAC of its ports, which changes when that port's session ends, and every other
    client's neighbour entry for the gateway then points at a MAC no one has.
    """
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFE) | 0x02  # unicast, locally administered
    with _ipr() as ipr:
        ipr.link("add", ifname=name, kind="bridge", address=mac.hex(":"))
        (index,) = ipr.link_lookup(ifname=name)
        if address is not None:
            _add_address(ipr, index, address, prefixlen)
        ipr.link("set", index=index, state="up", mtu=mtu)


def _index(ipr, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if len(found) != 1:
        raise PlatformError(errno.ENODEV, f"no link named {name}")
    return found[0]


def add_address(name: str, address: str, prefixlen: int) -> None:
    """``ip addr add ADDRESS/PREFIX dev NAME`` (a gateway on a pool's bridge), IPv6 nodad."""
    with _ipr() as ipr:
        _add_address(ipr, _index(ipr, name), address, prefixlen)


def delete_bridge(name: str) -> None:
    with _ipr(tolerate_gone=True) as ipr:
        ipr.link("del", ifname=name)


def add_port(device: DeviceInfo, bridge: str, mtu: int) -> None:
    """MTU first, so the bridge (which follows its smallest port) never shrinks below it."""
    with _ipr() as ipr:
        master = _index(ipr, bridge)
        ipr.link("set", index=device.index, mtu=mtu)
        ipr.link("set", index=device.index, master=master, state="up")


def remove_port(device: DeviceInfo, bridge: str) -> None:
    """``ip link set DEV nomaster down``, if the device still exists and is on ``bridge``."""
    if not same_device(device):
        return
    try:
        master = os.path.basename(os.readlink(f"{SYSFS_NET}/{device.name}/master"))
    except OSError:
        return
    if master != bridge:
        return
    with _ipr(tolerate_gone=True) as ipr:
        ipr.link("set", index=device.index, master=0, state="down")


def add_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """``ip route add NETWORK [via VIA] dev DEV proto 113`` (``ip -6`` for IPv6).

    The family is given explicitly: pyroute2 assumes IPv4 without it.
    """
    af, _ = family(network)
    route = {"dst": network, "oif": device.index, "proto": RTPROT_TUNHELPER, "family": af}
    if via is not None:
        route["gateway"] = via
    with _ipr() as ipr:
        ipr.route("add", **route)


def delete_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """Undo :func:`add_route`; a route that went with its device is not an error."""
    if not same_device(device):
        return
    af, _ = family(network)
    with _ipr(tolerate_gone=True) as ipr:
        ipr.route("del", dst=network, oif=device.index, proto=RTPROT_TUNHELPER, family=af)


def our_routes() -> list[tuple[str, str]]:
    """``(network, device)`` of every route tunhelper installed that is still there, of
    both families (a client network may be IPv6)."""
    out = []
    with _ipr() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for af, default in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # noqa: S104
            for r in ipr.get_routes(family=af, proto=RTPROT_TUNHELPER):
                dst = r.get_attr("RTA_DST") or default
                out.append((f"{dst}/{r['dst_len']}", names.get(r.get_attr("RTA_OIF"), "?")))
    return out


def link_counters(device: DeviceInfo) -> tuple[int, int] | None:
    """Bytes ``(received, sent)`` through the device now; ``None`` if it is gone.

    A deleted device's last counters come from the watch (``wait_for_end``).
    """
    if not same_device(device):
        return None
    try:
        base = f"{SYSFS_NET}/{device.name}/statistics"
        with open(f"{base}/rx_bytes") as rx, open(f"{base}/tx_bytes") as tx:
            return int(rx.read()), int(tx.read())
    except (OSError, ValueError):
        return None
