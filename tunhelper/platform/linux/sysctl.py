"""Kernel settings per device: strict reverse-path filtering on a session's tun."""

from __future__ import annotations

from tunhelper.platform.base import DeviceInfo
from tunhelper.platform.linux.proc import valid_ifname

IPV4_CONF = "/proc/sys/net/ipv4/conf"


def strict_rp_filter(device: DeviceInfo) -> None:
    """Drop packets arriving on ``device`` from addresses not routed through it.

    Strict reverse-path filtering: a session's tun is routed only its client's /32, so
    a client cannot send packets in another client's name. The kernel applies the
    larger of this and ``conf/all/rp_filter``: a loose (2) ``all`` overrides it
    (``tunhelper doctor`` says so, see :mod:`.checks`). The setting goes with the device.
    """
    if not valid_ifname(device.name):
        raise ValueError(f"bad interface name {device.name!r}")
    with open(f"{IPV4_CONF}/{device.name}/rp_filter", "w", encoding="ascii") as f:
        f.write("1\n")
