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
``filter_sources(device)``
    drop packets arriving on a session's device from addresses not routed through it,
    so a client cannot send in another client's name (raises OSError if it cannot);
``configure_address(device, address, prefixlen, mtu)`` / ``deconfigure_address(...)``
    an address with a prefix (the client end of a tap link);
``bridge_ports(name)``, ``create_bridge(name, address, prefixlen, mtu)``,
``add_address(name, address, prefixlen)``, ``delete_bridge(name)``,
``add_port(device, bridge, mtu)``, ``remove_port(device, bridge)``
    the bridge that tap sessions share (``bridge_ports`` is ``None`` if it does not
    exist; ``add_address`` puts a further gateway, the IPv6 one, on it);
``add_route(device, network, via)`` / ``delete_route(...)``, ``our_routes()``
    routes through a session's device, marked as tunhelper's so they can be listed;
``apply_dns(device, servers)`` / ``revert_dns(device, tool)``
    hand a link's DNS servers to the system's resolver manager (``None``: there is none);
``link_counters(device)``
    bytes received from and sent to the client through the device, now or as it was
    deleted (``None`` if unknown);
``wait_for_end(pid, start_time, device)``
    block until the session process exits or the device disappears; returns which
    (:data:`PROCESS_ENDED` or :data:`DEVICE_GONE`); a signal handler that raises
    interrupts it. On FreeBSD, where a closed device persists, "gone" also means no
    longer held by the session.

Linux (``linux.py``) and FreeBSD (``freebsd.py``) provide them; docs/platforms.md says
what was verified on each. Only the module for this platform is imported, and importing
it must stay cheap: heavy libraries (pyroute2, psutil) are imported only inside the
functions that need them, and the path to the announcement imports no pyroute2.
"""

from __future__ import annotations

import sys

from tunhelper.platform.base import DEVICE_GONE, PROCESS_ENDED, DeviceInfo, SessionDevice

if sys.platform.startswith("linux"):
    from tunhelper.platform.linux import (
        add_address,
        add_port,
        add_route,
        apply_dns,
        boot_id,
        bridge_ports,
        configure_address,
        configure_p2p,
        create_bridge,
        deconfigure_address,
        deconfigure_p2p,
        delete_bridge,
        delete_route,
        device_info,
        filter_sources,
        held_devices,
        holds_pipe,
        link_counters,
        our_routes,
        remove_port,
        revert_dns,
        wait_for_end,
    )
elif sys.platform.startswith("freebsd"):
    from tunhelper.platform.freebsd import (
        add_address,
        add_port,
        add_route,
        apply_dns,
        boot_id,
        bridge_ports,
        configure_address,
        configure_p2p,
        create_bridge,
        deconfigure_address,
        deconfigure_p2p,
        delete_bridge,
        delete_route,
        device_info,
        filter_sources,
        held_devices,
        holds_pipe,
        link_counters,
        our_routes,
        remove_port,
        revert_dns,
        wait_for_end,
    )
else:
    raise ImportError(f"tunhelper does not support {sys.platform} (Linux and FreeBSD only)")


def __getattr__(name: str):
    """``platform.client``: the client side (full tunnel, kill-switch), imported on use
    only, so the server and the slim holder never load it."""
    if name == "client":
        import importlib

        suffix = "linux" if sys.platform.startswith("linux") else "freebsd"
        return importlib.import_module(f"tunhelper.platform.{suffix}_client")
    raise AttributeError(name)


__all__ = [
    "DEVICE_GONE",
    "PROCESS_ENDED",
    "DeviceInfo",
    "SessionDevice",
    "add_address",
    "add_port",
    "add_route",
    "apply_dns",
    "boot_id",
    "bridge_ports",
    "configure_address",
    "configure_p2p",
    "create_bridge",
    "deconfigure_address",
    "deconfigure_p2p",
    "delete_bridge",
    "delete_route",
    "device_info",
    "filter_sources",
    "held_devices",
    "holds_pipe",
    "link_counters",
    "our_routes",
    "remove_port",
    "revert_dns",
    "wait_for_end",
]
