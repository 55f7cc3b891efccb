"""Plain data shared by every platform module."""

from __future__ import annotations

from dataclasses import dataclass

# Why ``wait_for_end`` returned.
PROCESS_ENDED = "process"  # the process holding the device exited
DEVICE_GONE = "device"  # the device was deleted


@dataclass(frozen=True)
class DeviceInfo:
    """A tun/tap device as the kernel reports it now.

    ``index`` is kept because names are reused: when a session's tun0 goes away the
    next session may get a new tun0, and only the index tells them apart.
    """

    name: str
    index: int
    mode: str  # "tun" (layer 3) or "tap" (layer 2)
