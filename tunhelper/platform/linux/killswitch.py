"""The kill-switch as one nftables table, replaced whole in one transaction.

:func:`script` renders a :class:`~tunhelper.platform.clientbase.Passes` (decided by
:mod:`tunhelper.client.policy`) into an ``nft -f`` script that creates the table if
it is missing, flushes its rules and writes the new ones: nftables applies a script
as one transaction, so there is never a moment with no policy or with two, and the
table is never deleted on the way (a restarted connect takes it over this way too).

Three base chains, each ``policy drop``: output (this host), input (replies and
anything sent to it) and forward (containers, VMs or a hotspot behind the host).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from tunhelper.platform.clientbase import Passes, Record

_NFT_TIMEOUT = 10
_NDP_OUT = "nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report"
_NDP_IN = "nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"


def _ip(address: str) -> str:
    return "ip6" if ipaddress.ip_network(address, strict=False).version == 6 else "ip"


def _quoted(device: str) -> str:
    if not device or not all(c.isalnum() or c in "_.-" for c in device):
        raise ValueError(f"not a device name: {device!r}")
    return f'"{device}"'


def _always(direction: str) -> list[str]:
    """Loopback, DHCPv4/DHCPv6 and neighbour discovery (only link-local: hop limit 255)."""
    lo = "oifname" if direction == "out" else "iifname"
    if direction == "out":
        dhcp = ["udp sport 68 udp dport 67 accept", "udp sport 546 udp dport 547 accept"]
        ndp = f"icmpv6 type {{ {_NDP_OUT} }} ip6 hoplimit 255 accept"
    else:
        dhcp = ["udp sport 67 udp dport 68 accept", "udp sport 547 udp dport 546 accept"]
        ndp = f"icmpv6 type {{ {_NDP_IN} }} ip6 hoplimit 255 accept"
    return [f'{lo} "lo" accept', *dhcp, ndp]


def _chain_rules(passes: Passes, direction: str) -> list[str]:
    rules = _always(direction)
    where, port = ("daddr", "dport") if direction == "out" else ("saddr", "sport")
    if passes.device is not None:
        rules.append(
            f"{'oifname' if direction == 'out' else 'iifname'} {_quoted(passes.device)} accept"
        )
    for address, number in passes.peers:
        ipaddress.ip_address(address)  # never text of someone else's making in the script
        rules.append(f"{_ip(address)} {where} {address} tcp {port} {int(number)} accept")
    if passes.lan and direction == "out" and not passes.dns_outside:
        rules += ["udp dport 53 drop", "tcp dport 53 drop"]
    for network in passes.lan:
        rules.append(f"{_ip(network)} {where} {ipaddress.ip_network(network)} accept")
    return rules


def _forward_rules(passes: Passes) -> list[str]:
    rules = []
    if passes.device is not None:
        device = _quoted(passes.device)
        rules += [f"oifname {device} accept", f"iifname {device} accept"]
    for network in passes.lan:
        net = ipaddress.ip_network(network)
        rules.append(f"{_ip(network)} saddr {net} {_ip(network)} daddr {net} accept")
    return rules


def script(table: str, passes: Passes) -> str:
    """The ``nft -f`` text that replaces ``table``'s content with ``passes``."""
    chains = {
        "input": _chain_rules(passes, "in"),
        "output": _chain_rules(passes, "out"),
        "forward": _forward_rules(passes),
    }
    lines = [f"table inet {table} {{}}", f"flush table inet {table}", f"table inet {table} {{"]
    for name, rules in chains.items():
        lines.append(f"  chain {name} {{")
        lines.append(f"    type filter hook {name} priority 0; policy drop;")
        lines += [f"    {rule}" for rule in rules]
        lines += ["    counter drop", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def firewall(table: str, passes: Passes | None) -> Record:
    """Apply ``passes`` to ``table`` in one transaction (``None``: delete the table)."""
    if passes is None:
        _nft(["delete", "table", "inet", table], check=False)
    else:
        _nft(["-f", "-"], stdin=script(table, passes))
    return {"kind": "nft", "table": table}


def available() -> bool:
    return shutil.which("nft") is not None


def _nft(args: list[str], stdin: str | None = None, check: bool = True) -> None:
    if not available():
        raise OSError("the kill-switch needs nftables (the nft command): apt install nftables")
    result = subprocess.run(
        ["nft", *args], input=stdin, capture_output=True, text=True, timeout=_NFT_TIMEOUT
    )
    if check and result.returncode != 0:
        raise OSError(f"nft failed: {result.stderr.strip() or result.returncode}")
