"""The client side's platform contract: one Protocol per concern, as vpn-slice's providers.

``tunhelper connect`` changes three things on its host besides the tunnel device: the
firewall (the kill-switch), routes (the full tunnel's policy routing) and DNS. Each
backend (``linux/client.py``, ``freebsd/client.py``) is a module that provides every
function of every concern below and declares up front, in ``CAPABILITIES``, which
concerns it really implements. ``connect`` checks the capabilities it needs before it
changes anything (:func:`missing`), so a missing one is refused at start, in one line,
never discovered mid-session (``tests/test_client_platform.py`` holds both backends to
this).

Every change a backend makes is described by a JSON-able *record* (a dict with a
``kind``). The client writes the record to its journal BEFORE the change
(``apply``), so whatever a SIGKILL interrupts, a later ``undo`` finds; ``undo``
treats what is already gone as done.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

Record = dict[str, Any]

# The kill-switch's nftables table: one name for every connect on the host, so a
# restarted or second connect replaces the content of the same table in one
# transaction instead of deleting one table and adding another.
KILL_SWITCH_TABLE = "tunhelper_client"


class Passes(NamedTuple):
    """What the kill-switch lets through, as plain data (the client's
    :mod:`tunhelper.client.policy` decides it per state; a backend only renders it).

    ``peers``: (address, port) of the ssh connection's first hop; ``device``: the tunnel
    (``None`` while it is down); ``lan``: networks the user allowed (``--allow-lan``);
    ``dns_outside``: whether DNS may leave outside the tunnel (to the LAN when allowed).
    Loopback, DHCPv4/DHCPv6 and the neighbour-discovery messages always pass.
    """

    peers: tuple[tuple[str, int], ...] = ()
    device: str | None = None
    lan: tuple[str, ...] = ()
    dns_outside: bool = True


class Capabilities(NamedTuple):
    """What a backend implements. ``firewall``: the kill-switch; ``full_tunnel``:
    policy routing for a default route through the link (without it the announced
    halves are installed as two plain routes); ``resolv_conf``: replacing and restoring
    /etc/resolv.conf when no resolver manager is there."""

    firewall: bool
    full_tunnel: bool
    resolv_conf: bool


@runtime_checkable
class Firewall(Protocol):
    def firewall(self, table: str, passes: Passes | None) -> Record:
        """Replace the whole content of ``table`` with ``passes`` in ONE transaction
        (``None``: delete the table). Never a moment without a policy."""


@runtime_checkable
class Routes(Protocol):
    def full_tunnel_active(self) -> list[int]:
        """Priorities of tunhelper's full-tunnel rules present now."""

    def full_tunnel_plan(self, device_index: int, families: list[int], peer: str) -> list[Record]:
        """The records (routes, rules) a full tunnel needs, in order, not yet applied."""


@runtime_checkable
class Dns(Protocol):
    def dns_plan(self, device: str, servers: list[str], full: bool) -> Record | None:
        """How this host takes the link's DNS servers (``None``: no manager and no
        fallback), not yet applied."""


@runtime_checkable
class Changes(Protocol):
    def apply(self, record: Record) -> None:
        """Make the change a record describes (routes, rules, DNS)."""

    def undo(self, record: Record) -> None:
        """Take it off again; what is already gone is not an error."""


@runtime_checkable
class Scope(Protocol):
    def netns(self, pid: int | None = None) -> int:
        """The network namespace of ``pid`` (this process if ``None``) as a number,
        0 if unknown: a connect's journal belongs to the namespace it changed."""


CONCERNS = {"firewall": Firewall, "full_tunnel": Routes, "resolv_conf": Dns}


def missing(capabilities: Capabilities, needed: dict[str, bool]) -> list[str]:
    """The needed capabilities this backend lacks (``needed``: name -> asked for)."""
    return [name for name, asked in needed.items() if asked and not getattr(capabilities, name)]
