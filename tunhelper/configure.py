"""Put the session's addresses on its device, and take them off again.

Returns an undo record so that every path out of a session, including a failure
half-way, removes exactly what was applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunhelper import platform
from tunhelper.announce import Announcement
from tunhelper.errors import TunhelperError
from tunhelper.platform import DeviceInfo


@dataclass(frozen=True)
class Applied:
    device: DeviceInfo
    local: str
    peer: str


def check_supported(device: DeviceInfo) -> None:
    """Refuse, before anything is leased, a device this server cannot configure."""
    if device.mode != "tun":
        raise TunhelperError(
            f"{device.name} is a tap (ethernet) device; this server serves tun only for now: "
            "connect without -o Tunnel=ethernet"
        )


def apply(device: DeviceInfo, local: str, peer: str, mtu: int) -> Applied:
    """Point-to-point: ``local``, ``peer``/32, MTU, up (the server's local is the gateway)."""
    applied = Applied(device, local, peer)
    try:
        platform.configure_p2p(device, local, peer, mtu)
    except Exception as e:
        undo(applied)  # the address may be on while the link step failed
        raise TunhelperError(f"could not configure {device.name}: {e}") from e
    return applied


def apply_local(device: DeviceInfo, ann: Announcement) -> Applied:
    """The client's end: local = its address, peer = the gateway, the announced MTU."""
    if ann.mode != device.mode:
        raise TunhelperError(
            f"the server announced a {ann.mode} link but ssh opened {device.name}, "
            f"a {device.mode} device"
        )
    check_supported(device)
    return apply(device, ann.address, ann.gateway, ann.mtu)


def undo(applied: Applied) -> None:
    platform.deconfigure_p2p(applied.device, applied.local, applied.peer)
