"""The connect state machine's states, and what passes the kill-switch in each: the ONE
place in code that says it (docs/security.md, "The client", says the same in words).

As in Mullvad's app, the policy in force is a function of the state alone:

| state | passes (besides loopback, DHCPv4/DHCPv6, neighbour discovery) |
| --- | --- |
| connecting, reconnecting | ssh to the first hop's addresses, resolved before blocking |
| connected | that, and everything through the tunnel device |
| blocked, disconnecting | nothing more |
| disconnected | no table at all (only after the user asked) |

``--allow-lan`` adds the private networks below in every blocking state; while
connected with DNS servers announced, DNS to them (port 53) is still dropped, so
queries go only through the tunnel. Pure: tested without a network.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tunhelper.platform.clientbase import Passes


class State(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    BLOCKED = "blocked"
    DISCONNECTING = "disconnecting"


# What --allow-lan lets through: the private, link-local and local multicast ranges
# (Mullvad's list), not "whatever this host is on", which a hostile network chooses.
LAN = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "224.0.0.0/24",
    "239.255.255.250/32",
    "255.255.255.255/32",
    "fe80::/10",
    "fc00::/7",
    "ff02::/16",
)

# Which state may follow which: anything else is a bug, refused by Machine.enter.
NEXT = {
    State.DISCONNECTED: {State.CONNECTING, State.BLOCKED, State.DISCONNECTING},
    State.CONNECTING: {
        State.CONNECTING,
        State.CONNECTED,
        State.RECONNECTING,
        State.BLOCKED,
        State.DISCONNECTING,
    },
    State.CONNECTED: {State.RECONNECTING, State.BLOCKED, State.DISCONNECTING},
    State.RECONNECTING: {State.CONNECTED, State.RECONNECTING, State.BLOCKED, State.DISCONNECTING},
    State.BLOCKED: {State.DISCONNECTING},  # only the user's request leaves it
    State.DISCONNECTING: {State.DISCONNECTED},
}


@dataclass(frozen=True)
class Context:
    """What the policy depends on besides the state."""

    peers: tuple[tuple[str, int], ...]
    allow_lan: bool = False
    device: str | None = None  # the tunnel, while connected
    dns_announced: bool = False


def passes(state: State, context: Context) -> Passes | None:
    """The kill-switch's policy in ``state``; ``None``: no table (disconnected)."""
    if state is State.DISCONNECTED:
        return None
    lan = LAN if context.allow_lan else ()
    if state in (State.BLOCKED, State.DISCONNECTING):
        return Passes(lan=lan)
    if state in (State.CONNECTING, State.RECONNECTING):
        return Passes(peers=context.peers, lan=lan)
    return Passes(
        peers=context.peers,
        device=context.device,
        lan=lan,
        dns_outside=not context.dns_announced,
    )


def allowed(current: State, following: State) -> bool:
    return following in NEXT[current]
