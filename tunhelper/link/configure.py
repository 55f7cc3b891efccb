"""Put the session's addresses on its device, and take them off again.

Each ``apply`` returns an undo record, so that every path out of a session,
including a failure half-way, removes exactly what was applied:

- tun, either end: a point-to-point address (local, peer/32), MTU, up;
- tap, server: the tap becomes a port of the pool's bridge (see :mod:`bridge`);
- tap, client: its address with the pool's prefix (each family's), MTU, up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tunhelper import family, log, platform, statedir
from tunhelper.defaults import IPV6_MIN_MTU, MAX_MTU
from tunhelper.errors import TunhelperError
from tunhelper.link import bridge
from tunhelper.platform import DeviceInfo

if TYPE_CHECKING:
    from tunhelper.protocol import Announcement


def choose_mtu(
    mode: str, requested: int | None, plan: bridge.BridgePlan, ipv6: bool = False
) -> int:
    """The link's MTU: ``--mtu`` if it fits the channel, else the most the channel carries.

    A link with an IPv6 pool needs at least 1280: below it the kernel drops IPv6 from
    the device, so a smaller ``--mtu`` is refused rather than silently breaking IPv6.

    On an admin's bridge that is smaller, a tap would have its large frames dropped by
    the bridge: the default follows the bridge (and says so), an explicit larger
    ``--mtu`` is refused.
    """
    limit = MAX_MTU[mode]
    if requested is not None and requested > limit:
        raise TunhelperError(
            f"--mtu {requested} is above what an ssh {mode} channel carries ({limit}); "
            "lower it in authorized_keys"
        )
    if ipv6 and requested is not None and requested < IPV6_MIN_MTU:
        raise TunhelperError(
            f"--mtu {requested} is below {IPV6_MIN_MTU}, the least a link carrying IPv6 "
            f"may have; raise --mtu to {IPV6_MIN_MTU} or more for an IPv6 --pool"
        )
    mtu = limit if requested is None else requested
    if mode == "tap":
        ceiling = bridge.mtu_ceiling(plan)
        if ceiling is not None and ceiling < mtu:
            if requested is not None:
                raise TunhelperError(
                    f"--mtu {requested} is above the MTU of bridge {plan.name} ({ceiling}): "
                    "lower --mtu or raise the bridge's MTU"
                )
            log.warning(
                f"bridge {plan.name} has MTU {ceiling}, below the {limit} a tap channel "
                f"carries: using {ceiling}; raise the bridge's MTU for faster tap links"
            )
            mtu = ceiling
    return mtu


class Applied(Protocol):
    device: DeviceInfo

    def undo(self) -> None: ...


@dataclass(frozen=True)
class PointToPoint:
    device: DeviceInfo
    local: str
    peer: str

    def undo(self) -> None:
        platform.deconfigure_p2p(self.device, self.local, self.peer)


@dataclass(frozen=True)
class BridgePort:
    device: DeviceInfo
    plan: bridge.BridgePlan
    state_dir: str

    def undo(self) -> None:
        bridge.leave(self.device, self.plan, self.state_dir)


@dataclass(frozen=True)
class PrefixAddress:
    device: DeviceInfo
    address: str
    prefixlen: int

    def undo(self) -> None:
        platform.deconfigure_address(self.device, self.address, self.prefixlen)


@dataclass(frozen=True)
class Routes:
    device: DeviceInfo
    networks: tuple[str, ...]
    via: str | None

    def undo(self) -> None:
        for network in self.networks:
            platform.delete_route(self.device, network, self.via)


def _applying(applied: Applied, step, *args) -> Applied:
    try:
        step(*args)
    except TunhelperError:
        applied.undo()
        raise
    except Exception as e:
        applied.undo()  # part of it may be on while a later step failed
        raise TunhelperError(f"could not configure {applied.device.name}: {e}") from e
    return applied


def point_to_point(device: DeviceInfo, local: str, peer: str, mtu: int) -> Applied:
    """``local``, ``peer``/32, MTU, up (the server's local is the gateway)."""
    return _applying(
        PointToPoint(device, local, peer), platform.configure_p2p, device, local, peer, mtu
    )


def bridge_port(device: DeviceInfo, plan: bridge.BridgePlan, mtu: int, state_dir: str) -> Applied:
    """The server end of a tap session: a port of the pool's bridge."""
    return _applying(BridgePort(device, plan, state_dir), bridge.join, device, plan, mtu, state_dir)


def client_networks(
    device: DeviceInfo,
    networks: list[str],
    state_dir: str,
    sessions: Collection[str] | None = None,
) -> Applied:
    """Route the networks behind a client to its tun, unless another live session has them.

    The kernel's routing table is the record: tunhelper's routes carry its own protocol
    number and vanish with their session's device. Checking and adding happen under a
    lock, so two sessions cannot both claim one network. Tun only: the device alone
    says where, for either family. ``sessions``: the devices of the store's live
    sessions; a route through any other device (``tunhelper connect`` on this same
    host installs its routes with the same protocol number) is not another session's.
    """
    from tunhelper.pool import overlap

    with statedir.held(state_dir, "routes"):
        for network in networks:
            for other, other_device in platform.our_routes():
                if sessions is not None and other_device not in sessions:
                    continue  # a client's route on this host, not a session's
                if overlap(network, other):
                    raise TunhelperError(
                        f"--client-net {network} overlaps {other}, routed to another live "
                        f"session ({other_device}); give each client its own networks"
                    )
        return routes(device, networks, None)


def routes_by_family(device: DeviceInfo, networks: list[str], via: dict[int, str]) -> list[Applied]:
    """:func:`routes`, one record per IP version, each through that version's ``via``.

    One record per version keeps the record a single ``via``, as a keeper started by an
    older helper expects. Routes already added are removed if a later one fails.
    """
    families: dict[int, list[str]] = {}
    for network in networks:
        families.setdefault(family.of(network), []).append(network)
    applied: list[Applied] = []
    try:
        for version, nets in families.items():
            applied.append(routes(device, nets, via.get(version)))
    except BaseException:
        for done in reversed(applied):
            done.undo()
        raise
    return applied


def routes(device: DeviceInfo, networks: list[str], via: str | None) -> Applied:
    """Routes to ``networks`` through the device (the client's announced routes, too)."""
    return _applying(Routes(device, tuple(networks), via), _add_routes, device, networks, via)


def _add_routes(device: DeviceInfo, networks: list[str], via: str | None) -> None:
    for network in networks:
        platform.add_route(device, network, via)


def apply_local(device: DeviceInfo, ann: Announcement) -> Applied:
    """The client's end, from the server's announcement."""
    if ann.mode != device.mode:
        raise TunhelperError(
            f"the server announced a {ann.mode} link but ssh opened {device.name}, "
            f"a {device.mode} device"
        )
    return _local_end(device, ann, ann.address, ann.prefix, ann.gateway, "a gateway")


def apply_local6(device: DeviceInfo, ann: Announcement) -> Applied:
    """The client's IPv6 end of a dual-stack link: point-to-point on tun, address6 with
    the IPv6 prefix on tap (after :func:`apply_local`, which checked the mode)."""
    if ann.address6 is None or ann.prefix6 is None:
        raise TunhelperError("the server announced no IPv6 address")
    return _local_end(device, ann, ann.address6, ann.prefix6, ann.gateway6, "an IPv6 gateway")


def _local_end(
    device: DeviceInfo, ann: Announcement, address: str, prefix: int, gateway: str | None, what: str
) -> Applied:
    """tap: the address with the segment's prefix; tun: point-to-point with the gateway."""
    if ann.mode == "tap":
        return _applying(
            PrefixAddress(device, address, prefix),
            platform.configure_address,
            device,
            address,
            prefix,
            ann.mtu,
        )
    if gateway is None:
        raise TunhelperError(f"the server announced a tun link without {what}")
    return point_to_point(device, address, gateway, ann.mtu)


def undo(applied: Applied) -> None:
    applied.undo()


_KINDS: dict[str, type] = {
    "p2p": PointToPoint,
    "bridge": BridgePort,
    "prefix": PrefixAddress,
    "routes": Routes,
}


def to_record(applied: Applied) -> dict[str, Any]:
    """A JSON-able form, so another process (the keeper) can undo it."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(applied, cls))
    record = asdict(applied)  # type: ignore[call-overload]
    return {"kind": kind, **record, "device": applied.device._asdict()}


def from_record(record: dict[str, Any]) -> Applied:
    fields = dict(record)
    cls = _KINDS[fields.pop("kind")]
    fields["device"] = DeviceInfo(**fields["device"])
    if "plan" in fields:
        fields["plan"] = bridge.BridgePlan(**fields["plan"])
    if "networks" in fields:
        fields["networks"] = tuple(fields["networks"])
    return cls(**fields)
