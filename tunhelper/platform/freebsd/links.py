"""Configuration through ifconfig and route(8): addresses, bridges and their ports,
routes, counters.

What FreeBSD does when sshd closes the device (``tundtor`` in if_tuntap.c): the
interface is brought down and its addresses purged, but it is *not* destroyed. It
persists (tun(4)), and the next ``open("/dev/tunN")``, possibly another session's at
once, reuses it. So teardown touches a device only while this helper's own session
still holds it (:func:`.proc.held_by_session`), and never destroys it;
docs/platforms.md says why.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections import namedtuple

from tunhelper.platform.base import DeviceInfo
from tunhelper.platform.freebsd import command
from tunhelper.platform.freebsd.command import (
    DEVICE_NAME,
    IFCONFIG,
    IFNAME,
    NETSTAT,
    ROUTE,
    CommandFailed,
    check,
    device_name,
    failure,
    ifname,
    ip,
    ipv4,
    refuse_ipv6,
)
from tunhelper.platform.freebsd.proc import held_by_session

# ---------------------------------------------------------------- ifconfig


InterfaceStatus = namedtuple("InterfaceStatus", ["name", "groups", "inet", "members"])
InterfaceStatus.__doc__ = """What tunhelper reads from ``ifconfig NAME``: its groups, local
IPv4 addresses (``inet``) and a bridge's member interfaces, each a tuple of strings."""


_STATUS_HEAD = re.compile(r"(?P<name>[^\s:]+): flags=[0-9a-f]+<[^>]*>.*")


def parse_ifconfig(text: str) -> InterfaceStatus | None:
    """The first interface in ``ifconfig`` output, or ``None`` if there is none."""
    lines = text.splitlines()
    head = _STATUS_HEAD.fullmatch(lines[0]) if lines else None
    if head is None:
        return None
    groups: list[str] = []
    inet: list[str] = []
    members: list[str] = []
    for line in lines[1:]:
        if not line.startswith("\t"):
            break  # the next interface
        words = line.split()
        if words[:1] == ["groups:"]:
            groups.extend(words[1:])
        elif words[:1] == ["inet"] and len(words) > 1:
            inet.append(words[1])
        elif words[:1] == ["member:"] and len(words) > 1:
            members.append(words[1])
    return InterfaceStatus(head["name"], tuple(groups), tuple(inet), tuple(members))


def interface_status(name: str) -> InterfaceStatus | None:
    """``ifconfig NAME``, parsed; ``None`` if there is no such interface."""
    result = command.runner([IFCONFIG, ifname(name)])
    if result.returncode != 0:
        return None
    status = parse_ifconfig(result.text)
    return status if status is not None and status.name == name else None


def if_index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def device_info(name: str) -> DeviceInfo | None:
    """Index and mode of a tun/tap interface; ``None`` if it is gone or not tun/tap.

    The mode comes from the interface group the cloner gave it ("tun" or "tap"), not
    from the name alone: an interface can be renamed to anything.
    """
    if not DEVICE_NAME.fullmatch(name):
        return None
    status = interface_status(name)
    if status is None:
        return None
    if "tap" in status.groups:
        mode = "tap"
    elif "tun" in status.groups:
        mode = "tun"
    else:
        return None
    index = if_index(name)
    if index is None:
        return None
    return DeviceInfo(name, index, mode)


def configure_p2p(device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
    """``ifconfig tunN inet LOCAL PEER netmask 255.255.255.255 mtu N up``.

    One command, as in the guide: ifconfig applies mtu and up while it parses and adds
    the address last, which also marks a tun running.
    """
    refuse_ipv6(local, peer)
    argv = [IFCONFIG, device_name(device), "inet", ipv4(local), ipv4(peer)]
    check([*argv, "netmask", "255.255.255.255", "mtu", str(int(mtu)), "up"])


def deconfigure_p2p(device: DeviceInfo, local: str, peer: str) -> None:
    """Undo :func:`configure_p2p` while the session still holds the device; else nothing.

    ``ifconfig tunN inet LOCAL -alias`` then ``ifconfig tunN down``: what the kernel
    itself does when sshd closes the device. Once sshd closed it, the kernel has done
    exactly that already, and the interface, which persists, may be another session's.
    ``peer`` is not needed: a point-to-point address is removed by its local address.
    An address that is not there (configure failed half-way) is not an error.
    """
    _remove_inet(device, ipv4(local))


def configure_address(device: DeviceInfo, address: str, prefixlen: int, mtu: int) -> None:
    """``ifconfig tapN inet ADDRESS/PREFIX mtu N up`` (the client end of a tap link)."""
    refuse_ipv6(address)
    cidr = f"{ipv4(address)}/{int(prefixlen)}"
    check([IFCONFIG, device_name(device), "inet", cidr, "mtu", str(int(mtu)), "up"])


def deconfigure_address(device: DeviceInfo, address: str, prefixlen: int) -> None:
    """Undo :func:`configure_address` while the session holds the device (see above)."""
    _remove_inet(device, ipv4(address))


def _remove_inet(device: DeviceInfo, local: str) -> None:
    """``ifconfig DEV inet LOCAL -alias; ifconfig DEV down`` while this session holds DEV."""
    name = device_name(device)
    if not held_by_session(name):
        return
    alias = [IFCONFIG, name, "inet", local, "-alias"]
    result = command.runner(alias)
    if result.returncode != 0:
        if not held_by_session(name):
            return  # sshd closed it meanwhile: the kernel did the rest
        status = interface_status(name)
        if status is None:
            return
        if local in status.inet:
            raise failure(alias, result)
    down = [IFCONFIG, name, "down"]
    result = command.runner(down)
    if result.returncode != 0 and held_by_session(name):
        raise failure(down, result)


# ---------------------------------------------------------------- tap on a bridge


def create_bridge(name: str, address: str | None, prefixlen: int, mtu: int) -> None:
    """``ifconfig bridge create``, renamed to NAME, with the gateway, the MTU and up."""
    refuse_ipv6(address)
    created = check([IFCONFIG, "bridge", "create"]).text.strip()
    if not IFNAME.fullmatch(created):
        raise CommandFailed(f"ifconfig bridge create printed {created!r}, not an interface name")
    check([IFCONFIG, created, "name", ifname(name)])
    argv = [IFCONFIG, name]
    if address is not None:
        argv += ["inet", f"{ipv4(address)}/{int(prefixlen)}"]
    check([*argv, "mtu", str(int(mtu)), "up"])


def add_address(name: str, address: str, prefixlen: int) -> None:
    """``ifconfig NAME inet ADDRESS/PREFIX alias``: a further gateway on a pool's bridge."""
    refuse_ipv6(address)
    check([IFCONFIG, ifname(name), "inet", f"{ipv4(address)}/{int(prefixlen)}", "alias"])


def bridge_ports(name: str) -> list[str] | None:
    """The bridge's member interfaces (``member:`` lines); ``None`` if there is no bridge."""
    status = interface_status(ifname(name))
    return None if status is None else list(status.members)


def add_port(device: DeviceInfo, bridge: str, mtu: int) -> None:
    """``ifconfig tapN mtu N``, ``ifconfig BRIDGE addm tapN up``, unless already a member.

    if_bridge(4): every member must have the bridge's MTU, so a pool's bridge and its
    taps share one, set on the tap before it joins.
    """
    if device.mode != "tap":
        raise ValueError(f"{device.name} is not a tap device")
    tap, bridge = device_name(device), ifname(bridge)
    if tap in (bridge_ports(bridge) or []):
        return
    check([IFCONFIG, tap, "mtu", str(int(mtu))])
    check([IFCONFIG, bridge, "addm", tap, "up"])


def remove_port(device: DeviceInfo, bridge: str) -> None:
    """``ifconfig BRIDGE deletem tapN`` while this session holds the tap; else nothing.

    After sshd closed the tap the kernel has brought it down and cleared RUNNING, and
    a bridge does not send to a member that is not running: the membership is inert
    until the next session that opens the tap, which owns it then.
    """
    tap, bridge = device_name(device), ifname(bridge)
    if not held_by_session(tap):
        return
    argv = [IFCONFIG, bridge, "deletem", tap]
    result = command.runner(argv)
    if result.returncode != 0 and held_by_session(tap):
        raise failure(argv, result)


def delete_bridge(name: str) -> None:
    """``ifconfig BRIDGE destroy``."""
    check([IFCONFIG, ifname(name), "destroy"])


# ---------------------------------------------------------------- routes
# Routes tunhelper installs carry RTF_PROTO1 (route(8) -proto1, flag "1" in netstat),
# so that its routes can be told from anyone else's.


def _route_family(network: str) -> tuple[str, list[str]]:
    """The network in canonical form and route(8)'s family flag (``-inet6`` for IPv6)."""
    net = ipaddress.ip_network(network)
    return str(net), (["-inet6"] if net.version == 6 else [])


def add_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """``route -n add [-inet6] -net NETWORK (VIA | -interface DEV) -proto1``."""
    net, family = _route_family(network)
    target = [ip(via)] if via is not None else ["-interface", device_name(device)]
    check([ROUTE, "-n", "add", *family, "-net", net, *target, "-proto1"])


def delete_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """Undo :func:`add_route`: ``route -n delete [-inet6] -net NETWORK (VIA | -interface
    DEV)``, only if our route (flag 1) to NETWORK through DEV (and VIA) is there.

    Never by the network alone: an admin's route to the same network is not ours. A
    route gone with its device is not an error.
    """
    net, family = _route_family(network)
    name = device_name(device)
    gateway = ip(via) if via is not None else None

    def present() -> bool:
        return any(
            (dst, netif) == (net, name) and (gateway is None or gw == gateway)
            for dst, gw, netif in _flagged_routes("inet6" if family else "inet")
        )

    if not present():
        return
    target = [gateway] if gateway is not None else ["-interface", name]
    argv = [ROUTE, "-n", "delete", *family, "-net", net, *target]
    result = command.runner(argv)
    if result.returncode != 0 and present():
        raise failure(argv, result)


def _flagged_routes(family: str) -> list[tuple[str, str, str]]:
    """``(network, gateway, device)`` of the routes flagged 1 (RTF_PROTO1) in
    ``netstat -rn -f FAMILY``."""
    host = 128 if family == "inet6" else 32
    out = []
    for line in check([NETSTAT, "-rn", "-f", family]).text.splitlines():
        fields = line.split()
        if len(fields) < 4 or "1" not in fields[2]:
            continue
        dst = re.sub(r"%[^/]*", "", fields[0])  # fe80::%lo0/64: the zone is no address
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/{host}", strict=False)
        except ValueError:
            continue  # a header, or "default": tunhelper never installs one
        out.append((str(net), re.sub(r"%.*", "", fields[1]), fields[3]))
    return out


def our_routes() -> list[tuple[str, str]]:
    """``(network, device)`` of the routes flagged 1 (RTF_PROTO1) in ``netstat -rn``, of
    both families (``-f inet``, ``-f inet6``)."""
    return [(net, dev) for family in ("inet", "inet6") for net, _, dev in _flagged_routes(family)]


def link_counters(device: DeviceInfo) -> tuple[int, int] | None:
    """Bytes ``(received, sent)`` now: a FreeBSD tun/tap persists, so its counters stay."""
    import psutil

    counters = psutil.net_io_counters(pernic=True).get(device.name)
    return None if counters is None else (counters.bytes_recv, counters.bytes_sent)
