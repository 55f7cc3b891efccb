"""One forced-command session: discover -> lease -> configure -> announce -> hold -> release.

Every step that takes something registers how to give it back before the next step
starts, so any failure, signal or end of session unwinds the same way. A helper that
stops also ends its ssh connection, because sshd keeps a tunnel open after its forced
command exits: a client must never be left on an unconfigured link.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import psutil

from tunhelper import configure, log, platform
from tunhelper.conffile import ClientSection
from tunhelper.errors import TunhelperError
from tunhelper.hold import Interrupted, become_holder, hold, ignore_end_signals
from tunhelper.platform import DeviceInfo
from tunhelper.pool import Pool
from tunhelper.protocol import Announcement, announce, wants_description
from tunhelper.server import bridge, discover, hooks, identity
from tunhelper.server.bridge import BridgePlan
from tunhelper.store import ACTIVE, Lease, Request, StoreConfig, liveness, open_store

STDERR_DRAIN_TIMEOUT = 2.0
TAKEOVER_WAIT = 5.0


@dataclass(frozen=True)
class Settings:
    """Everything the admin configured; nothing here comes from the environment."""

    pool: Pool
    state_dir: str
    wait: float
    mtu: int | None  # None: the most the device's kind of channel carries
    client: str | None
    bridge: BridgePlan
    routes: list[str] = field(default_factory=list)  # announced to the client
    client_nets: list[str] = field(default_factory=list)  # routed to the client
    dns: list[str] = field(default_factory=list)  # announced to the client
    address: str | None = None  # reserved for this key
    pool6: Pool | None = None  # dual stack: the IPv6 pool (``pool`` is then the IPv4 one)
    address6: str | None = None  # reserved for this key in pool6
    max_sessions: int = 1  # live sessions per client identity
    refuse_extra: bool = False  # beyond the limit: refuse the new one, not end the oldest
    up: list[str] | None = None  # hook argv
    down: list[str] | None = None  # hook argv
    hook_timeout: float = 10.0
    pool_label: str = ""  # --pool as given: a CIDR or a config file pool name
    clients: dict[str, ClientSection] = field(default_factory=dict)  # from the config file
    db_timeout: float = 10.0  # bounded wait for a lease database another process holds
    max_leases: int | None = None  # live sessions per client identity; None: no limit
    store: StoreConfig | None = None  # the config file's [store]; None: SQLite in state_dir


def local_addresses() -> list[str]:
    """Addresses already on this host's interfaces: never to be handed out."""
    return [
        a.address.split("%", 1)[0]  # an IPv6 link-local address carries its zone
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    ]


def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run the session; return the exit code. Errors reach the client as one line."""
    found: discover.SessionDevice | None = None

    def session() -> None:
        nonlocal found
        with contextlib.ExitStack() as undo:
            try:
                found = discover.find_device(settings.wait, environ)
                _run(settings, environ, found, undo)
            finally:
                ignore_end_signals()  # from here on, nothing may cut the cleanup short

    status = _exit_status(session)
    end_connection(found)
    return status


def _exit_status(step: Callable[[], None]) -> int:
    """Run ``step``; an error becomes one line (to the client and syslog) and an exit code."""
    try:
        step()
    except Interrupted as e:
        log.error(f"interrupted by {e} before the session was set up; reconnect")
        return 1
    except TunhelperError as e:
        log.error(str(e))
        return e.exit_code
    return 0


def _run(
    settings: Settings,
    environ: Mapping[str, str],
    found: discover.SessionDevice,
    undo: contextlib.ExitStack,
) -> None:
    device = found.device
    pool, pool6 = settings.pool, settings.pool6
    ipv6 = pool.version == 6 or pool6 is not None
    gatewayless = pool.gateway is None or (pool6 is not None and pool6.gateway is None)
    if device.mode == "tun" and gatewayless:
        raise TunhelperError(
            "this pool has no gateway (--bridge without --gateway), so it serves ethernet "
            "links only: connect with -o Tunnel=ethernet (tunhelper connect --tap)"
        )
    v6pool = pool6 or (pool if pool.version == 6 else None)
    gateway6 = None if v6pool is None or v6pool.gateway is None else str(v6pool.gateway)
    if device.mode == "tap" and v6pool is not None and not settings.bridge.managed:
        gateway6 = bridge.admin_gateway6(settings.bridge, v6pool.name, gateway6)
    mtu = configure.choose_mtu(device.mode, settings.mtu, settings.bridge, ipv6)
    command = environ.get("SSH_ORIGINAL_COMMAND")
    describe = wants_description(command)
    if command and not describe:
        log.info(f"ignoring the command the client sent: {command[:80]!r}")
    client = identity.client_identity(settings.client, environ)
    settings, reserved_for_others = _for_client(settings, client)
    if device.mode == "tap" and settings.client_nets:
        # A tap is a port of the pool's bridge: its route would live on the bridge and
        # outlive a killed helper, pointing at an address another client may get next.
        raise TunhelperError(
            f"--client-net {settings.client_nets[0]} is routed through tun links only: "
            "connect without --tap (ssh -w any), or use a key without --client-net for tap"
        )

    store = open_store(settings.state_dir, settings.db_timeout, settings.store)
    undo.callback(store.close)
    alive = liveness.Liveness()
    _make_room(store, settings, client, alive)
    here = liveness.current(found.holder_pid, found.holder_start, device.name)
    local = [*local_addresses(), *reserved_for_others]
    leases = []
    for p, reserved in ((pool, settings.address), (pool6, settings.address6)):
        if p is None:
            continue
        grant = store.allocate(
            Request(
                pool=p.name,
                first=p.first,
                last=p.last,
                excluded=p.excluded(local),
                client=client,
                owner=here,
                address_of=p.address,
                reserved=None if reserved is None else p.offset(reserved),
            ),
            alive,
        )
        undo.callback(_quietly, "release the lease", store.release, grant)
        leases.append(grant)
    lease, lease6 = leases[0], (leases[1] if pool6 is not None else None)
    _check_limit(store, settings, client, alive)
    _settle_sessions(store, settings, client, alive, lease)

    gateway = None if pool.gateway is None else str(pool.gateway)
    if pool.version == 6:
        gateway = gateway6  # on the admin's bridge, perhaps the bridge's own address
    if device.mode == "tun":
        assert gateway is not None
        applied = [configure.point_to_point(device, gateway, lease.address, mtu)]
        if lease6 is not None and gateway6 is not None:
            undo.callback(_quietly, "deconfigure the device", configure.undo, applied[0])
            applied.append(configure.point_to_point(device, gateway6, lease6.address, mtu))
        prefix = 32 if pool.version == 4 else 128
        prefix6 = 128
    else:  # the bridge carries the gateways with their pools' prefixes (IPv6: nodad)
        plan, state_dir = settings.bridge, settings.state_dir
        applied = [configure.bridge_port(device, plan, mtu, state_dir)]
        prefix = bridge.announced_prefix(plan, pool.name)
        prefix6 = prefix if pool6 is None else bridge.announced_prefix(plan, pool6.name)
    undo.callback(_quietly, "deconfigure the device", configure.undo, applied[-1])
    if device.mode == "tun":
        _filter_sources(device)
    if settings.client_nets:  # tun only (refused on tap above): the device says where
        nets = configure.client_networks(device, settings.client_nets, settings.state_dir)
        applied.append(nets)
        undo.callback(_quietly, "remove the client's networks", configure.undo, nets)

    v6 = lease6 or (lease if pool.version == 6 else None)
    remote_address, remote_port = hooks.remote(environ.get("SSH_CONNECTION"))
    values = {
        "device": device.name,
        "mode": device.mode,
        "address": lease.address,
        "gateway": gateway,
        "prefix": prefix,
        # the IPv6 values whenever the session has IPv6, also from an IPv6-only pool
        "address6": None if v6 is None else v6.address,
        "gateway6": gateway6,
        "prefix6": None if v6 is None else prefix6,
        "pool": pool.name,
        "client": client,
        "remote_address": remote_address,
        "remote_port": remote_port,
    }
    if settings.up:
        hooks.run(
            "up", settings.up, hooks.environment({"event": "up", **values}), settings.hook_timeout
        )
    down = None
    if settings.down:
        down = {"argv": settings.down, "values": values, "timeout": settings.hook_timeout}
        undo.callback(_run_down_hook, down, device, "the session was not set up")

    announcement = Announcement(
        lease.address, prefix, gateway, device.mode, mtu, settings.routes, settings.dns
    )
    if lease6 is not None:
        announcement = replace(
            announcement, address6=lease6.address, prefix6=prefix6, gateway6=gateway6
        )
    announce(announcement, describe)
    also = "" if lease6 is None else f" address6 {lease6.address} gateway6 {gateway6}"
    log.info(
        f"session start: client {client} address {lease.address} gateway {gateway}{also} "
        f"{device.mode} device {device.name} sshd pid {found.holder_pid}"
    )
    record = {
        "state_dir": settings.state_dir,
        "db_timeout": settings.db_timeout,
        "store": None if settings.store is None else asdict(settings.store),
        "leases": [asdict(x) for x in leases],
        "applied": [configure.to_record(a) for a in applied],
        "down": down,
        "session": {**found._asdict(), "device": found.device._asdict()},
    }
    become_holder(record, [lease.address, device.name, settings.state_dir])
    _, reason = hold(found)  # only if the slim holder could not be started
    log.info(f"session end: address {lease.address} device {device.name}: {reason}")
    if down is not None:  # with the reason of the real end, not of an unwinding
        down["reason"] = reason


def _for_client(settings: Settings, client: str) -> tuple[Settings, list[str]]:
    """Apply the config file's ``[client ...]`` of this client (argv still wins), and
    list the addresses it reserves for other clients of this pool."""
    pools = [p for p in (settings.pool, settings.pool6) if p is not None]
    names = (settings.pool_label, *(p.name for p in pools))
    section = settings.clients.get(client)
    if section is not None and section.applies_to(*names):
        v4 = next((a for a in section.addresses if ":" not in a), None)
        v6 = next((a for a in section.addresses if ":" in a), None)
        if settings.pool6 is None:  # one pool: its family's reservation
            v4, v6 = (v6, None) if settings.pool.version == 6 else (v4, None)
        settings = replace(
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


def _make_room(store, settings: Settings, client: str, alive: liveness.Liveness) -> None:
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
    _end_sessions(oldest, client, limit)
    tokens = {lease.token for lease in oldest}
    deadline = time.monotonic() + TAKEOVER_WAIT
    while time.monotonic() < deadline:
        if not [x for x in _live_sessions(store, pool, client, alive) if x.token in tokens]:
            return
        time.sleep(0.05)
    raise TunhelperError(
        f"the previous session of this client did not end within {TAKEOVER_WAIT:g}s; try again"
    )


def _settle_sessions(
    store, settings: Settings, client: str, alive: liveness.Liveness, mine: Lease
) -> None:
    """Enforce ``--max-sessions`` again after our own allocation, against bursts.

    :func:`_make_room` counts before allocating, so a burst of one key's connections can
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
        _end_sessions(live[:-limit], client, limit)


def _live_sessions(store, pool: str, client: str, alive: liveness.Liveness) -> list[Lease]:
    """The client's live sessions in ``pool``, in allocation order (oldest first)."""
    live = [x for x in store.leases(pool, client) if x.state == ACTIVE and alive(x)]
    return sorted(live, key=lambda x: (x.since, x.token))


def _end_sessions(leases: list[Lease], client: str, limit: int) -> None:
    for lease in leases:
        log.info(f"ending session {lease.address} of {client}: --max-sessions {limit}")
        liveness.end(lease)


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


def _check_limit(store, settings: Settings, client: str, alive: liveness.Liveness) -> None:
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


def finish(record: dict, reason: str) -> int:
    """The slim holder's end of the session: give back what the helper took, as serve would.

    A record holds ``leases`` (one per family); one written before dual stack held a
    single ``lease``: a holder started by the older helper must still release it.
    """
    leases = [Lease(**x) for x in record.get("leases") or [record["lease"]]]
    lease = leases[0]
    s = record["session"]
    found = discover.SessionDevice(DeviceInfo(**s["device"]), s["holder_pid"], s["holder_start"])
    log.info(f"session end: address {lease.address} device {found.device.name}: {reason}")

    def give_back() -> None:
        with contextlib.ExitStack() as undo:
            config = record.get("store")
            store = open_store(
                record["state_dir"],
                record.get("db_timeout", 10.0),
                None if config is None else StoreConfig(**config),
            )
            undo.callback(store.close)
            for grant in leases:
                undo.callback(_quietly, "release the lease", store.release, grant)
            for applied in record["applied"]:
                undo.callback(
                    _quietly,
                    "deconfigure the device",
                    configure.undo,
                    configure.from_record(applied),
                )
            if record.get("down"):
                undo.callback(_run_down_hook, record["down"], found.device, reason)

    status = _exit_status(give_back)
    end_connection(found)
    return status


def _run_down_hook(down: dict, device: DeviceInfo, reason: str) -> None:
    """The down hook, with the bytes the device moved; its failure is only reported."""
    counters = platform.link_counters(device)
    values = {
        **down["values"],
        "event": "down",
        "reason": down.get("reason", reason),
        "bytes_in": None if counters is None else counters[0],
        "bytes_out": None if counters is None else counters[1],
    }
    try:
        hooks.run("down", down["argv"], hooks.environment(values), down["timeout"])
    except TunhelperError as e:
        log.error(str(e))


def _quietly(what: str, step, *args) -> None:
    """Run one cleanup step; a failure is reported but never stops the others."""
    try:
        step(*args)
    except Exception as e:  # noqa: BLE001 - cleanup must go on whatever failed
        log.error(f"could not {what}: {e}")


def end_connection(found: discover.SessionDevice | None) -> None:
    """End the ssh connection whose tunnel we served, if it is still there.

    Otherwise the client's ssh sits on a tunnel nobody configures. The client must
    see why first: our stdio is handed back (so sshd reads what we wrote, then EOF)
    and sshd is stopped only once it has closed its end of our stderr, that is,
    after it has passed everything we wrote on to the client.
    """
    if found is not None:
        pid, start = found.holder_pid, found.holder_start
    else:
        near = discover.find_holder()
        if near is None:
            return  # no tunnel: our exit ends the session by itself
        pid, start = near
    if not liveness.running(pid, start):
        return
    pipe = _stderr_pipe()
    _detach_stdio()
    if pipe is not None:
        deadline = time.monotonic() + STDERR_DRAIN_TIMEOUT
        while platform.holds_pipe(pid, pipe) and time.monotonic() < deadline:
            time.sleep(0.01)
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if abs(proc.create_time() - start) <= 1.0:
            proc.terminate()


def _stderr_pipe() -> int | None:
    """The inode of the pipe on our stderr, if it is one (sshd's, without a pty)."""
    try:
        st = os.fstat(2)
    except OSError:
        return None
    return st.st_ino if stat.S_ISFIFO(st.st_mode) else None


def _detach_stdio() -> None:
    """Point fds 0-2 at /dev/null: sshd then sees EOF after all we wrote."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
