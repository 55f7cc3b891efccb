"""The operating-system side of tunhelper, behind one interface chosen once at import.

As in psutil, the portable core calls only the names exported here. :data:`CONCERNS`
lists them, once, by concern; each backend (``linux/``, ``freebsd.py``) provides every
one with the same signature (``tests/test_platform_contract.py`` holds them to it), and
docs/platforms.md says what was verified on each.

Every exported function is wrapped once at this boundary, as psutil's
``wrap_exceptions``: whatever goes wrong in the operating system arrives as
:class:`PlatformError` (an ``OSError`` with ``errno`` and a one-line ``strerror``), so
callers catch that and nothing else. Only ``OSError``, ``ValueError`` and the backend's
declared native errors are translated: an exception a signal handler raises passes
through untouched.

Only the backend for this platform is imported, and importing it must stay cheap (the
keeper imports it for the life of a session): heavy libraries (pyroute2, psutil)
are imported only inside the functions that need them, and the path to the
announcement imports no pyroute2.
"""

from __future__ import annotations

import functools
import sys

from tunhelper.platform.base import (
    DEVICE_GONE,
    PROCESS_ENDED,
    DeviceInfo,
    PlatformError,
    SessionDevice,
)

CONCERNS = {
    # held_devices(pid) -> list[str]: the tun/tap devices a process holds open (empty if
    #   none, or it cannot be read); device_info(name) -> DeviceInfo | None;
    # holds_pipe(pid, inode) -> bool: sshd closes its end of our stderr once it has
    #   passed on everything we wrote; boot_id() -> str: changes at every boot, so
    #   leases from before a reboot are stale.
    "discovery": ("held_devices", "device_info", "holds_pipe", "boot_id"),
    # process_start(pid) -> float | None: start time as psutil gives it;
    # same_process(pid, start) -> bool: alive, no zombie, started within 1 s of start
    #   (so not a reused pid). Both without psutil on Linux, for the keeper.
    "processes": ("process_start", "same_process"),
    # open_regular(path, sound) -> int | None: a read-only fd on a file a client named
    #   (SSH_USER_AUTH), only if sound(stat) accepts it, judged before opening acts on it.
    "files": ("open_regular",),
    # configure_p2p(device, local, peer, mtu) / deconfigure_p2p(device, local, peer):
    #   a point-to-point address; configure_address(device, address, prefixlen, mtu) /
    #   deconfigure_address(device, address, prefixlen): an address with a prefix (the
    #   client end of a tap link). Undoing tolerates a vanished device.
    "addresses": ("configure_p2p", "deconfigure_p2p", "configure_address", "deconfigure_address"),
    # filter_sources(device): drop packets arriving on a session's device from addresses
    #   not routed through it, so a client cannot send in another client's name.
    "filter": ("filter_sources",),
    # guard_link(device, sources, gateway_link): let a session's device accept only
    #   its client's sources (addresses or networks; on tap also its ARP/ND and one
    #   pinned MAC; gateway_link: the bridge whose link-local addresses no client may
    #   claim); unguard_link(device): remove that filter (a vanished one is fine);
    # stale_guards() -> list[str]: filters left by sessions whose device is gone;
    # remove_stale_guards() -> list[str]: remove those (``tunhelper repair``).
    "sourcefilter": ("guard_link", "unguard_link", "stale_guards", "remove_stale_guards"),
    # bridge_ports(name) -> list[str] | None (None: no such bridge),
    # create_bridge(name, address, prefixlen, mtu), add_address(name, address,
    # prefixlen) (a further gateway, the IPv6 one), delete_bridge(name),
    # add_port(device, bridge, mtu), remove_port(device, bridge): the bridge that tap
    # sessions share.
    "bridges": (
        "bridge_ports",
        "create_bridge",
        "add_address",
        "delete_bridge",
        "add_port",
        "remove_port",
    ),
    # add_route(device, network, via) / delete_route(device, network, via),
    # our_routes() -> list[(network, device)]: routes through a session's device,
    # marked as tunhelper's so they can be listed.
    "routes": ("add_route", "delete_route", "our_routes"),
    # apply_dns(device, servers) -> str | None (None: no resolver manager here) /
    # revert_dns(device, tool).
    "dns": ("apply_dns", "revert_dns"),
    # wait_for_end(pid, start_time, device) -> (kind, counters): block until the
    #   session process exits or the device disappears; kind is PROCESS_ENDED or
    #   DEVICE_GONE, counters the device's last (rx_bytes, tx_bytes) if its deletion
    #   was seen, else None. A signal handler that raises interrupts it. On FreeBSD,
    #   where a closed device persists, "gone" also means no longer held by ``pid``.
    # link_counters(device) -> (rx_bytes, tx_bytes) | None: live counters only.
    "watch": ("wait_for_end", "link_counters"),
    # tun_node() -> (ok, line): can sshd create tun/tap devices;
    # persistent_devices() -> list[(name, command that renames it)]: devices a client
    #   could make sshd attach to (-w any:N); source_filter() -> (ok, line): does
    #   filter_sources hold on this host; forwarding(version) -> (on, line): does the
    #   host forward IPv4 (4) or IPv6 (6) packets between interfaces (routes beyond the
    #   gateway need it). What ``tunhelper doctor`` reports.
    "checks": ("tun_node", "persistent_devices", "source_filter", "forwarding"),
}

if sys.platform.startswith("linux"):
    from tunhelper.platform import linux as _backend
elif sys.platform.startswith("freebsd"):
    from tunhelper.platform import freebsd as _backend
else:
    raise ImportError(f"tunhelper does not support {sys.platform} (Linux and FreeBSD only)")


def wrap_errors(function, native: tuple[type[BaseException], ...] = ()):
    """``function`` with OSError, ValueError and ``native`` errors as PlatformError."""
    translated = (OSError, ValueError, *native)

    @functools.wraps(function)
    def boundary(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PlatformError:
            raise
        except translated as e:
            raise PlatformError.of(e) from e

    return boundary


NAMES = tuple(name for names in CONCERNS.values() for name in names)
globals().update(
    {name: wrap_errors(getattr(_backend, name), _backend.NATIVE_ERRORS) for name in NAMES}
)


_LAZY = {
    "client": ("tunhelper.platform.linux.client", "tunhelper.platform.freebsd_client"),
    "routes_view": (
        "tunhelper.platform.linux.routes_view",
        "tunhelper.platform.freebsd_routes_view",
    ),
}


def __getattr__(name: str):
    """``platform.client``: the client side (full tunnel, kill-switch);
    ``platform.routes_view``: the host's own networks, which a gateway's announcement
    is held against. Imported on use only, so the server and the keeper never load them."""
    if name in _LAZY:
        import importlib

        linux, freebsd = _LAZY[name]
        return importlib.import_module(linux if sys.platform.startswith("linux") else freebsd)
    raise AttributeError(name)


__all__ = [  # built from CONCERNS
    "DEVICE_GONE",
    "PROCESS_ENDED",
    "DeviceInfo",
    "PlatformError",
    "SessionDevice",
    *NAMES,
]
