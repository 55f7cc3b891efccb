"""The platform's contract: one provider class per concern, as vpn-slice has per OS.

Each class names the functions a backend provides for one concern, with the signature
every backend must have (``tests/test_platform_contract.py`` holds each backend to it)
and what the function promises. A backend is a module of functions, as psutil's
are, so these classes are never instantiated: they are the written contract, and
:mod:`tunhelper.platform` exports exactly their names, wrapped at its error boundary.

What a backend cannot do it says up front in its ``CAPABILITIES`` (sshuttle's method
features), checked where a session starts or by ``tunhelper doctor``
(:data:`OPTIONAL`), so a missing one is never found half-way through a session.

Written with :mod:`abc`, which every interpreter has loaded at start, rather than
``typing.Protocol``: the keeper imports the platform for the life of a session, and
``typing`` would cost it memory for nothing at run time.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable

from tunhelper.platform.base import DeviceInfo

# Capabilities a backend may lack, and what lacking each one means, in one line.
OPTIONAL = {
    "ipv6": "IPv6 pools (addresses, routes and bridges of IPv6)",
    "rp_filter": "strict reverse-path filtering on a session's tun",
    "source_guard": "source validation of what a client sends (a filter on its device)",
    "dns": "a DNS server from the announcement applied by 'tunhelper connect'",
}


class Discovery(ABC):
    """Which device this session's sshd opened, and what it is."""

    @abstractmethod
    def held_devices(self, pid: int) -> list[str]:
        """The tun/tap devices ``pid`` holds open (empty if none, or unreadable)."""

    @abstractmethod
    def device_info(self, name: str) -> DeviceInfo | None:
        """The device's index and mode; ``None`` if it is gone or not tun/tap."""

    @abstractmethod
    def holds_pipe(self, pid: int, inode: int) -> bool:
        """sshd closes its end of our stderr once it has passed on all we wrote."""

    @abstractmethod
    def boot_id(self) -> str:
        """Changes at every boot, so leases from before a reboot are stale."""


class Processes(ABC):
    """Process identity: a pid and its start time, so a reused pid is not the same."""

    @abstractmethod
    def process_start(self, pid: int) -> float | None:
        """The start time as psutil's ``create_time()`` gives it; ``None``: gone."""

    @abstractmethod
    def same_process(self, pid: int, start: float) -> bool:
        """Alive, no zombie, started at ``start`` (:func:`.base.same_start`)."""

    @abstractmethod
    def end_process(self, pid: int, start: float) -> bool:
        """SIGTERM the process that had ``pid`` at ``start`` if it still runs; sent?"""


class Files(ABC):
    """Files a client names."""

    @abstractmethod
    def open_regular(self, path: str, sound: Callable[[os.stat_result], bool]) -> int | None:
        """A read-only fd on ``path`` (SSH_USER_AUTH) only if ``sound(stat)`` accepts it,
        judged before opening can act on it."""


class Addresses(ABC):
    """Addresses on a session's device; undoing tolerates a vanished device."""

    @abstractmethod
    def configure_p2p(self, device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
        """A point-to-point address, the MTU, and the device up."""

    @abstractmethod
    def deconfigure_p2p(self, device: DeviceInfo, local: str, peer: str) -> None:
        """Undo :meth:`configure_p2p`."""

    @abstractmethod
    def configure_address(self, device: DeviceInfo, address: str, prefixlen: int, mtu: int) -> None:
        """An address with a prefix (the client end of a tap link)."""

    @abstractmethod
    def deconfigure_address(self, device: DeviceInfo, address: str, prefixlen: int) -> None:
        """Undo :meth:`configure_address`."""


class RpFilter(ABC):
    """The kernel's reverse-path filter (rp_filter), per device."""

    @abstractmethod
    def strict_rp_filter(self, device: DeviceInfo) -> None:
        """Drop packets arriving on ``device`` from addresses not routed through it."""


class SourceGuard(ABC):
    """Source validation: a filter on a session's device that accepts only what its
    client may send (docs/security.md)."""

    @abstractmethod
    def guard_link(self, device: DeviceInfo, sources: list[str], gateway_link: str | None) -> None:
        """Only ``sources`` (addresses or networks) may arrive on ``device``; on tap also
        its ARP/ND and one pinned MAC; ``gateway_link``: the bridge whose link-local
        addresses no client may claim."""

    @abstractmethod
    def unguard_link(self, device: DeviceInfo) -> None:
        """Remove that filter (a vanished one is fine)."""

    @abstractmethod
    def stale_guards(self) -> list[str]:
        """Filters left by sessions whose device is gone."""

    @abstractmethod
    def remove_stale_guards(self) -> list[str]:
        """Remove those (``tunhelper repair``)."""


class Bridges(ABC):
    """The bridge that a pool's tap sessions share."""

    @abstractmethod
    def bridge_ports(self, name: str) -> list[str] | None:
        """Its ports; ``None``: no such bridge."""

    @abstractmethod
    def create_bridge(self, name: str, address: str | None, prefixlen: int, mtu: int) -> None:
        """Create it, with the gateway address (if any), the MTU, and up."""

    @abstractmethod
    def add_address(self, name: str, address: str, prefixlen: int) -> None:
        """A further gateway (the IPv6 one)."""

    @abstractmethod
    def delete_bridge(self, name: str) -> None:
        """Delete it."""

    @abstractmethod
    def add_port(self, device: DeviceInfo, bridge: str, mtu: int) -> None:
        """Make a tap device a port of the bridge."""

    @abstractmethod
    def remove_port(self, device: DeviceInfo, bridge: str) -> None:
        """Undo :meth:`add_port`."""


class Routes(ABC):
    """Routes through a session's device, marked as tunhelper's so they can be listed."""

    @abstractmethod
    def add_route(self, device: DeviceInfo, network: str, via: str | None) -> None:
        """A route to ``network`` through ``device`` (and ``via``)."""

    @abstractmethod
    def delete_route(self, device: DeviceInfo, network: str, via: str | None) -> None:
        """Undo :meth:`add_route`; never an admin's route to the same network."""

    @abstractmethod
    def our_routes(self) -> list[tuple[str, str]]:
        """``(network, device)`` of tunhelper's routes, of both IP versions."""


class Dns(ABC):
    """The client's resolver manager."""

    @abstractmethod
    def apply_dns(self, device: DeviceInfo, servers: list[str]) -> str | None:
        """The tool that applied them; ``None``: no resolver manager here."""

    @abstractmethod
    def revert_dns(self, device: DeviceInfo, tool: str) -> None:
        """Undo :meth:`apply_dns`."""


class Watch(ABC):
    """The end of a session: its session process exits or its device disappears."""

    @abstractmethod
    def wait_for_end(
        self, pid: int, start_time: float, device: DeviceInfo
    ) -> tuple[str, tuple[int, int] | None]:
        """Block until then: ``(PROCESS_ENDED or DEVICE_GONE, counters)``, the counters
        the device's last ``(rx_bytes, tx_bytes)`` if its deletion was seen. A signal
        handler that raises interrupts it. On FreeBSD, where a closed device persists,
        "gone" also means no longer held by ``pid``."""

    @abstractmethod
    def link_counters(self, device: DeviceInfo) -> tuple[int, int] | None:
        """Live ``(rx_bytes, tx_bytes)``."""


class Checks(ABC):
    """What ``tunhelper doctor`` asks of the host: each a verdict and one line."""

    @abstractmethod
    def tun_node(self) -> tuple[bool, str]:
        """Can sshd create tun/tap devices?"""

    @abstractmethod
    def persistent_devices(self) -> list[tuple[str, str]]:
        """``(name, command that renames it)`` of devices a client could make sshd attach
        to (``-w any:N``)."""

    @abstractmethod
    def source_validation(self) -> tuple[bool, str]:
        """Do the source guard and the reverse-path filter hold on this host?"""

    @abstractmethod
    def forwarding(self, version: int) -> tuple[bool, str]:
        """Does the host forward packets of IP ``version`` between interfaces?"""


# Every concern, by the name the docs use; the exports are their methods, in this order.
CONCERNS: dict[str, type] = {
    "discovery": Discovery,
    "processes": Processes,
    "files": Files,
    "addresses": Addresses,
    "rp_filter": RpFilter,
    "source_guard": SourceGuard,
    "bridges": Bridges,
    "routes": Routes,
    "dns": Dns,
    "watch": Watch,
    "checks": Checks,
}


def names(concern: type) -> tuple[str, ...]:
    """The functions a concern's provider has, in the order they are written."""
    return tuple(n for n in vars(concern) if n in concern.__abstractmethods__)
