"""The bridge that tap (ethernet) sessions share: one per pool, like one LAN segment.

tunhelper creates the bridge at a pool's first tap session (with the gateway and the
pool's prefix on it) and removes it after the last, but only a bridge it created: it
leaves a marker in the state directory when it does. ``--bridge NAME`` joins a bridge
the admin made instead, which tunhelper never creates, addresses or removes.

Helpers of concurrent sessions serialise bridge changes with a lock file, so that a
bridge is never removed between another session's "it exists" and "join it". A
helper killed with SIGKILL cannot clean up: every later bridge change, and
``tunhelper leases``, removes created bridges that no session uses any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass

from tunhelper import lock, platform
from tunhelper.errors import TunhelperError
from tunhelper.platform import DeviceInfo

MARKERS = "bridges"  # one empty file per bridge tunhelper created


@dataclass(frozen=True)
class BridgePlan:
    """Where a pool's tap sessions go."""

    name: str
    managed: bool  # True: tunhelper creates and removes it; False: the admin's bridge
    address: str | None  # the gateway, put on a managed bridge with the pool's prefix
    prefixlen: int


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


def announced_prefix(plan: BridgePlan, pool: str) -> int:
    """The prefix a tap client gets: the LAN's, when the pool is a slice of it.

    On the admin's bridge, the bridge's own IPv4 network that contains the pool
    (say 192.168.3.0/24 around a pool of 192.168.3.128/25) is the segment the client
    joins; otherwise the pool's prefix.
    """
    import netaddr
    import psutil

    pool_net = netaddr.IPNetwork(pool)
    best = plan.prefixlen
    if not plan.managed:
        for a in psutil.net_if_addrs().get(plan.name, []):
            if a.family == socket.AF_INET and a.netmask:
                lan = netaddr.IPNetwork(f"{a.address}/{a.netmask}")
                if pool_net in lan and lan.prefixlen < best:
                    best = lan.prefixlen
    return best


def mtu_ceiling(plan: BridgePlan) -> int | None:
    """The MTU of the admin's bridge (``None`` for a bridge tunhelper manages)."""
    if plan.managed:
        return None
    import psutil

    stats = psutil.net_if_stats().get(plan.name)
    return None if stats is None else stats.mtu


def join(device: DeviceInfo, plan: BridgePlan, mtu: int, state_dir: str) -> None:
    """Make ``device`` a port of the plan's bridge, creating a managed one if needed."""
    with lock.held(state_dir, "bridges"):
        _remove_unused(state_dir)
        if platform.bridge_ports(plan.name) is None:
            if not plan.managed:
                raise TunhelperError(
                    f"bridge {plan.name} (--bridge) does not exist: create it, or leave out "
                    "--bridge to let tunhelper manage one"
                )
            os.makedirs(os.path.join(state_dir, MARKERS), mode=0o700, exist_ok=True)
            with open(_marker(state_dir, plan.name), "w"):
                pass  # marker first: a crash after creating still lets repair find it
            platform.create_bridge(plan.name, plan.address, plan.prefixlen, mtu)
        platform.add_port(device, plan.name, mtu)


def leave(device: DeviceInfo, plan: BridgePlan, state_dir: str) -> None:
    """Take ``device`` off the bridge, and remove a managed bridge nobody uses any more."""
    with lock.held(state_dir, "bridges"):
        platform.remove_port(device, plan.name)
        _remove_unused(state_dir)


def repair(state_dir: str) -> list[str]:
    """Remove what killed helpers left: created bridges without ports."""
    if not os.path.isdir(os.path.join(state_dir, MARKERS)):
        return []
    with lock.held(state_dir, "bridges"):
        return _remove_unused(state_dir)
