"""``tunhelper connect``: the client side configures itself from what the server announced.

Runs the system ssh with ``-w any`` and the versioned describe request, finds the
local device that its own ssh child opened (the same discovery code as the server,
pointed at the child), configures it from the announcement, and holds until ssh
ends or a signal; then removes what it configured. Replaces the guide's
``LocalCommand (sleep 3; ifconfig ...) &``.

Around that one link (issue 18): its own ssh connection whatever ssh_config says
(:mod:`sshconfig`), a full tunnel by policy routing (:mod:`fulltunnel`), reconnect and
failover across destinations (:mod:`reconnect`), an nftables kill-switch, systemd's
notify protocol (:mod:`notify`), and a state file that a later connect or disconnect
replays after a SIGKILL (:mod:`state`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil

from tunhelper import family, log, platform, protocol
from tunhelper.client import background, diagnose, fulltunnel, notify, reconnect, sshconfig
from tunhelper.client.state import State, recover
from tunhelper.errors import TunhelperError, UsageError
from tunhelper.link import configure, discover
from tunhelper.link.hold import SIGNAL, hold
from tunhelper.signals import Interrupted, catch_end_signals, ignore_end_signals

# Exit codes: why connect ended.
EXIT_REQUESTED = 0  # SIGINT, SIGTERM or 'tunhelper disconnect'
EXIT_FAILED = 1  # never established: refused by the server, no device, no announcement
EXIT_CONNECTION_ENDED = 3  # ssh ended after the link was up (server, network)
EXIT_DEVICE_GONE = 4  # the local device was deleted under us
EXIT_AUTH = 5  # ssh could not authenticate (key, host key): never retried
EXIT_INTERRUPTED = 130  # a signal before the link was up

DEVICE_WAIT = 5.0  # ssh opens its device before it asks for the channel: normally instant


@dataclass(frozen=True)
class Options:
    destination: str
    ssh_cmd: list[str]
    tap: bool
    wait: float
    as_json: bool
    background: bool
    pid_file: str | None
    more: tuple[str, ...] = ()  # further gateways, for failover
    reconnect: bool = False
    shuffle: bool = False
    kill_switch: bool = False
    multiplex: bool = False  # keep the user's ControlMaster/ControlPath
    aes: bool = True  # put AES-GCM first when the CPU has AES and the user chose no ciphers


class Failed(TunhelperError):
    """An attempt that did not bring the link up; ``retry``: whether another may help."""

    def __init__(self, message: str, code: int = EXIT_FAILED, retry: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retry = retry


@dataclass
class Link:
    """What one attempt learned and took, for the loop around it."""

    destination: str
    unit: int | None = None  # the local unit number, asked for again on reconnect


def ssh_argv(
    options: Options, destination: str | None = None, added: list[str] = (), unit: int | None = None
) -> list[str]:
    """ssh's own options first: ssh keeps the first value it sees, and -w sets Tunnel.

    The user's ``-e`` options come before ours, so an explicit choice there wins; ours
    come before the configuration files, which they override.
    """
    argv = [*options.ssh_cmd, *added, "-o", "ExitOnForwardFailure=yes"]
    if options.tap:
        argv += ["-o", "Tunnel=ethernet"]
    tunnel = "any" if unit is None else f"{unit}:any"
    return [*argv, "-w", tunnel, "--", destination or options.destination, protocol.REQUEST]


def run(options: Options) -> int:
    if os.geteuid() != 0:
        raise TunhelperError("connect must run as root: it configures the local tunnel device")
    catch_end_signals()
    for path in recover():
        log.info(f"connect: restored what a killed connect left ({path})")
    state = State()
    try:
        try:
            return _loop(options, state)
        finally:
            ignore_end_signals()
            state.clear()
    except Interrupted as e:
        log.error(f"interrupted by {e} before the link was up")
        return EXIT_INTERRUPTED


def _loop(options: Options, state: State) -> int:
    destinations = reconnect.order((options.destination, *options.more), options.shuffle)
    configs = {d: sshconfig.resolve(options.ssh_cmd, d) for d in destinations}
    aes = options.aes and platform.client.cpu_has_aes()
    builtin = sshconfig.default_ciphers(options.ssh_cmd) if aes else None
    added = {
        d: sshconfig.added_options(
            c, multiplex=options.multiplex, cpu_aes=aes, builtin_ciphers=builtin
        )
        for d, c in configs.items()
    }
    peers = sorted({p for c in configs.values() for p in sshconfig.peer_addresses(c)})
    if options.kill_switch:
        if not peers:
            raise TunhelperError(
                "--kill-switch: cannot resolve the first hop of any destination (ssh -G); "
                "with a ProxyCommand, name the gateway with ProxyJump instead"
            )
        state.add([_kill_switch(None, peers)])
    index, failures, ready, unit = 0, 0, False, None
    last = len(destinations) - 1
    while True:
        destination = destinations[index % len(destinations)]
        link = Link(destination, unit)
        try:
            kind, reason = _attempt(options, link, added[destination], peers, state, ready)
        except Interrupted:
            if ready:  # the user ended a reconnecting link: a request, not a failure
                return EXIT_REQUESTED
            raise
        except Failed as e:
            if not e.retry or (not options.reconnect and index >= last):
                log.error(str(e))
                return e.code
            log.error(f"{destination}: {e}")
            failures += 1
        else:
            ready, unit, failures = True, link.unit, 0
            if kind == SIGNAL:
                return EXIT_REQUESTED
            if not options.reconnect and index >= last:
                log.error(f"{reason}; the link is down")
                return EXIT_DEVICE_GONE if kind == platform.DEVICE_GONE else EXIT_CONNECTION_ENDED
            log.error(f"{destination}: {reason}; the link is down, reconnecting")
        index += 1
        try:
            _wait_before_retry(failures, destinations[index % len(destinations)])
        except Interrupted:
            if ready:
                return EXIT_REQUESTED
            raise


def _wait_before_retry(failures: int, destination: str) -> None:
    seconds = reconnect.delay(failures)
    notify.notify(f"STATUS=reconnecting to {destination} in {seconds:.0f}s")
    log.info(f"connect: trying {destination} in {seconds:.1f}s")
    time.sleep(seconds)  # a signal interrupts it (Interrupted)


def _kill_switch(device: str | None, peers: list[tuple[str, int]]) -> dict:
    try:
        return platform.client.kill_switch(str(os.getpid()), device, peers)
    except OSError as e:
        raise TunhelperError(f"could not install the kill-switch: {e}") from None


def _attempt(
    options: Options,
    link: Link,
    added: list[str],
    peers: list[tuple[str, int]],
    state: State,
    ready: bool,
) -> tuple[str, str]:
    """One ssh connection: up, held, down. Returns why a link that came up ended
    (``hold``'s kind and a reason); raises :class:`Failed` if it never came up."""
    unit = link.unit
    prefix = "tap" if options.tap else "tun"
    if unit is not None and platform.device_info(f"{prefix}{unit}") is not None:
        unit = None  # taken meanwhile: any unit rather than a failed open
    argv = ssh_argv(options, link.destination, added, unit)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as e:
        raise Failed(f"cannot run {options.ssh_cmd[0]!r}: {e.strerror}", retry=False) from None
    tee = _Tee(proc)  # the server's refusal reaches the user as the server wrote it
    ssh = psutil.Process(proc.pid)  # survives --background, where ssh is no longer our child
    record = {"kind": "process", "pid": proc.pid, "start": ssh.create_time()}
    with contextlib.ExitStack() as undo:
        undo.callback(state.remove, [record])  # after _stop: only if ssh outlived it
        state.add([record])
        undo.callback(_stop, proc, ssh, tee)
        return _session(options, proc, tee, link, peers, state, undo, ready)


def _session(
    options: Options,
    proc: subprocess.Popen,
    tee: _Tee,
    link: Link,
    peers: list[tuple[str, int]],
    state: State,
    undo: contextlib.ExitStack,
    ready: bool,
) -> tuple[str, str]:
    line, closed = _first_line(proc, options.wait)
    if line is None:
        if closed:  # the server said why on stderr, above; ssh is about to exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(diagnose.END_WAIT)  # ssh may stay on an open tunnel
            tee.join(0.3)  # what ssh wrote is in by now: it went out before the EOF
            code = proc.poll()
            if reconnect.is_auth_failure(tee.text):
                raise Failed("ssh could not authenticate: not retrying", EXIT_AUTH, retry=False)
            why = diagnose.explain(tee.text, code, options.tap)  # issue 19 items 4, 5
            if why is not None:
                raise Failed(why, retry=False)
            status = "the connection was closed" if code is None else f"ssh exited ({code})"
            # The server's helper says why in a "tunhelper:" line (relayed above), then
            # ends the connection: a refusal, never retried. ssh alone: the network.
            refused = reconnect.is_refusal(tee.text) or code not in (None, 255)
            message = f"{status} before the server announced an address"
            raise Failed(message + ("; the server refused" if refused else ""), retry=not refused)
        raise Failed(
            f"no announcement from the server within {options.wait:g}s: is tunhelper the "
            "forced command for this key?"
        )
    ann = protocol.parse(line)
    found = discover.find_device_of(psutil.Process(proc.pid), DEVICE_WAIT)
    if found is None:
        raise Failed(
            "ssh opened no local tunnel device: check /dev/net/tun, and that ssh runs as root",
            retry=False,
        )
    link.unit = _unit(found.device.name)
    applied = configure.apply_local(found.device, ann)
    undo.callback(log.quietly, "remove the local configuration", configure.undo, applied)
    if ann.address6 is not None:
        applied6 = configure.apply_local6(found.device, ann)
        undo.callback(log.quietly, "remove the local configuration", configure.undo, applied6)
    full = fulltunnel.families(ann)
    routes = fulltunnel.other_routes(ann, full)
    if routes:
        for applied_routes in configure.routes_by_family(found.device, routes, _via(ann)):
            undo.callback(
                log.quietly, "remove the local configuration", configure.undo, applied_routes
            )
    if full:
        _full_tunnel(found, full, proc.pid, state, undo)
    if options.kill_switch:
        if not full and not ready:
            log.warning(
                "--kill-switch on a link that is not a full tunnel: only the tunnel's "
                "routes and the ssh connection are reachable"
            )
        _kill_switch(found.device.name, peers)  # the same table, replaced whole
        undo.callback(log.quietly, "remove the local configuration", _kill_switch, None, peers)
    if ann.dns:
        _apply_dns(found.device, ann.dns, bool(full), state, undo)
    try:  # from the status line on, a signal is a request to end, not a failure
        _report(found, ann, options.as_json, link.destination)
        notify.notify(*(() if ready else ("READY=1",)), f"STATUS={_status_text(found, ann)}")
        if options.background and not ready:
            pid_file = options.pid_file or background.default_pid_file(found.device.name)
            background.detach(pid_file, state.moved)
            undo.callback(background.remove_pid_file, pid_file)
        kind, reason, _ = hold(found)
    except Interrupted as e:
        kind, reason = SIGNAL, f"signal {e}"
    log.info(f"connect: {found.device.name} {ann.address} ended: {reason}")
    if kind == platform.PROCESS_ENDED:
        reason = f"the ssh connection ended ({reason})"
    return kind, reason


def _unit(name: str) -> int | None:
    digits = name.lstrip("tunap")
    return int(digits) if digits.isdigit() else None


def _full_tunnel(
    found: discover.SessionDevice,
    versions: list[int],
    ssh_pid: int,
    state: State,
    undo: contextlib.ExitStack,
) -> None:
    """Everything through the link, the ssh connection's own peer excepted."""
    peer = fulltunnel.ssh_peer(ssh_pid)
    if peer is None:
        raise Failed("cannot find the TCP peer of ssh: not routing everything", retry=False)
    if platform.client.full_tunnel_active():
        raise Failed(
            "another full-tunnel connect is running (ip rule 7460-7462): end it first",
            retry=False,
        )
    try:
        records = platform.client.full_tunnel(found.device.index, versions, peer)
    except Exception as e:  # noqa: BLE001 - one line, whatever netlink said
        raise Failed(f"could not route everything through {found.device.name}: {e}") from e
    state.add(records)
    undo.callback(state.remove, records)


def _status_text(found: discover.SessionDevice, ann: protocol.Announcement) -> str:
    text = f"{found.device.name} {ann.address}"
    return text + (f" {ann.address6}" if ann.address6 else "")


class _Tee:
    """ssh's stderr, passed on line by line as it comes, and kept to tell an
    authentication failure (never retried) from a network one."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._run, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            if len(self.text) < 65536:
                self.text += raw.decode("utf-8", "replace")
            with contextlib.suppress(OSError):
                os.write(2, raw)

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)


def _via(ann: protocol.Announcement) -> dict[int, str]:
    """Where announced routes go, by IP version: on tun the device itself (empty); on
    tap the server's gateway of the route's family, which the server must have given."""
    if ann.mode == "tun":
        return {}
    via = {family.of(g): g for g in (ann.gateway, ann.gateway6) if g is not None}
    for route in ann.routes:
        version = family.of(route)
        if version not in via:
            raise TunhelperError(
                f"the server announced route {route} on a tap link without an "
                f"IPv{version} gateway to reach it through"
            )
    return via


def _apply_dns(
    device: platform.DeviceInfo,
    servers: list[str],
    full: bool,
    state: State,
    undo: contextlib.ExitStack,
) -> None:
    """Use the system's standard way if it has one. Without one, a full tunnel replaces
    /etc/resolv.conf for the link's life (the old resolvers are outside the tunnel, so
    queries would leak or fail); a split tunnel leaves it alone and says so."""
    listed = ", ".join(servers)
    try:
        tool = platform.apply_dns(device, servers)
    except OSError as e:
        log.error(f"could not set the announced DNS servers {listed}: {e}")
        return
    if tool is not None:
        undo.callback(
            log.quietly, "remove the local configuration", platform.revert_dns, device, tool
        )
        return
    if not full:
        log.error(
            f"the server announced DNS servers {listed}; this system has neither "
            "resolvectl nor resolvconf, so set them by hand"
        )
        return
    try:
        record = platform.client.swap_resolv_conf(servers)
    except OSError as e:
        log.error(f"could not set the announced DNS servers {listed}: {e}")
        return
    state.add([record])
    undo.callback(state.remove, [record])


def _first_line(proc: subprocess.Popen, timeout: float) -> tuple[str | None, bool]:
    """The server's first line (``None`` if none), and whether ssh's stdout closed.

    Bounded, no busy loop. A closed stdout is a refusal, not a timeout: the message
    must not send the user looking for a slow server.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                return None, False
            chunk = os.read(fd, 4096)
            if not chunk:
                return None, True
            if len(buffer) > 65536:
                return None, False
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode("utf-8", errors="replace"), False


def _report(
    found: discover.SessionDevice,
    ann: protocol.Announcement,
    as_json: bool,
    destination: str | None = None,
) -> None:
    if as_json:
        status = {
            "device": found.device.name,
            "address": ann.address,
            "prefix": ann.prefix,
            "gateway": ann.gateway,
            "mode": ann.mode,
            "mtu": ann.mtu,
            "routes": ann.routes,
            "dns": ann.dns,
            "ssh_pid": found.session_pid,
        }
        if destination is not None:
            status["destination"] = destination
        if ann.address6 is not None:
            status.update(address6=ann.address6, prefix6=ann.prefix6, gateway6=ann.gateway6)
        text = json.dumps(status)
    else:
        address = f"{ann.address}/{ann.prefix}" if ann.mode == "tap" else ann.address
        text = f"{found.device.name} {address} gateway {ann.gateway or '-'} mtu {ann.mtu}"
        if ann.address6 is not None:
            address6 = f"{ann.address6}/{ann.prefix6}" if ann.mode == "tap" else ann.address6
            text += f" {address6} gateway {ann.gateway6}"
    print(text, flush=True)


def _stop(proc: subprocess.Popen, ssh: psutil.Process, tee: _Tee | None = None) -> None:
    """End our ssh (the server then ends the session and releases the lease)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        ssh.terminate()  # psutil checks the start time: never a reused pid
        try:
            ssh.wait(5)
        except psutil.TimeoutExpired:
            ssh.kill()
            ssh.wait(5)
    with contextlib.suppress(ChildProcessError, OSError):
        proc.wait(0)  # reap it if it is still our child
    if tee is not None:
        tee.join()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def connect_command(args: argparse.Namespace) -> int:
    """The ``connect`` command (tunhelper.commands): a profile's words join argv's."""
    from tunhelper import options

    if args.profile is not None:
        from tunhelper.client import profile

        if args.destination:
            raise UsageError("give the destinations in the profile or on the command line")
        # as if the profile's words followed argv's: its options win, flags add up
        args = options.connect_parser().parse_args(profile.read(args.profile), namespace=args)
    if not args.destination:
        raise UsageError("connect needs a DESTINATION (or --profile NAME)")
    destinations = args.destination
    return run(
        options.build(Options, args, destination=destinations[0], more=tuple(destinations[1:]))
    )
