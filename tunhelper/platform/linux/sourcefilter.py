"""Per-session source validation: an nftables ``netdev`` ingress chain on the device.

Everything a client sends reaches the gateway through its session's tun or tap, so
the check sits on that device's ingress, before routing or bridging: a chain of the
``netdev tunhelper`` table that accepts only what that client may send and drops the
rest. tc could hold it bound to the device, but this kernel family's tc often lacks
the flower classifier and the gact action; nftables is always there with the kernel.

A netdev chain outlives its device (verified on 6.18: it stays listed, and attaches
again to a new device of the same name). So its first rule compares the interface
index, which a new device never shares: a chain left by a helper killed with SIGKILL
(keeper and all) matches nothing on any later device. It is removed by the session's
teardown, by ``tunhelper repair`` (:func:`remove_stale_guards`), and ``tunhelper
doctor`` lists any left over (:func:`stale_guards`).

What passes (``docs/security.md``, "Source validation"):

- tun: IPv4/IPv6 packets whose source is one of the session's addresses or inside
  one of its ``--client-net`` networks;
- tap: frames from one source MAC, pinned to the first frame the port sends; the same
  sources for IP; ARP whose sender is the IPv4 lease (or 0.0.0.0, a probe); IPv6 from
  the link-local and unspecified addresses neighbour discovery needs; neighbour
  advertisements only for the IPv6 lease or a link-local target other than the
  gateway's own; never router advertisements or redirects.

The rules are loaded by ``nft -f -`` in one transaction: one short process per session.
"""

from __future__ import annotations

import ipaddress
import os

from tunhelper.platform.base import DeviceInfo
from tunhelper.platform.linux.proc import valid_ifname

TABLE = "tunhelper"
_NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft")
_TIMEOUT = 10.0
_NA = "icmpv6 type nd-neighbor-advert"


def _nft() -> str:
    """nft from fixed places only (never a PATH that a client could influence)."""
    for path in _NFT_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(2, "nft (nftables) is not installed: needed for source filtering")


def nft_missing() -> str | None:
    """What doctor says when source validation cannot be loaded here, else None."""
    try:
        _nft()
    except OSError as e:
        return f"{e.strerror}: every session is refused until it is"
    return None


def _run(script: str, *argv: str) -> str:
    import subprocess

    try:
        result = subprocess.run(
            [_nft(), *argv], input=script, capture_output=True, text=True, timeout=_TIMEOUT
        )
    except subprocess.TimeoutExpired as e:
        raise TimeoutError(62, "nft did not answer") from e
    if result.returncode != 0:
        why = next((x for x in result.stderr.splitlines() if "Error" in x), "failed").strip()
        raise OSError(22, f"nft: {why}")
    return result.stdout


def chain_name(device: DeviceInfo) -> str:
    """``tap3_17``: the device's name and index, so a stale chain is recognised."""
    return f"{device.name}_{device.index}"


def _hex(address: ipaddress.IPv6Address) -> str:
    return f"0x{address.packed.hex()}"


def _link_local(name: str) -> list[ipaddress.IPv6Address]:
    """The link-local addresses of ``name`` (the gateway's, on a bridge)."""
    found = []
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 6 and parts[5] == name:
                    address = ipaddress.IPv6Address(int(parts[0], 16))
                    if address.is_link_local:
                        found.append(address)
    except OSError:
        pass
    return found


def guard_script(
    device: DeviceInfo, sources: list[str], gateway_link_local: list[ipaddress.IPv6Address]
) -> str:
    """The nft script for one device: pure, so the rule set can be read and tested."""
    nets = [ipaddress.ip_network(s, strict=False) for s in sources]
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    chain = chain_name(device)
    head = f"add rule netdev {TABLE} {chain}"
    lines = [
        f"add table netdev {TABLE}",
        f'add chain netdev {TABLE} {chain} {{ type filter hook ingress device "{device.name}" '
        "priority -500; policy accept; }",
        f"{head} meta iif != {device.index} accept",  # a later device of the same name
    ]
    if device.mode == "tap":
        lines += [
            f"add set netdev {TABLE} {chain} {{ type ether_addr; size 1; flags dynamic; }}",
            f"{head} add @{chain} {{ ether saddr }}",  # the first MAC seen, then only it
            f"{head} ether saddr != @{chain} drop",
            f"{head} icmpv6 type {{ nd-router-advert, nd-redirect }} drop",  # the gateway's
        ]
        lines += [f"{head} {_NA} @th,64,128 {_hex(a)} drop" for a in gateway_link_local]
        lines += [
            f"{head} {_NA} @th,64,128 {_hex(n.network_address)} accept"
            for n in v6
            if n.prefixlen == 128
        ]
        lines += [f"{head} {_NA} @th,64,16 & 0xffc0 == 0xfe80 accept", f"{head} {_NA} drop"]
    lines += [f"{head} ip saddr {n} accept" for n in v4]
    lines += [f"{head} ip6 saddr {n} accept" for n in v6]
    if device.mode == "tap":
        lines += [f"{head} arp saddr ip {n} accept" for n in v4 if n.prefixlen == 32]
        lines.append(f"{head} arp saddr ip 0.0.0.0 accept")  # a probe claims nothing
        if v6:
            lines.append(f"{head} ip6 saddr fe80::/10 accept")
            lines.append(f"{head} ip6 saddr :: meta l4proto ipv6-icmp accept")  # DAD, MLD
    lines.append(f"{head} drop")
    return "".join(f"{line}\n" for line in lines)


def guard_link(device: DeviceInfo, sources: list[str], gateway_link: str | None) -> None:
    """Let ``device`` accept only ``sources`` (addresses or networks) as senders.

    ``gateway_link``: on tap, the bridge whose link-local addresses no client may claim.
    Raises OSError when the filter cannot be installed: the caller refuses the session.
    """
    if not valid_ifname(device.name) or (gateway_link and not valid_ifname(gateway_link)):
        raise ValueError(f"bad interface name {device.name!r}")
    protected = _link_local(gateway_link) if gateway_link else []
    _run(guard_script(device, sources, protected), "-f", "-")


def unguard_link(device: DeviceInfo) -> None:
    """Remove the device's chain (and MAC set); one already gone is fine."""
    if not valid_ifname(device.name):
        raise ValueError(f"bad interface name {device.name!r}")
    _remove(chain_name(device), device.mode == "tap")


def _remove(chain: str, with_set: bool) -> None:
    script = f"delete chain netdev {TABLE} {chain}\n"
    if with_set:
        script += f"delete set netdev {TABLE} {chain}\n"
    try:
        _run(script, "-f", "-")
    except OSError:
        if chain in _chains():  # only a chain still there is a failure
            raise


def _chains() -> dict[str, bool]:
    """Our chains, each with whether it has a MAC set of the same name."""
    import json

    try:
        listed = json.loads(_run("", "-j", "list", "table", "netdev", TABLE))
    except (OSError, ValueError):
        return {}
    items = listed.get("nftables", [])
    sets = {i["set"]["name"] for i in items if "set" in i}
    return {i["chain"]["name"]: i["chain"]["name"] in sets for i in items if "chain" in i}


def stale_guards() -> list[str]:
    """Chains whose device is gone or is now another device: what doctor reports."""
    stale = []
    for chain in _chains():
        name, _, index = chain.rpartition("_")
        try:
            with open(f"/sys/class/net/{name}/ifindex", encoding="ascii") as f:
                live = f.read().strip() == index
        except OSError:
            live = False
        if not live:
            stale.append(chain)
    return sorted(stale)


def remove_stale_guards() -> list[str]:
    """``tunhelper repair``: remove every stale chain; return their names."""
    chains = _chains()
    stale = stale_guards()
    for chain in stale:
        _remove(chain, chains.get(chain, False))
    return stale
