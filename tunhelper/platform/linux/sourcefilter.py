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
- tap: frames from one source MAC, pinned to the first one the port sends that no
  other port has pinned (the table-wide set ``macs``), so a client can neither change
  its MAC nor take another client's; ARP whose sender is that MAC and the IPv4 lease
  (or 0.0.0.0, a probe); the same IP sources as on tun; IPv6 from one link-local
  address, pinned the same way (``linklocals``; never the gateway's), and from the
  unspecified address for neighbour discovery; neighbour advertisements only for the
  port's own IPv6 lease or pinned link-local; never router advertisements or
  redirects.

A port's pins leave the table-wide sets with its chain: at teardown, in ``tunhelper
repair``, and (for chains whose device is gone) when the next tap port is guarded,
so a client back after a SIGKILL on the gateway gets its MAC again.

The rules are loaded in one transaction (:mod:`nft`: libnftables in this process).
"""

from __future__ import annotations

import contextlib
import ipaddress

from tunhelper.platform.base import DeviceInfo
from tunhelper.platform.linux import nft
from tunhelper.platform.linux.proc import ifindex, valid_ifname

TABLE = "tunhelper"
_NA = "icmpv6 type nd-neighbor-advert"
MACS, LINK_LOCALS = "macs", "linklocals"  # every tap port's pinned MAC and link-local
# The IPv6 source as a raw 128-bit field, so that one set can hold it and be compared
# with a neighbour advertisement's target (@th,64,128); nft types ``ip6 saddr`` apart.
_SRC6 = "@nh,64,128"
_TARGET = "@th,64,128"
_TARGET_IS_LINK_LOCAL = "@th,64,16 & 0xffc0 == 0xfe80"


def nft_missing() -> str | None:
    """What doctor says when source validation cannot be loaded here, else None."""
    if nft.in_process():
        return None
    try:
        nft.nft_path()
    except OSError as e:
        return f"{e.strerror}: every session is refused until it is"
    return None


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
        lines += _tap_rules(chain, v6, gateway_link_local)
    lines += [f"{head} ip saddr {n} accept" for n in v4]
    lines += [f"{head} ip6 saddr {n} accept" for n in v6]
    if device.mode == "tap":
        lines += [f"{head} arp saddr ip {n} accept" for n in v4 if n.prefixlen == 32]
        lines.append(f"{head} arp saddr ip 0.0.0.0 accept")  # a probe claims nothing
        if v6:
            lines.append(f"{head} ip6 saddr fe80::/10 accept")  # the pinned one, by now
            lines.append(f"{head} ip6 saddr :: meta l4proto ipv6-icmp accept")  # DAD, MLD
    lines.append(f"{head} drop")
    return "".join(f"{line}\n" for line in lines)


def _tap_rules(
    chain: str, v6: list[ipaddress.IPv6Network], gateway: list[ipaddress.IPv6Address]
) -> list[str]:
    """Pin the port's MAC and link-local (each unique among ports), police ARP and ND."""
    head = f"add rule netdev {TABLE} {chain}"
    ll, link_local = f"{chain}_ll", "ip6 saddr fe80::/10"
    leases = [_hex(n.network_address) for n in v6 if n.prefixlen == 128]
    lines = [
        f"add set netdev {TABLE} {MACS} {{ type ether_addr; flags dynamic; }}",
        f"add set netdev {TABLE} {LINK_LOCALS} {{ typeof {_SRC6}; flags dynamic; }}",
        f"add set netdev {TABLE} {chain} {{ type ether_addr; size 1; flags dynamic; }}",
        f"add set netdev {TABLE} {ll} {{ typeof {_SRC6}; size 1; flags dynamic; }}",
        # The first MAC seen that no other port holds, then only it; ARP says the same.
        # Sets are written only until the pin is made (an add to the full set of size
        # 1 ends the rule, so a refused MAC never reaches the shared set); after that
        # a frame costs lookups only.
        f"{head} ether saddr != @{chain} ether saddr @{MACS} drop",
        f"{head} ether saddr != @{chain} add @{chain} {{ ether saddr }} "
        f"add @{MACS} {{ ether saddr }}",
        f"{head} ether saddr != @{chain} drop",
        f"{head} arp saddr ether != @{chain} drop",
        f"{head} icmpv6 type {{ nd-router-advert, nd-redirect }} drop",  # the gateway's
    ]
    if gateway:
        listed = ", ".join(str(a) for a in gateway)
        lines.append(f"{head} ip6 saddr {{ {listed} }} drop")
    lines += [  # one link-local, pinned the same way
        f"{head} {link_local} {_SRC6} != @{ll} {_SRC6} @{LINK_LOCALS} drop",
        f"{head} {link_local} {_SRC6} != @{ll} add @{ll} {{ {_SRC6} }} "
        f"add @{LINK_LOCALS} {{ {_SRC6} }}",
        f"{head} {link_local} {_SRC6} != @{ll} drop",
        # Advertisements only for its own addresses: its pinned link-local, its lease.
        f"{head} {_NA} {_TARGET_IS_LINK_LOCAL} {_TARGET} != @{ll} drop",
    ]
    global_target = _TARGET_IS_LINK_LOCAL.replace("==", "!=")
    if leases:
        lines.append(f"{head} {_NA} {global_target} {_TARGET} != {{ {', '.join(leases)} }} drop")
    else:
        lines.append(f"{head} {_NA} {global_target} drop")
    return lines


def guard_link(device: DeviceInfo, sources: list[str], gateway_link: str | None) -> None:
    """Let ``device`` accept only ``sources`` (addresses or networks) as senders.

    ``gateway_link``: on tap, the bridge whose link-local addresses no client may claim.
    Raises OSError when the filter cannot be installed: the caller refuses the session.
    """
    if not valid_ifname(device.name) or (gateway_link and not valid_ifname(gateway_link)):
        raise ValueError(f"bad interface name {device.name!r}")
    protected = _link_local(gateway_link) if gateway_link else []
    if device.mode == "tap":
        _release_stale_pins()
    nft.run(guard_script(device, sources, protected))


def unguard_link(device: DeviceInfo) -> None:
    """Remove the device's chain, its pin sets and its pins, by the chain's recorded
    name: the cost of one session's teardown does not grow with the table. A chain
    that was recorded but never created (a signal before ``nft`` ran), or is already
    gone, is fine."""
    if not valid_ifname(device.name):
        raise ValueError(f"bad interface name {device.name!r}")
    chain = chain_name(device)
    with contextlib.suppress(FileNotFoundError):  # not there: never created, or gone
        nft.run(f"delete chain netdev {TABLE} {chain}\n")
    if device.mode != "tap":
        return
    for attempt in (1, 2):  # another port freeing stale pins may race us: look again
        pins = _own_pins(chain)
        if not pins:
            return
        try:
            nft.run("".join(f"{line}\n" for line in pins))
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def _own_pins(chain: str) -> list[str]:
    """The commands that delete ``chain``'s pin sets and their pins in the shared sets,
    from a listing of those two small sets only."""
    import json

    script = []
    for own, shared in ((chain, MACS), (f"{chain}_ll", LINK_LOCALS)):
        try:
            listed = json.loads(nft.query(f"list set netdev {TABLE} {own}"))
        except FileNotFoundError:
            continue
        except ValueError:
            listed = {}
        sets = [i["set"] for i in listed.get("nftables", []) if "set" in i]
        pinned = [str(e) for s in sets for e in s.get("elem", []) if not isinstance(e, dict)]
        script.append(f"delete set netdev {TABLE} {own}")
        if pinned:  # our own pins: the shared set holds them, as only this port added them
            script.insert(0, f"delete element netdev {TABLE} {shared} {{ {', '.join(pinned)} }}")
    return script


class _Table:
    """One listing of our table: chains, and each set's elements."""

    def __init__(self) -> None:
        import json

        try:
            listed = json.loads(nft.query(f"list table netdev {TABLE}"))
        except (OSError, ValueError):
            listed = {}
        items = listed.get("nftables", [])
        self.chains = [i["chain"]["name"] for i in items if "chain" in i]
        self.sets = {
            i["set"]["name"]: [str(e) for e in i["set"].get("elem", []) if not isinstance(e, dict)]
            for i in items
            if "set" in i
        }

    def removal(self, chain: str) -> list[str]:
        """The commands that remove ``chain``, its sets, and its pins from the shared sets."""
        script = [f"delete chain netdev {TABLE} {chain}"] if chain in self.chains else []
        return script + self.unpinning(chain, f"delete set netdev {TABLE}")

    def unpinning(self, chain: str, verb: str = f"flush set netdev {TABLE}") -> list[str]:
        """``verb`` on each of the chain's pin sets, and its pins out of the shared sets."""
        script = []
        for own, shared in ((chain, MACS), (f"{chain}_ll", LINK_LOCALS)):
            if own not in self.sets:
                continue
            script.append(f"{verb} {own}")
            pinned = [e for e in self.sets[own] if e in self.sets.get(shared, [])]
            if pinned:
                script.append(f"delete element netdev {TABLE} {shared} {{ {', '.join(pinned)} }}")
        return script


def _remove(chains: list[str]) -> None:
    """Remove chains and what they pinned, in one transaction; retried once, since a
    port pinning its MAC or another helper's removal may change the table meanwhile."""
    for attempt in (1, 2):
        table = _Table()
        script = [line for chain in chains for line in table.removal(chain)]
        if not script:
            return
        try:
            nft.run("".join(f"{line}\n" for line in script))
            return
        except OSError:
            if attempt == 2 and any(c in _Table().chains for c in chains):
                raise  # only a chain still there is a failure


def _live(chain: str) -> bool:
    """Whether the chain's device is still the one it was made for (name and index)."""
    name, _, index = chain.rpartition("_")
    return str(ifindex(name)) == index


def stale_guards() -> list[str]:
    """Chains whose device is gone or is now another device: what doctor reports."""
    return sorted(c for c in _Table().chains if not _live(c))


def _release_stale_pins() -> None:
    """Free what dead ports pinned, so that their clients' MACs and link-locals can be
    pinned again (the chains stay for doctor and repair). Best effort: a session that
    races us frees the same pins."""
    table = _Table()
    script = [line for c in table.chains if not _live(c) for line in table.unpinning(c)]
    if script:
        with contextlib.suppress(OSError):
            nft.run("".join(f"{line}\n" for line in script))


def remove_stale_guards() -> list[str]:
    """``tunhelper repair``: remove every stale chain and its pins; return their names."""
    stale = stale_guards()
    if stale:
        _remove(stale)
    return stale
