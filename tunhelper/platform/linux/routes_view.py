"""Linux, client side, read only: the networks this host reaches by itself.

What :mod:`tunhelper.client.trust` holds a gateway's announcement against: the
networks of the host's own addresses (directly connected) and its own routes in the
main table. Plain strings out, so the judgement itself stays pure logic.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection

from tunhelper.platform.linux.links import RTPROT_TUNHELPER, _ipr

MAIN = 254
# unicast, blackhole, unreachable, prohibit: a user's routes, whatever they do
_ROUTE_TYPES = (1, 6, 7, 8)


def local_networks(exclude: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """``(connected, routes)`` of both families, as CIDR strings, sorted.

    ``connected``: for each address on a device not in ``exclude``, its network (the
    peer's, on a point-to-point address) and the address itself as a host network.
    ``routes``: the main table's routes other than default routes, tunhelper's own
    (``proto 113``) and those through an excluded device. ``exclude`` names the tunnel
    device(s), whose own addresses and routes are the announcement's, not the host's.
    """
    connected: set[str] = set()
    routes: set[str] = set()
    with _ipr() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        skip = {index for index, name in names.items() if name in exclude}
        for af in (socket.AF_INET, socket.AF_INET6):
            for addr in ipr.get_addr(family=af):
                if addr["index"] in skip:
                    continue
                local = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
                peer = addr.get_attr("IFA_ADDRESS") or local
                if local is None:
                    continue
                connected.add(_cidr(peer, addr["prefixlen"]))
                connected.add(_cidr(local, 128 if af == socket.AF_INET6 else 32))
            for route in ipr.get_routes(family=af, table=MAIN):
                if (
                    route["dst_len"] == 0
                    or route["type"] not in _ROUTE_TYPES
                    or route["proto"] == RTPROT_TUNHELPER
                    or route.get_attr("RTA_OIF") in skip
                    or route.get_attr("RTA_TABLE", MAIN) != MAIN
                ):
                    continue
                dst = route.get_attr("RTA_DST")
                if dst is not None:
                    routes.add(_cidr(dst, route["dst_len"]))
    return sorted(connected), sorted(routes)


def _cidr(address: str, prefixlen: int) -> str:
    return str(ipaddress.ip_network(f"{address.split('%')[0]}/{prefixlen}", strict=False))
