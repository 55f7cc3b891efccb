"""The announcement: how the server tells the client its address, and how it is read.

A plain ``ssh -w any`` gets the bare address as its first line. ``tunhelper connect``
sends exactly :data:`REQUEST` as its remote command and gets one JSON line describing
the whole link instead. Nothing the client sends is ever executed; any other command
gets the plain line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

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

    def to_json(self) -> str:
        data: dict[str, Any] = {"version": VERSION, **asdict(self)}
        if not self.dns:
            del data["dns"]  # carried only when the admin set it
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


def _ipv4(value: object, what: str) -> str:
    import netaddr  # the client's parsing only: the server never pays for it here

    try:
        if isinstance(value, str) and netaddr.valid_ipv4(value, netaddr.INET_PTON):
            return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        pass
    raise TunhelperError(f"the server announced a bad {what}: {value!r}")


def _network(value: object) -> str:
    import netaddr

    try:
        if isinstance(value, str) and "/" in value:
            net = netaddr.IPNetwork(value)
            if net.version == 4 and str(net.cidr) == value:
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
    if not isinstance(prefix, int) or isinstance(prefix, bool) or not 0 < prefix <= 32:
        raise TunhelperError(f"the server announced a bad prefix: {prefix!r}")
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
        raise TunhelperError(f"the server announced a bad MTU: {mtu!r}")
    routes, dns = data.get("routes", []), data.get("dns", [])
    if not isinstance(routes, list) or not isinstance(dns, list):
        raise TunhelperError("the server announced routes or DNS that are not lists")
    gateway = data.get("gateway")
    return Announcement(
        address=_ipv4(data.get("address"), "address"),
        prefix=prefix,
        gateway=None if gateway is None and mode == "tap" else _ipv4(gateway, "gateway"),
        mode=mode,
        mtu=mtu,
        routes=[_network(r) for r in routes],
        dns=[_ipv4(d, "DNS server") for d in dns],
    )
