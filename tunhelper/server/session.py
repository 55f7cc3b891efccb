"""One forced-command session: discover -> lease -> configure -> announce -> hold -> release.

Every step that takes something adds it to the session's :class:`Taken` before the next
step starts, so any failure, signal or end of session gives it all back the same way
(:mod:`tunhelper.server.teardown`). A helper that stops also ends its ssh connection,
because sshd keeps a tunnel open after its forced command exits: a client must never be
left on an unconfigured link.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import psutil

from tunhelper import log, platform
from tunhelper.errors import TunhelperError
from tunhelper.link import bridge, configure, discover
from tunhelper.link.hold import hold
from tunhelper.platform import DeviceInfo, SessionDevice
from tunhelper.pool import Pool
from tunhelper.protocol import Announcement, announce, wants_description
from tunhelper.server import hooks, identity, policy
from tunhelper.server.keeper import become_keeper
from tunhelper.server.teardown import NOT_SET_UP, Configured, DownHook, Guarded, Leased, Taken
from tunhelper.server.teardown import end_connection as end_connection
from tunhelper.settings import Settings
from tunhelper.signals import Interrupted, ignore_end_signals
from tunhelper.store import ACTIVE, Lease, Request, liveness


@dataclass(frozen=True)
class Side:
    """One address family of the link: its pool, the client's lease, the server's end."""

    pool: Pool
    gateway: str | None  # None only on an admin's bridge, for tap sessions
    prefix: int  # announced with the client's address
    lease: Lease | None = None


def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run the session; return the exit code. Errors reach the client as one line."""
    found: SessionDevice | None = None
    taken = Taken(settings.state_dir, settings.db_timeout, settings.store)

    def session() -> None:
        nonlocal found
        reason = NOT_SET_UP
        try:
            found = discover.find_device(settings.wait, environ)  # 1. discover
            reason = _run(settings, environ, found, taken)
        finally:
            ignore_end_signals()  # from here on, nothing may cut the cleanup short
            taken.give_back(reason)  # 6. release

    status = _exit_status(session, refusals=settings.state_dir)
    end_connection(found)
    return status


def _run(settings: Settings, environ: Mapping[str, str], found: SessionDevice, taken: Taken) -> str:
    """Steps 2 to 5; return why the session ended (only if it was held in place)."""
    device = found.device
    client, fallback = identity.client_identity(settings.client, environ, found.session_start)
    settings, reserved_for_others = policy.for_client(settings, client)
    if fallback:  # no key vouches for it: never end another session to make room
        settings = replace(settings, refuse_extra=True)
    policy.check_link(settings, device)
    outer, _ = hooks.remote(environ.get("SSH_CONNECTION"))
    policy.check_overlap(settings, policy.interface_networks(settings.state_dir), outer)
    sides = _plan(settings, device)
    mtu = configure.choose_mtu(device.mode, settings.mtu, settings.bridge, _has_ipv6(sides))
    describe = _describe(environ.get("SSH_ORIGINAL_COMMAND"))

    sides = _lease(settings, found, client, sides, reserved_for_others, taken)  # 2. lease
    _configure(settings, device, sides, mtu, taken)  # 3. configure
    values = _hook_values(settings, device, sides, client, environ)
    if settings.up:
        hooks.run(
            "up", settings.up, hooks.environment({"event": "up", **values}), settings.hook_timeout
        )
    if settings.down:
        taken.add(DownHook(settings.down, values, settings.hook_timeout, device))
    announce(_announcement(settings, device, sides, mtu), describe)  # 4. announce
    first = sides[0]
    assert first.lease is not None
    also = "" if settings.pool6 is None else _describe_v6(sides)
    log.info(
        f"session start: client {client} address {first.lease.address} gateway "
        f"{first.gateway}{also} {device.mode} device {device.name} sshd pid {found.session_pid}"
    )
    record = {**taken.record(), "session": {**found._asdict(), "device": device._asdict()}}
    become_keeper(record, [first.lease.address, device.name, settings.state_dir])  # 5. hold
    _, reason, taken.counters = hold(found)  # only if the keeper could not be started
    log.info(f"session end: address {first.lease.address} device {device.name}: {reason}")
    return reason


def _plan(settings: Settings, device: DeviceInfo) -> list[Side]:
    """Each family's gateway and announced prefix, decided before anything is taken."""
    sides = []
    for pool in settings.pools:
        gateway = None if pool.gateway is None else str(pool.gateway)
        if device.mode == "tap" and pool.version == 6 and not settings.bridge.managed:
            gateway = bridge.admin_gateway6(settings.bridge, pool.name, gateway)
        if device.mode == "tun":
            prefix = 32 if pool.version == 4 else 128
        else:  # the bridge carries the gateways with their pools' prefixes
            prefix = bridge.announced_prefix(settings.bridge, pool.name)
        sides.append(Side(pool, gateway, prefix))
    return sides


def _lease(
    settings: Settings,
    found: SessionDevice,
    client: str,
    sides: list[Side],
    reserved_for_others: list[str],
    taken: Taken,
) -> list[Side]:
    """Step 2: one lease per family, within the client's limits."""
    store = taken.store.get()
    alive = liveness.Liveness()
    policy.make_room(store, settings, client, alive)
    owner = liveness.current(found.session_pid, found.session_start, found.device.name)
    local = [*local_addresses(), *reserved_for_others]
    leased = []
    for side in sides:
        pool, reserved = side.pool, settings.reserved(side.pool)
        lease = store.allocate(
            Request(
                pool=pool.name,
                first=pool.first,
                last=pool.last,
                excluded=pool.excluded(local),
                client=client,
                owner=owner,
                address_of=pool.address,
                reserved=None if reserved is None else pool.offset(reserved),
            ),
            alive,
        )
        taken.add(Leased(lease))
        leased.append(replace(side, lease=lease))
    policy.check_limit(store, settings, client, alive)
    first = leased[0].lease
    assert first is not None
    policy.settle_sessions(store, settings, client, alive, first)
    return leased


def _configure(
    settings: Settings, device: DeviceInfo, sides: list[Side], mtu: int, taken: Taken
) -> None:
    """Step 3: the server's end of the link, and the client's networks behind it."""
    if device.mode == "tun":
        for side in sides:
            assert side.gateway is not None and side.lease is not None
            applied = configure.point_to_point(device, side.gateway, side.lease.address, mtu)
            taken.add(Configured(applied))
        _filter_sources(device)
    else:
        applied = configure.bridge_port(device, settings.bridge, mtu, settings.state_dir)
        taken.add(Configured(applied))
    if settings.client_nets:  # tun only (policy.check_link): the device says where
        nets = configure.client_networks(
            device, settings.client_nets, settings.state_dir, _session_devices(taken)
        )
        taken.add(Configured(nets))
    _guard(settings, device, sides, taken)


def _session_devices(taken: Taken) -> set[str]:
    """The devices of the store's live sessions (other than ours, whose routes come now)."""
    alive = liveness.Liveness()
    return {x.device for x in taken.store.get().leases() if x.state == ACTIVE and alive(x)}


def _guard(settings: Settings, device: DeviceInfo, sides: list[Side], taken: Taken) -> None:
    """Only the client's own sources may arrive on its link (platform.guard_link).

    Fails closed: a filter that cannot be installed refuses the session, except where
    the platform has none at all (EOPNOTSUPP, FreeBSD), which is warned about as
    doctor does (docs/platforms.md).
    """
    sources = [s.lease.address for s in sides if s.lease is not None]
    if device.mode == "tun":
        sources += [str(net) for net in settings.client_nets]
    gateway_link = settings.bridge.name if device.mode == "tap" else None
    try:
        platform.guard_link(device, sources, gateway_link)
    except platform.PlatformError as e:
        if e.errno == errno.EOPNOTSUPP:
            log.warning(f"{e.strerror}: the client on {device.name} could send in another's name")
            return
        taken.add(Guarded(device))  # a partly loaded filter is removed too
        raise TunhelperError(
            f"could not install the source filter on {device.name} ({e.strerror}); "
            "check that nftables works on this host (tunhelper doctor)"
        ) from e
    taken.add(Guarded(device))


def _announcement(
    settings: Settings, device: DeviceInfo, sides: list[Side], mtu: int
) -> Announcement:
    """Step 4's line: the primary family, and for dual stack the IPv6 one."""
    first = sides[0]
    assert first.lease is not None
    announcement = Announcement(
        first.lease.address,
        first.prefix,
        first.gateway,
        device.mode,
        mtu,
        settings.routes,
        settings.dns,
    )
    if settings.pool6 is not None:
        v6 = sides[1]
        assert v6.lease is not None
        announcement = replace(
            announcement, address6=v6.lease.address, prefix6=v6.prefix, gateway6=v6.gateway
        )
    return announcement


def _hook_values(
    settings: Settings,
    device: DeviceInfo,
    sides: list[Side],
    client: str,
    environ: Mapping[str, str],
) -> dict[str, object]:
    """What the hooks are told (:mod:`tunhelper.server.hooks` documents each)."""
    first = sides[0]
    v6 = next((s for s in sides if s.pool.version == 6), None)
    assert first.lease is not None
    remote_address, remote_port = hooks.remote(environ.get("SSH_CONNECTION"))
    return {
        "device": device.name,
        "mode": device.mode,
        "address": first.lease.address,
        "gateway": first.gateway,
        "prefix": first.prefix,
        # the IPv6 values whenever the session has IPv6, also from an IPv6-only pool
        "address6": None if v6 is None or v6.lease is None else v6.lease.address,
        "gateway6": None if v6 is None else v6.gateway,
        "prefix6": None if v6 is None else v6.prefix,
        "pool": first.pool.name,
        "client": client,
        "remote_address": remote_address,
        "remote_port": remote_port,
    }


def _describe_v6(sides: list[Side]) -> str:
    v6 = sides[1]
    assert v6.lease is not None
    return f" address6 {v6.lease.address} gateway6 {v6.gateway}"


def _has_ipv6(sides: list[Side]) -> bool:
    return any(side.pool.version == 6 for side in sides)


def _describe(command: str | None) -> bool:
    """Does the client ask for the JSON description? Any other command is ignored."""
    describe = wants_description(command)
    if command and not describe:
        log.info(f"ignoring the command the client sent: {command[:80]!r}")
    return describe


def local_addresses() -> list[str]:
    """Addresses already on this host's interfaces: never to be handed out."""
    return [
        a.address.split("%", 1)[0]  # an IPv6 link-local address carries its zone
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    ]


def _filter_sources(device: DeviceInfo) -> None:
    """Only the client's own address may arrive on its tun (see platform.filter_sources).

    Where the kernel setting cannot be written (a read-only /proc/sys in a container)
    the session goes on and the admin is told: ``tunhelper doctor`` checks it too.
    """
    try:
        platform.filter_sources(device)
    except OSError as e:
        log.warning(
            f"could not filter source addresses on {device.name} ({e.strerror}): its client "
            "could send packets in another client's name"
        )


def _exit_status(step: Callable[[], None], refusals: str | None = None) -> int:
    """Run ``step``; an error becomes one line (to the client and syslog) and an exit code.

    ``refusals``: the state directory whose refusal counter an error adds one to.
    """
    try:
        step()
    except Interrupted as e:
        log.error(f"interrupted by {e} before the session was set up; reconnect")
        return 1
    except TunhelperError as e:
        log.error(str(e))
        from tunhelper.admin import metrics  # only on errors; stdlib only

        metrics.count_refusal(refusals, e)
        return e.exit_code
    return 0
