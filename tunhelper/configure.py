"""Put the session's addresses on its device, and take them off again.

Returns an undo record so that every path out of a session, including a failure
half-way, removes exactly what was applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunhelper import platform
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


def apply(device: DeviceInfo, gateway: str, client: str, mtu: int | None) -> Applied:
    """Point-to-point: local = gateway, peer = client/32, MTU, up."""
    applied = Applied(device, gateway, client)
    try:
        platform.configure_p2p(device, gateway, client, mtu)
    except Exception as e:
        undo(applied)  # the address may be on while the link step failed
        raise TunhelperError(f"could not configure {device.name}: {e}") from e
    return applied


def undo(applied: Applied) -> None:
    platform.deconfigure_p2p(applied.device, applied.local, applied.peer)
