"""Per-session source validation: not done on FreeBSD (it would be pf/ipfw rules per
interface), and declared so in the backend's capabilities."""

from __future__ import annotations

import errno

from tunhelper.platform.base import DeviceInfo, PlatformError


def guard_link(device: DeviceInfo, sources: list[str], gateway_link: str | None) -> None:
    """Not done on FreeBSD (it would be pf/ipfw rules per interface): refused with
    EOPNOTSUPP, so the session goes on with a warning, as with :func:`.sysctl.strict_rp_filter`."""
    raise PlatformError(errno.EOPNOTSUPP, "source validation is not implemented on FreeBSD")


def unguard_link(device: DeviceInfo) -> None:
    """Nothing to remove: :func:`guard_link` never installs anything here."""


def stale_guards() -> list[str]:
    """None can exist (see :func:`guard_link`)."""
    return []


def remove_stale_guards() -> list[str]:
    """None can exist (see :func:`guard_link`)."""
    return []
