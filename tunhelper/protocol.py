"""The announcement: how the server tells the client its address, and how it is read.

A plain ``ssh -w any`` gets the bare address as its first line. ``tunhelper connect``
sends exactly :data:`REQUEST` as its remote command and gets one JSON line describing
the whole link instead. Nothing the client sends is ever executed; any other command
gets the plain line.

Dual stack: ``address``/``prefix``/``gateway`` are the IPv4 values (so the plain line
and older clients see what they always saw) and ``address6``/``prefix6``/``gateway6``
the IPv6 ones; an IPv6-only session has its IPv6 values in ``address`` and so on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from tunhelper import family
from tunhelper.errors import TunhelperError

REQUEST = "tunhelper-describe/1"
VERSION = 1
MODES = ("tun", "tap")


@dataclass(frozen=True)
class Announcement:
    """What the client needs to configure its end of the link."""

    address: str
    prefix: int
    gateway: str | None  # None only on a tap link joining an admin's bridge with no gateway
    mode: str
    mtu: int
    routes: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    address6: str | None = None  # dual stack only: the IPv6 side
    prefix6: int | None = None
    gateway6: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"version": VERSION, **asdict(self)}
        if not self.dns:
            del data["dns"]  # carried only when the admin set it
        if self.address6 is None:
            for key in ("address6", "prefix6", "gateway6"):
                del data[key]
        return json.dumps(data, separators=(",", ":"))


def wants_description(original_command: str | None) -> bool:
    """Only the exact, versioned request; anything else is not a request."""
    return original_command == REQUEST


def announce(announcement: Announcement, describe: bool) -> None:
    """Write the one line on fd 1 unbuffered, so the client reads it at once."""
    line = announcement.to_json() if describe else announcement.address
    data = f"{line}\n".encode("ascii")
    try:
        while data:
            data = data[os.write(1, data) :]
    except OSError as e:
        raise TunhelperError(f"could not announce the address: {e.strerror}") from None


def _ip(value: object, what: str, version: int) -> str:
    import netaddr  # the client's parsing only: the server never pays for it here

    try:
        if isinstance(value, str):
            if version == 4 and netaddr.valid_ipv4(value, netaddr.INET_PTON):
                return str(netaddr.IPAddress(value, 4))
            if version == 6 and netaddr.valid_ipv6(value, netaddr.INET_PTON):
                return str(netaddr.IPAddress(value, 6, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        pass
    raise TunhelperError(f"the server announced a bad {what}: {value!r}")


def _prefix(value: object, version: int, what: str = "prefix") -> int:
    top = 32 if version == 4 else 128
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= top:
        raise TunhelperError(f"the server announced a bad {what}: {value!r}")
    return value


def _network(value: object) -> str:
    """A route as the server writes it: IPv4, or IPv6 in compact form, no host bits."""
    import netaddr

    try:
        if isinstance(value, str) and "/" in value:
            net = netaddr.IPNetwork(value)
            if str(net.cidr) == value and net.prefixlen > 0:
                return value
    except (netaddr.AddrFormatError, ValueError, TypeError):
        pass
    raise TunhelperError(f"the server announced a bad route: {value!r}")


def parse(line: str) -> Announcement:
    """Read the server's line; reject anything that is not a well-formed description."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TunhelperError(
            f"the server did not describe the link (it said {line[:80]!r}); "
            "it may run an older tunhelper: connect with 'ssh -w any' and configure by hand"
        )
    if data.get("version") != VERSION:
        raise TunhelperError(
            f"the server speaks announcement version {data.get('version')!r}, this client "
            f"{VERSION}: upgrade the older side"
        )
    mode, prefix, mtu = data.get("mode"), data.get("prefix"), data.get("mtu")
    if mode not in MODES:
        raise TunhelperError(f"the server announced an unknown mode: {mode!r}")
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
        raise TunhelperError(f"the server announced a bad MTU: {mtu!r}")
    routes, dns = data.get("routes", []), data.get("dns", [])
    if not isinstance(routes, list) or not isinstance(dns, list):
        raise TunhelperError("the server announced routes or DNS that are not lists")
    gateway, address = data.get("gateway"), data.get("address")
    version = family.of(address) if isinstance(address, str) else 4
    dual = data.get("address6") is not None
    if dual and version == 6:
        raise TunhelperError("the server announced two IPv6 addresses and no IPv4 one")
    if (dual or version == 6) and mtu < 1280:
        raise TunhelperError(f"the server announced an MTU too small for IPv6: {mtu!r}")
    prefix = _prefix(prefix, version)
    return Announcement(
        address=_ip(address, "address", version),
        prefix=prefix,
        gateway=None if gateway is None and mode == "tap" else _ip(gateway, "gateway", version),
        mode=mode,
        mtu=mtu,
        routes=[_network(r) for r in routes],
        dns=[_ip(d, "DNS server", family.of(d) if isinstance(d, str) else 4) for d in dns],
        address6=_ip(data["address6"], "IPv6 address", 6) if dual else None,
        prefix6=_prefix(data.get("prefix6"), 6, "IPv6 prefix") if dual else None,
        gateway6=_ip(data.get("gateway6"), "IPv6 gateway", 6) if dual else None,
    )
