"""The client's resolver: not managed on FreeBSD yet."""

from __future__ import annotations

from tunhelper.platform.base import DeviceInfo


def apply_dns(device: DeviceInfo, servers: list[str]) -> str | None:
    """Not done on FreeBSD yet: ``None`` makes connect say so."""
    return None


def revert_dns(device: DeviceInfo, tool: str) -> None:
    """Nothing to revert (see :func:`apply_dns`)."""
