"""Address pool arithmetic: which addresses of a network may be handed to clients.

Addresses are handled as offsets from the network address, so the lease store only
ever sees small integers and never needs an IP library. An IPv6 pool may be a /64 (the
usual IPv6 subnet) or longer; from one larger than /96 only the first 2**32 addresses
are handed out, so an offset always fits the store's 64-bit signed INTEGER (and any
database's 64-bit integer) with room to spare.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import netaddr

from tunhelper.errors import UsageError

# Dotted quads only, with every netaddr release we support: netaddr < 1.0 parses with
# inet_aton by default, where "10.1" is 10.0.0.1 and "10.0.0.010" is 10.0.0.8 (octal).
_STRICT = netaddr.INET_PTON
MIN_PREFIX6 = 64  # a subnet; shorter is not one link's worth of addresses
MAX_OFFSET6 = 2**32 - 1  # offsets below 2**32: far inside SQLite's 64-bit INTEGER
MAX_PREFIX = {4: 30, 6: 126}  # room for a gateway and one client


@dataclass(frozen=True)
class Pool:
    """A network, its gateway (the server side of every session), and its range.

    IPv4 excludes the network and broadcast addresses; IPv6 has no broadcast, so its
    last address is usable, and offset 0 (the subnet-router anycast) is never used.

    The gateway is ``None`` only for a pool that is a slice of a LAN an existing bridge
    already carries (``--bridge`` without ``--gateway``): tap sessions need none there.
    """

    network: netaddr.IPNetwork
    gateway: netaddr.IPAddress | None

    @classmethod
    def parse(cls, cidr: str, gateway: str | None = None, gateway_optional: bool = False) -> Pool:
        """Validate admin input; every refusal names the value and what would be right."""
        if "/" not in cidr:
            raise UsageError(
                f"--pool {cidr!r}: give a network with its prefix, like 192.168.3.0/24"
            )
        try:
            network = netaddr.IPNetwork(cidr)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise UsageError(
                f"--pool {cidr!r} is not a network; give one like 192.168.3.0/24"
            ) from None
        if str(network.cidr) != cidr:
            raise UsageError(
                f"--pool {cidr!r} is not a network address; did you mean {network.cidr}?"
            )
        if network.version == 6 and network.prefixlen < MIN_PREFIX6:
            raise UsageError(
                f"--pool {cidr} is larger than one IPv6 subnet: use a /{MIN_PREFIX6} "
                "or longer IPv6 pool"
            )
        if network.prefixlen > MAX_PREFIX[network.version]:
            raise UsageError(
                f"--pool {cidr} is too small: it needs room for a gateway and a client "
                f"(/{MAX_PREFIX[network.version]} or larger)"
            )
        if gateway is None:
            gw = None if gateway_optional else netaddr.IPAddress(network.first + 1, network.version)
        else:
            try:
                gw = netaddr.IPAddress(gateway, flags=_STRICT)
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise UsageError(
                    f"--gateway {gateway!r} is not an IPv{network.version} address; give one "
                    f"inside {network}"
                ) from None
            ends = (network.first,) if network.version == 6 else (network.first, network.last)
            if gw.version != network.version or gw not in network or gw.value in ends:
                raise UsageError(
                    f"--gateway {gateway} must be a host address inside --pool {network}"
                )
        return cls(network, gw)

    @property
    def name(self) -> str:
        """The pool's key in the lease store: its normalised CIDR."""
        return str(self.network.cidr)

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.network.version

    @property
    def first(self) -> int:
        """The lowest offset a client may get (the network address is offset 0)."""
        return 1

    @property
    def last(self) -> int:
        """The highest offset a client may get (IPv4's broadcast address is excluded;
        an IPv6 pool larger than /96 hands out its first 2**32 addresses only)."""
        if self.version == 4:
            return self.network.size - 2
        return min(self.network.size - 1, MAX_OFFSET6)

    def overlaps(self, network: str) -> bool:
        return overlap(self.name, network)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def address(self, offset: int) -> str:
        return str(netaddr.IPAddress(self.network.first + offset, self.version))

    def offset(self, address: str) -> int | None:
        """The offset of an address in this pool, or ``None`` if it is outside."""
        try:
            ip = netaddr.IPAddress(address, flags=_STRICT)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            return None
        if ip.version != self.version or ip not in self.network:
            return None
        return ip.value - self.network.first

    def excluded(self, local_addresses: Iterable[str]) -> set[int]:
        """Offsets never to hand out: the gateway and addresses already on this host."""
        out = set() if self.gateway is None else {self.gateway.value - self.network.first}
        for a in local_addresses:
            off = self.offset(a)
            if off is not None:
                out.add(off)
        return out

    @property
    def capacity(self) -> int:
        """How many clients the pool can serve at most (gateway excluded)."""
        return self.last - self.first + (1 if self.gateway is None else 0)


def overlap(a: str, b: str) -> bool:
    """Do two networks share an address? Never across families: netaddr's ``first`` and
    ``last`` are plain integers, and 10.0.0.0/8 and ::a00:0/104 would seem to."""
    one, other = netaddr.IPNetwork(a), netaddr.IPNetwork(b)
    return one.version == other.version and one.first <= other.last and other.first <= one.last
