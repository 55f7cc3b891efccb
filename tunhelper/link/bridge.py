"""The bridge that tap (ethernet) sessions share: one per pool, like one LAN segment.

tunhelper creates the bridge at a pool's first tap session (with the gateway and the
pool's prefix on it; for dual stack also the IPv6 gateway with the IPv6 pool's prefix)
and removes it after the last, but only a bridge it created: it leaves a marker in the
state directory when it does. ``--bridge NAME`` joins a bridge
the admin made instead, which tunhelper never creates, addresses or removes.

Helpers of concurrent sessions serialise bridge changes with a lock file, so that a
bridge is never removed between another session's "it exists" and "join it". A
helper killed with SIGKILL cannot clean up: every later bridge change, and
``tunhelper repair``, removes created bridges that no session uses any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass

from tunhelper import platform, statedir
from tunhelper.errors import TunhelperError
from tunhelper.platform import DeviceInfo

MARKERS = statedir.BRIDGES  # one empty file per bridge tunhelper created


@dataclass(frozen=True)
class BridgePlan:
    """Where a pool's tap sessions go.

    A managed bridge carries each pool's gateway with that pool's prefix: ``address``
    for the primary pool (IPv4, or IPv6 for an IPv6-only pool) and, for dual stack,
    ``address6`` for the IPv6 one. The defaults keep records of older helpers readable.
    """

    name: str
    managed: bool  # True: tunhelper creates and removes it; False: the admin's bridge
    address: str | None  # the gateway, put on a managed bridge with the pool's prefix
    prefixlen: int
    address6: str | None = None  # dual stack: the IPv6 gateway, on a managed bridge too
    prefixlen6: int | None = None

    def gateways(self) -> list[tuple[str, int]]:
        """``(address, prefixlen)`` of each gateway a managed bridge carries."""
        out = [] if self.address is None else [(self.address, self.prefixlen)]
        if self.address6 is not None and self.prefixlen6 is not None:
            out.append((self.address6, self.prefixlen6))
        return out


def default_name(pool: str) -> str:
    """A stable name per pool that fits IFNAMSIZ (15 characters)."""
    return "thbr" + hashlib.sha256(pool.encode()).hexdigest()[:8]


def _marker(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, MARKERS, name)


def _remove_unused(state_dir: str) -> list[str]:
    """Remove created bridges that have no ports left; call with the lock held."""
    removed = []
    directory = os.path.join(state_dir, MARKERS)
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(directory)):
            ports = platform.bridge_ports(name)
            if ports:
                continue
            if ports is not None:  # it exists, with no ports
                platform.delete_bridge(name)
                removed.append(name)
            os.unlink(_marker(state_dir, name))
    return removed


def networks_on(name: str):
    """The networks an interface's own addresses are in, with those addresses
    (``netaddr.IPNetwork``, e.g. 192.168.3.1/24); IPv6 link-local ones left out."""
    import netaddr
    import psutil

    out = []
    for a in psutil.net_if_addrs().get(name, []):
        if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
            continue
        address = a.address.split("%", 1)[0]  # a link-local address carries its zone
        net = netaddr.IPNetwork(f"{address}/{netaddr.IPAddress(a.netmask).netmask_bits()}")
        if not net.ip.is_link_local():
            out.append(net)
    return out


def lan_around(plan: BridgePlan, pool: str):
    """The largest network of the admin's bridge that holds the pool, or ``None``."""
    import netaddr

    pool_net = netaddr.IPNetwork(pool)
    around = [
        n for n in networks_on(plan.name) if n.version == pool_net.version and pool_net in n.cidr
    ]
    return min(around, key=lambda n: n.prefixlen, default=None)


def announced_prefix(plan: BridgePlan, pool: str) -> int:
    """The prefix a tap client gets (each family's): the LAN's, when the pool is a slice of it.

    On the admin's bridge, the bridge's own network that contains the pool (say
    192.168.3.0/24 around a pool of 192.168.3.128/25, or fd00:3::/64 around
    fd00:3::8000/113) is the segment the client joins; otherwise the pool's prefix.
    """
    import netaddr

    best = netaddr.IPNetwork(pool).prefixlen
    if not plan.managed:
        lan = lan_around(plan, pool)
        if lan is not None and lan.prefixlen < best:
            best = lan.prefixlen
    return best


def admin_gateway6(plan: BridgePlan, pool: str, gateway: str | None) -> str:
    """The IPv6 gateway of a tap link on the admin's bridge: ``--gateway``, else the
    bridge's own address in the LAN around the pool.

    tunhelper never addresses an admin's bridge, so IPv6 there needs the admin's own
    IPv6 network around the pool on it: without one the server could not reach its
    tap clients over IPv6 nor say which segment they are on, and the announcement of
    an IPv6 link always names a gateway (clients require it). Refused in one line
    otherwise, before anything is leased.
    """
    if platform.bridge_ports(plan.name) is None:
        raise _no_such_bridge(plan)
    lan = lan_around(plan, pool)
    if lan is None:
        raise TunhelperError(
            f"bridge {plan.name} (--bridge) has no IPv6 address around --pool {pool}: add "
            f"one (ip addr add ADDRESS/PREFIX dev {plan.name}, the pool inside PREFIX), or "
            "connect with a tun link"
        )
    return gateway if gateway is not None else str(lan.ip)


def _no_such_bridge(plan: BridgePlan) -> TunhelperError:
    return TunhelperError(
        f"bridge {plan.name} (--bridge) does not exist: create it, or leave out "
        "--bridge to let tunhelper manage one"
    )


def mtu_ceiling(plan: BridgePlan) -> int | None:
    """The MTU of the admin's bridge (``None`` for a bridge tunhelper manages)."""
    if plan.managed:
        return None
    import psutil

    stats = psutil.net_if_stats().get(plan.name)
    return None if stats is None else stats.mtu


def join(device: DeviceInfo, plan: BridgePlan, mtu: int, state_dir: str) -> None:
    """Make ``device`` a port of the plan's bridge, creating a managed one if needed."""
    with statedir.held(state_dir, "bridges"):
        _remove_unused(state_dir)
        if platform.bridge_ports(plan.name) is None:
            if not plan.managed:
                raise _no_such_bridge(plan)
            os.makedirs(os.path.join(state_dir, MARKERS), mode=0o700, exist_ok=True)
            with open(_marker(state_dir, plan.name), "w"):
                pass  # marker first: a crash after creating still lets repair find it
            platform.create_bridge(plan.name, plan.address, plan.prefixlen, mtu)
        if plan.managed:
            _add_gateways(plan, state_dir)
        platform.add_port(device, plan.name, mtu)


def _add_gateways(plan: BridgePlan, state_dir: str) -> None:
    """Put on the managed bridge the gateways it lacks; call with the lock held.

    A bridge made for an IPv4-only key of a pool is the same bridge a dual-stack key
    of that pool uses (it is named after the IPv4 pool), and may serve both kinds of
    session at once: refusing until its last IPv4 session ended would lock dual stack
    out, so the missing IPv6 gateway is added, and goes with the bridge. Only to a
    bridge tunhelper created: one of that name that it did not is refused instead.
    """
    import netaddr

    on = {n.ip for n in networks_on(plan.name)}
    for address, prefixlen in plan.gateways():
        if netaddr.IPAddress(address) in on:
            continue
        if not os.path.exists(_marker(state_dir, plan.name)):
            raise TunhelperError(
                f"bridge {plan.name} lacks the gateway {address}/{prefixlen} and was not "
                f"created by tunhelper: add that address to it, delete it, or join it with "
                f"--bridge {plan.name}"
            )
        platform.add_address(plan.name, address, prefixlen)


def leave(device: DeviceInfo, plan: BridgePlan, state_dir: str) -> None:
    """Take ``device`` off the bridge, and remove a managed bridge nobody uses any more."""
    with statedir.held(state_dir, "bridges"):
        platform.remove_port(device, plan.name)
        _remove_unused(state_dir)


def left_behind(state_dir: str) -> list[str]:
    """Bridges tunhelper created that have no ports: left by killed helpers. Reads only."""
    directory = os.path.join(state_dir, MARKERS)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [name for name in names if platform.bridge_ports(name) == []]


def repair(state_dir: str) -> list[str]:
    """Remove what killed helpers left: created bridges without ports."""
    if not os.path.isdir(os.path.join(state_dir, MARKERS)):
        return []
    with statedir.held(state_dir, "bridges"):
        return _remove_unused(state_dir)
