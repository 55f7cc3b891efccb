"""The operating-system side of tunhelper, behind one interface chosen once at import.

As in psutil, the portable core calls only the names re-exported here; each platform
module provides all of them:

``held_devices(pid)``
    names of the tun/tap devices a process holds open (empty if it holds none or
    cannot be read);
``device_info(name)``
    a :class:`DeviceInfo` for a device, or ``None`` if it does not exist;
``holds_pipe(pid, inode)``
    whether a process still has a pipe open: sshd closes its end of our stderr once
    it has passed on everything we wrote;
``boot_id()``
    a string that changes at every boot, so leases from before a reboot are stale;
``configure_p2p(device, local, peer, mtu)`` / ``deconfigure_p2p(device, local, peer)``
    put on / take off a point-to-point address (the latter tolerates a vanished device);
``wait_for_end(pid, start_time, device)``
    block until the session process exits or the device disappears (on FreeBSD, where
    a closed device persists: is destroyed or no longer held); returns which, as a
    short reason (a signal handler that raises interrupts it).

Linux (``linux.py``) and FreeBSD (``freebsd.py``) provide them; docs/platforms.md says
what was verified on each. Only the module for this platform is imported, and importing
it must stay cheap: heavy libraries (pyroute2, psutil) are imported only inside the
functions that need them.
"""

from __future__ import annotations

import sys

from tunhelper.platform.base import DeviceInfo

if sys.platform.startswith("linux"):
    from tunhelper.platform.linux import (
        boot_id,
        configure_p2p,
        deconfigure_p2p,
        device_info,
        held_devices,
        holds_pipe,
        wait_for_end,
    )
elif sys.platform.startswith("freebsd"):
    from tunhelper.platform.freebsd import (
        boot_id,
        configure_p2p,
        deconfigure_p2p,
        device_info,
        held_devices,
        holds_pipe,
        wait_for_end,
    )
else:
    raise ImportError(f"tunhelper does not support {sys.platform} (Linux and FreeBSD only)")

__all__ = [
    "DeviceInfo",
    "boot_id",
    "configure_p2p",
    "deconfigure_p2p",
    "device_info",
    "held_devices",
    "holds_pipe",
    "wait_for_end",
]
