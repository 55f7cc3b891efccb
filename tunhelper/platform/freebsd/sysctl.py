"""Kernel settings per device: strict reverse-path filtering, not done on FreeBSD yet."""

from __future__ import annotations

import errno

from tunhelper.platform.base import DeviceInfo, PlatformError


def strict_rp_filter(device: DeviceInfo) -> None:
    """Not done on FreeBSD yet (it would be a pf/ipfw rule, not a per-device switch):
    the session goes on and the admin is warned, as where /proc/sys is read-only."""
    raise PlatformError(errno.EOPNOTSUPP, "reverse-path filtering is not implemented on FreeBSD")
