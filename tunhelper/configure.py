"""Put the session's addresses on its device, and take them off again.

Each ``apply`` returns an undo record, so that every path out of a session,
including a failure half-way, removes exactly what was applied:

- tun, either end: a point-to-point address (local, peer/32), MTU, up;
- tap, server: the tap becomes a port of the pool's bridge (see :mod:`bridge`);
- tap, client: its address with the pool's prefix, MTU, up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tunhelper import bridge, log, platform
from tunhelper.announce import Announcement
from tunhelper.errors import TunhelperError
from tunhelper.platform import DeviceInfo

# The most one packet of each kind an OpenSSH channel carries: sshd and ssh read a
# tun/tap packet into a 16 KiB buffer (CHAN_RBUF), and a tun packet also carries a
# 4-byte address family in the channel, a tap frame its 14-byte Ethernet header.
# One byte more and every full-size packet is silently dropped. Per-packet cost
# dominates the tunnel's throughput, so the default is the largest that works.
MAX_MTU = {"tun": 16380, "tap": 16370}


def choose_mtu(mode: str, requested: int | None, plan: bridge.BridgePlan) -> int:
    """The link's MTU: ``--mtu`` if it fits the channel, else the most the channel carries.

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


def apply_local(device: DeviceInfo, ann: Announcement) -> Applied:
    """The client's end, from the server's announcement."""
    if ann.mode != device.mode:
        raise TunhelperError(
            f"the server announced a {ann.mode} link but ssh opened {device.name}, "
            f"a {device.mode} device"
        )
    if ann.mode == "tap":
        return _applying(
            PrefixAddress(device, ann.address, ann.prefix),
            platform.configure_address,
            device,
            ann.address,
            ann.prefix,
            ann.mtu,
        )
    if ann.gateway is None:
        raise TunhelperError("the server announced a tun link without a gateway")
    return point_to_point(device, ann.address, ann.gateway, ann.mtu)


def undo(applied: Applied) -> None:
    applied.undo()


_KINDS: dict[str, type] = {"p2p": PointToPoint, "bridge": BridgePort, "prefix": PrefixAddress}


def to_record(applied: Applied) -> dict[str, Any]:
    """A JSON-able form, so another process (the slim holder) can undo it."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(applied, cls))
    record = asdict(applied)  # type: ignore[call-overload]
    return {"kind": kind, **record, "device": applied.device._asdict()}


def from_record(record: dict[str, Any]) -> Applied:
    fields = dict(record)
    cls = _KINDS[fields.pop("kind")]
    fields["device"] = DeviceInfo(**fields["device"])
    if "plan" in fields:
        fields["plan"] = bridge.BridgePlan(**fields["plan"])
    return cls(**fields)
