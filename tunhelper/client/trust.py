"""Distrust of the gateway: its announcement is held against this host's own networks
before anything of it is applied.

A gateway may be compromised. What it must never get, whatever it announces, is the
client's local traffic (its LAN, a LAN host such as the resolver or the printer) or
the ssh connection that carries the tunnel. Longest prefix wins, so an announced
route takes traffic from the host's own routes exactly when it is *as specific or
more specific* than one of them. Hence the rules, per announced route:

- inside (or equal to) a directly connected network: dropped (the LAN's halves, a
  LAN host's /32);
- inside (or equal to) one of the host's own routes to its LAN (main table, not the
  default route): dropped;
- covering an ssh peer's address: dropped (the tunnel would carry itself). The full
  tunnel's halves or default are the exception: they are applied by policy routing
  with a rule that keeps the peer outside (:mod:`fulltunnel`).

A route that *covers* a connected network (``10.0.0.0/8`` around a home LAN
``10.1.2.0/24``) is kept: the LAN's own route stays more specific and wins, and such
routes are what a split tunnel to a company network ordinarily announces.

Dropped, not refused, for routes: dropping removes all the harm (the host's own
routes stay as they were), while a refusal would turn an ordinary collision (a
gateway whose network is the user's home network, both 192.168.1.0/24) into no VPN
at all, and under the kill-switch into no network at all. The link's *own*
addresses (the client's address, the gateway's, a tap link's network) cannot be
dropped without losing the link, so a collision there refuses the link
(:class:`Untrusted`).

DNS: a server is kept only if its queries will go through the tunnel: not on the
host's own networks, not an ssh peer, and on a split tunnel inside an accepted route
or the gateway's address. Full tunnel: with systemd-resolved the link becomes the
default DNS route (routing domain ``~.``), so queries leave only through it. Split
tunnel: only the announced domains go to the link's servers; the announcement
(version 1) carries no domains, so the servers serve the link alone and the
system's default DNS route is not touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import netaddr

from tunhelper import family
from tunhelper.client import fulltunnel
from tunhelper.errors import TunhelperError
from tunhelper.protocol import Announcement


class Untrusted(TunhelperError):
    """The announcement's own addresses collide with this host's networks: the link is
    refused (never half applied)."""


@dataclass(frozen=True)
class HostView:
    """This host's own networks, read before the link is applied (plain CIDR strings).

    ``connected``: networks of its addresses (and the addresses as host networks);
    ``routes``: its main table's routes other than default and tunhelper's;
    ``peers``: the addresses ssh connects to (every resolved first hop, and the
    actual TCP peer once known).
    """

    connected: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dropped:
    """One part of the announcement left out, and why (for the warning line)."""

    what: str  # "route 10.232.0.0/25", "DNS server 10.232.0.53"
    reason: str

    def line(self) -> str:
        return f"ignoring the gateway's {self.what}: {self.reason}"


@dataclass(frozen=True)
class Dns:
    """How the link's DNS servers are to be used.

    ``default_route``: the link is the system's default DNS route (systemd-resolved:
    ``DefaultRoute=yes`` and routing domain ``~.``; without it, resolv.conf holds the
    link's servers alone). Otherwise only ``domains`` (routing domains) go to the
    link's servers, or, with none, the servers serve the link alone.
    """

    servers: tuple[str, ...] = ()
    default_route: bool = False
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What may be applied: ``full``, the IP versions tunnelled whole (policy routing);
    ``routes``, the other announced routes; ``dns``; and what was ``dropped``."""

    full: tuple[int, ...]
    routes: tuple[str, ...]
    dns: Dns
    dropped: tuple[Dropped, ...] = field(default=())

    def warnings(self) -> list[str]:
        """One line per dropped part, to log as warnings."""
        return [d.line() for d in self.dropped]


def judge(ann: Announcement, host: HostView) -> Verdict:
    """Hold ``ann`` against ``host``: what of it may be applied, and what is dropped.

    Raises :class:`Untrusted` (one line) when the link's own addresses fall on the
    host's networks or on an ssh peer. Pure: reads nothing, changes nothing; the
    caller logs :meth:`Verdict.warnings` and applies only the verdict.
    """
    own = _Own(host)
    _check_link(ann, own)
    full = set(fulltunnel.families(ann))
    wholes = set().union(*(fulltunnel.HALVES[v] | {fulltunnel.DEFAULTS[v]} for v in full))
    routes, dropped = [], []
    for route in ann.routes:
        if route in wholes:
            continue  # policy routing, with the peer kept outside
        reason = own.takes(route)
        if reason is None:
            routes.append(route)
        else:
            dropped.append(Dropped(f"route {route}", reason))
    servers = []
    tunnelled = [netaddr.IPNetwork(r) for r in routes] + [
        netaddr.IPNetwork(g) for g in (ann.gateway, ann.gateway6) if g is not None
    ]
    if ann.mode == "tap":
        tunnelled.append(netaddr.IPNetwork(f"{ann.address}/{ann.prefix}").cidr)
    for server in ann.dns:
        reason = own.takes(server, dns=True)
        outside = not any(netaddr.IPAddress(server) in net for net in tunnelled)
        if reason is None and family.of(server) not in full and outside:
            reason = "not reached through the tunnel (no announced route to it)"
        if reason is None:
            servers.append(server)
        else:
            dropped.append(Dropped(f"DNS server {server}", reason))
    everything = bool(full) and bool(servers)
    dns = Dns(tuple(servers), default_route=everything, domains=("~.",) if everything else ())
    return Verdict(tuple(sorted(full)), tuple(routes), dns, tuple(dropped))


def host_view(peers: Iterable[str], tunnel: str | None = None) -> HostView:
    """Read this host's networks through the platform layer (the tunnel device
    ``tunnel``, if it exists yet, left out) and add the ssh peers."""
    from tunhelper import platform

    exclude = (tunnel,) if tunnel else ()
    try:
        connected, routes = platform.routes_view.local_networks(exclude)
    except OSError as e:
        why = f"cannot read this host's networks to check the gateway's: {e}"
        raise TunhelperError(why) from None
    return HostView(tuple(connected), tuple(routes), tuple(sorted(set(peers))))


class _Own:
    """The host's networks, parsed once."""

    def __init__(self, host: HostView) -> None:
        self.connected = [netaddr.IPNetwork(n).cidr for n in host.connected]
        self.routes = [netaddr.IPNetwork(n).cidr for n in host.routes]
        self.peers = [netaddr.IPAddress(p) for p in host.peers]

    def takes(self, text: str, dns: bool = False) -> str | None:
        """Why ``text`` (a network, or with ``dns`` a server's address) would take
        this host's own traffic, or ``None``."""
        net = netaddr.IPNetwork(text).cidr
        for mine in self.connected:
            if net.version == mine.version and net in mine:
                where = "on" if dns else "inside"
                return f"{where} {mine}, a network this host is directly connected to"
        for mine in self.routes:
            if net.version == mine.version and net in mine:
                where = "on" if dns else "inside"
                return f"{where} {mine}, which this host routes by itself"
        for peer in self.peers:
            if peer.version == net.version and peer in net:
                what = "is" if net.size == 1 else "covers"
                return f"{what} the ssh connection's peer {peer}"
        return None


def _check_link(ann: Announcement, own: _Own) -> None:
    """The link's own addresses: a collision refuses the link (they cannot be dropped)."""
    parts = [("address", ann.address), ("gateway", ann.gateway)]
    parts += [("IPv6 address", ann.address6), ("IPv6 gateway", ann.gateway6)]
    if ann.mode == "tap":
        parts.append(("link network", str(netaddr.IPNetwork(f"{ann.address}/{ann.prefix}").cidr)))
        if ann.address6 is not None and ann.prefix6 is not None:
            network6 = netaddr.IPNetwork(f"{ann.address6}/{ann.prefix6}").cidr
            parts.append(("IPv6 link network", str(network6)))
    for what, value in parts:
        if value is None:
            continue
        reason = own.takes(value)
        if reason is not None:
            raise Untrusted(
                f"refusing the link: the gateway announced {what} {value}, {reason}; "
                "the gateway or this network is misconfigured, or hostile"
            )
