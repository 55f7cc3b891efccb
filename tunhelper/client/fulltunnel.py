"""Full tunnel: when the server announces a default route, everything goes through the
link except the ssh connection that carries it.

The server announces the two halves (``0.0.0.0/1``, ``128.0.0.0/1``; ``::/1``,
``8000::/1``) so that an older client, which installs them as plain routes, still
wins over the default route without replacing it. This client recognises them and
uses policy routing instead (see :mod:`tunhelper.platform.linux.client`): the ssh
connection's peer is looked up in the main table by a rule of its own, so it stays
outside and follows the underlying default route when that changes (roaming).

The peer is the actual TCP peer of ssh: with ``ProxyJump`` or a ``ProxyCommand``,
ssh talks to a child process, and the first hop's connection belongs to that child,
so ssh's whole process tree is searched.
"""

from __future__ import annotations

import psutil

from tunhelper.protocol import Announcement

HALVES = {4: {"0.0.0.0/1", "128.0.0.0/1"}, 6: {"::/1", "8000::/1"}}
DEFAULTS = {4: "0.0.0.0/0", 6: "::/0"}


def families(ann: Announcement) -> list[int]:
    """The IP versions for which the server announced everything (a full tunnel)."""
    routes = set(ann.routes)
    return [v for v in (4, 6) if HALVES[v] <= routes or DEFAULTS[v] in routes]


def other_routes(ann: Announcement, full: list[int]) -> list[str]:
    """The announced routes that policy routing does not already cover."""
    covered = set().union(*(HALVES[v] | {DEFAULTS[v]} for v in full)) if full else set()
    return [r for r in ann.routes if r not in covered]


def ssh_peer(pid: int) -> str | None:
    """The remote address of the TCP connection ssh (or its proxy child) opened."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    for proc in procs:
        try:
            connections = proc.net_connections(kind="tcp")
        except (psutil.Error, AttributeError):
            try:
                connections = proc.connections(kind="tcp")
            except psutil.Error:
                continue
        for conn in connections:
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr:
                address = conn.raddr.ip
                if address.startswith("::ffff:"):
                    address = address[len("::ffff:") :]
                return address
    return None
