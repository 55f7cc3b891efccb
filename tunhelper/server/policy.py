"""Per-client policy between the steps: which link this key may have, and how many.

Checked before anything is taken where possible (the link's kind against the pool,
the config file's ``[client ...]``), and around the lease where the count must include
it (``--max-sessions``, ``--max-leases``): counted again after allocating, so a burst of
one key's connections settles on the limit instead of slipping past it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterable

from tunhelper import defaults, family, log
from tunhelper.errors import TunhelperError
from tunhelper.link import bridge
from tunhelper.platform import DeviceInfo
from tunhelper.server import replaced
from tunhelper.settings import Settings
from tunhelper.store import ACTIVE, Alive, Lease, LeaseStore, liveness


def check_link(settings: Settings, device: DeviceInfo) -> None:
    """Refuse a kind of link this key's pools cannot serve, before anything is taken."""
    gatewayless = any(p.gateway is None for p in settings.pools)
    if device.mode == "tun" and gatewayless:
        raise TunhelperError(
            "this pool has no gateway (--bridge without --gateway), so it serves ethernet "
            "links only: connect with -o Tunnel=ethernet (tunhelper connect --tap)"
        )
    if device.mode == "tap" and settings.client_nets:
        # A tap is a port of the pool's bridge: its route would live on the bridge and
        # outlive a killed helper, pointing at an address another client may get next.
        raise TunhelperError(
            f"--client-net {settings.client_nets[0]} is routed through tun links only: "
            "connect without --tap (ssh -w any), or use a key without --client-net for tap"
        )


def check_overlap(
    settings: Settings, networks: Iterable[tuple[str, str]], outer: str | None
) -> None:
    """Refuse a pool that would reroute this session's own ssh connection.

    A lease inside a network of the server's interfaces (or equal to the client's outer
    address) gets a host route through the tun that swallows the ssh connection the
    announcement must travel on: the session hangs. ``networks`` are ``(interface,
    network)`` pairs (:func:`interface_networks`); ``outer`` the client's address from
    ``SSH_CONNECTION``. The pool's own bridge is skipped: a ``--bridge`` slice of a LAN
    is meant to lie inside that LAN's network.
    """
    for pool in settings.pools:
        if outer and pool.offset(outer) is not None:
            raise TunhelperError(
                f"pool {pool.name} holds this connection's own address {outer}: its lease "
                "would carry the ssh connection into the tunnel; use a pool outside the "
                "networks clients connect from"
            )
        for name, network in networks:
            if name != settings.bridge.name and pool.overlaps(network):
                raise TunhelperError(
                    f"pool {pool.name} overlaps {network} on the server's interface {name}: "
                    "a lease there would reroute traffic of that network (perhaps this very "
                    "ssh connection) into a tunnel; use a pool outside the server's networks"
                )


def interface_networks(state_dir: str | None = None) -> list[tuple[str, str]]:
    """``(interface, network)`` of every address on this host with a prefix shorter than
    a host's, link-local ones and tunhelper's own bridges (marked in ``state_dir``) left
    out: those carry a pool by design."""
    import ipaddress

    import psutil

    ours: set[str] = set()
    if state_dir is not None:
        with contextlib.suppress(OSError):
            ours = set(os.listdir(os.path.join(state_dir, bridge.MARKERS)))
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        if name in ours:
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            try:
                address = ipaddress.ip_address(a.address.split("%", 1)[0])
                bits = bin(int(ipaddress.ip_address(a.netmask))).count("1")
            except ValueError:
                continue
            if address.is_link_local or bits >= address.max_prefixlen:
                continue  # host addresses are excluded one by one (local_addresses)
            out.append((name, str(ipaddress.ip_network(f"{address}/{bits}", strict=False))))
    return out


def for_client(settings: Settings, client: str) -> tuple[Settings, list[str]]:
    """Apply the config file's ``[client ...]`` of this client (argv still wins), and
    list the addresses it reserves for other clients of this pool."""
    names = (settings.pool_label, *(p.name for p in settings.pools))
    section = settings.clients.get(client)
    if section is not None and section.applies_to(*names):
        v4 = next((a for a in section.addresses if family.of(a) == 4), None)
        v6 = next((a for a in section.addresses if family.of(a) == 6), None)
        if settings.pool6 is None:  # one pool: its family's reservation
            v4, v6 = (v6, None) if settings.pool.version == 6 else (v4, None)
        settings = dataclasses.replace(
            settings,
            address=settings.address or v4,
            address6=settings.address6 or v6,
            client_nets=settings.client_nets or list(section.client_nets),
        )
    others = [
        address
        for name, s in settings.clients.items()
        if name != client and s.applies_to(*names)
        for address in s.addresses
    ]
    return settings, others


def make_room(store: LeaseStore, settings: Settings, client: str, alive: Alive) -> None:
    """Keep a client within ``--max-sessions``: end its oldest sessions, or refuse.

    Like OpenVPN with a repeated common name: a roaming laptop whose old session has
    not timed out yet gets its address back at once (the sticky allocation that
    follows finds it free).
    """
    pool, limit = settings.pool.name, settings.max_sessions
    mine = _live_sessions(store, pool, client, alive)
    extra = len(mine) - limit + 1
    if extra <= 0:
        return
    if settings.refuse_extra:
        raise TunhelperError(
            f"this client already has {len(mine)} live session(s), the most --max-sessions "
            f"{limit} allows; end one first"
        )
    oldest = mine[:extra]
    _refuse_if_elsewhere(oldest, limit)
    _end_sessions(oldest, client, limit, settings.state_dir)
    tokens = {lease.token for lease in oldest}
    deadline = time.monotonic() + defaults.TAKEOVER_WAIT
    while time.monotonic() < deadline:
        if not [x for x in _live_sessions(store, pool, client, alive) if x.token in tokens]:
            return
        time.sleep(0.05)
    raise TunhelperError(
        f"the previous session of this client did not end within "
        f"{defaults.TAKEOVER_WAIT:g}s; try again"
    )


def settle_sessions(
    store: LeaseStore, settings: Settings, client: str, alive: Alive, mine: Lease
) -> None:
    """Enforce ``--max-sessions`` again after our own allocation, against bursts.

    :func:`make_room` counts before allocating, so a burst of one key's connections can
    all pass it. Counted again now, in allocation order: the newest ``--max-sessions``
    are kept and any older one is ended (a later session ends us if we are too old), or
    with ``--refuse-extra`` the oldest are kept and we refuse if we are not among them.
    Either way every session reaches the same verdict, so the limit holds.
    """
    limit = settings.max_sessions
    live = _live_sessions(store, settings.pool.name, client, alive)
    if len(live) <= limit:
        return
    tokens = [x.token for x in live]
    if settings.refuse_extra:
        if mine.token not in tokens[:limit]:
            raise TunhelperError(
                f"this client already has {limit} live session(s), the most --max-sessions "
                f"{limit} allows; end one first"
            )
        return
    if mine.token in tokens[-limit:]:
        _refuse_if_elsewhere(live[:-limit], limit)  # we give way: the limit still holds
        _end_sessions(live[:-limit], client, limit, settings.state_dir)


def check_limit(store: LeaseStore, settings: Settings, client: str, alive: Alive) -> None:
    """Refuse a client that already holds ``--max-leases`` addresses of the pool.

    Counted after our own allocation, in its own read: two sessions of one client that
    allocate at the same moment may both be refused, never both be let past the limit.
    """
    limit = settings.max_leases
    if limit is None:
        return
    held = store.live_count(settings.pool.name, client, alive)
    if held > limit:
        raise TunhelperError(
            f"client {client} already has {held - 1} live session(s) in pool "
            f"{settings.pool.name}, the most it may hold (--max-leases {limit}): end one first"
        )


def _live_sessions(store: LeaseStore, pool: str, client: str, alive: Alive) -> list[Lease]:
    """The client's live sessions in ``pool``, in allocation order (oldest first)."""
    live = [x for x in store.leases(pool, client) if x.state == ACTIVE and alive(x)]
    return sorted(live, key=lambda x: (x.since, x.token))


def _refuse_if_elsewhere(leases: list[Lease], limit: int) -> None:
    """A session on another gateway of a shared store is not ended from here: refused.

    Only its own gateway can end it (its pids mean nothing here), and waiting for that
    gateway's next renewal would hold the client for up to a lease lifetime. So the new
    session is refused at once, naming the gateway; a session whose gateway died stops
    counting once its lease expires.
    """
    this = liveness.this_host()
    for lease in leases:
        if lease.host != this:
            left = ""
            if lease.expires is not None:
                seconds = max(0.0, lease.expires - time.time())
                left = f" (its lease expires in {seconds:.0f}s unless renewed)"
            raise TunhelperError(
                f"this client's session {lease.address} is live on gateway {lease.host}, "
                f"the most --max-sessions {limit} allows: end it there first{left}"
            )


def _end_sessions(leases: list[Lease], client: str, limit: int, state_dir: str) -> None:
    for lease in leases:
        log.info(f"ending session {lease.address} of {client}: --max-sessions {limit}")
        replaced.leave_note(
            state_dir,
            lease.token,
            f"session {lease.address} replaced by a newer session of this key "
            f"(--max-sessions {limit}): ending it",
        )
        liveness.end(lease)
