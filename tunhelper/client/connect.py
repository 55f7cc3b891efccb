"""``tunhelper connect``: a state machine around ``ssh -w any`` that fails closed.

Runs the system ssh with ``-w any`` and the versioned describe request, finds the
local device its own ssh child opened, configures it from the announcement
(:mod:`link`), and holds until ssh ends or a signal. Around that one link: its own
ssh connection whatever ssh_config says (:mod:`sshconfig`), a full tunnel by policy
routing (:mod:`fulltunnel`), reconnect and failover (:mod:`reconnect`), the
kill-switch, systemd's notify protocol (:mod:`notify`), and one journal of what it
changed (:mod:`journal`) that a later connect or disconnect replays after a SIGKILL.

The states and what passes in each are :mod:`policy`'s; :mod:`machine` applies them.
With ``--kill-switch``, only the user's request ends connect: SIGINT, SIGTERM (also
from ``tunhelper disconnect`` and ``systemctl stop``), SIGHUP, SIGQUIT. Every failure
(a refusal, a changed host key, authentication, a lost link without ``--reconnect``,
an internal error) enters ``blocked``: one line on stderr and in ``tunhelper status``
saying what is wrong and what to do, and connect keeps running with the table in
place. Without the kill-switch, failures end connect with the exit codes below.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from dataclasses import dataclass, field

from tunhelper import log, platform, protocol
from tunhelper.client import background, link, reconnect, sshconfig
from tunhelper.client import journal as journal_
from tunhelper.client.journal import Journal
from tunhelper.client.link import EXIT_AUTH, EXIT_FAILED, Failed  # noqa: F401 - exit codes
from tunhelper.client.machine import HAND_OVER, Machine
from tunhelper.client.policy import State
from tunhelper.errors import TunhelperError, UsageError
from tunhelper.link.hold import SIGNAL, hold
from tunhelper.platform import clientbase
from tunhelper.signals import Interrupted, catch_end_signals, ignore_end_signals

# Exit codes: why connect ended.
EXIT_REQUESTED = 0  # SIGINT, SIGTERM or 'tunhelper disconnect' (also ending a blocked one)
EXIT_CONNECTION_ENDED = 3  # ssh ended after the link was up (without --reconnect)
EXIT_DEVICE_GONE = 4  # the local device was deleted under us
EXIT_INTERRUPTED = 130  # a signal before the link was up (no kill-switch)
EXIT_INTERNAL = 70  # a bug: reported in one line, never a traceback


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
    allow_lan: bool = False  # under the kill-switch: let the private networks through
    multiplex: bool = False  # keep the user's ControlMaster/ControlPath
    aes: bool = True  # put AES-GCM first when the CPU has AES and the user chose no ciphers


@dataclass
class Plan:
    """What is decided before anything is blocked: the gateways in order, ssh's added
    options per gateway, and the first hops' addresses (resolved now, so ssh needs no
    DNS outside the tunnel). ``resolved``: those addresses per gateway, kept in the
    journal so that a connect started while a kill-switch blocks DNS (after a kill, or
    to take a blocked one over) still knows where its gateways are."""

    destinations: list[str]
    added: dict[str, list[str]]
    peers: tuple[tuple[str, int], ...]
    resolved: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


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
    lacking = clientbase.missing(
        platform.client.CAPABILITIES, {"firewall": options.kill_switch or options.allow_lan}
    )
    if lacking:
        raise TunhelperError(f"--kill-switch is not supported on this system ({lacking[0]})")
    if options.allow_lan and not options.kill_switch:
        raise TunhelperError("--allow-lan only means something with --kill-switch")
    if options.background:
        background.start(options.pid_file)  # the parent exits once the child is ready
    catch_end_signals()
    handed = _catch_hand_over()
    journal = Journal()
    machine = None
    try:
        try:
            plan, failure = _plan_or_block(options)
            machine = Machine(
                journal, kill_switch=options.kill_switch, peers=plan.peers,
                allow_lan=options.allow_lan,
            )  # fmt: skip
            for path in machine.start(plan.destinations[0]):
                log.info(f"connect: gave back what a killed connect left ({path})")
            journal.update(resolved=plan.resolved)
            if failure is not None:
                return _failed(machine, str(failure), FIX_AND_RECONNECT, EXIT_FAILED)
            return _run(options, plan, machine)
        finally:
            ignore_end_signals()
            if machine is not None:
                log.quietly("give back what connect changed", machine.finish, bool(handed))
            journal.close()
            if background.written():
                background.remove_pid_file(background.written())
    except Interrupted as e:
        log.error(f"interrupted by {e} before the link was up")
        return EXIT_INTERRUPTED


class HandedOver(Interrupted):
    """A new kill-switch connect took the table over (SIGUSR1): end, keeping it."""


def _catch_hand_over() -> list[int]:
    """SIGUSR1 ends connect like a request, except that the table stays: it belongs to
    the connect that sent it. Returns a list that holds the signal once it came."""
    came: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if not came:
            came.append(signum)
            raise HandedOver(signum)

    signal.signal(HAND_OVER, handler)
    return came


FIX_AND_RECONNECT = "fix it, then 'tunhelper disconnect' and connect again"


def _plan_or_block(options: Options) -> tuple[Plan, TunhelperError | None]:
    """The plan; under the kill-switch a plan that fails (no address for any gateway,
    ssh -G failing) is no reason to open the host: an empty plan and the failure, to
    enter blocked with. The table a killed predecessor left stays in force meanwhile."""
    try:
        return _plan(options), None
    except TunhelperError as e:
        if not options.kill_switch:
            raise
        return Plan([options.destination], {}, ()), e


def _plan(options: Options) -> Plan:
    destinations = reconnect.order((options.destination, *options.more), options.shuffle)
    known = journal_.resolved()  # what earlier connects resolved, for a blocked DNS
    configs = {d: sshconfig.resolve(options.ssh_cmd, d) for d in destinations}
    aes = options.aes and platform.client.cpu_has_aes()
    builtin = sshconfig.default_ciphers(options.ssh_cmd) if aes else None
    added, peers, resolved = {}, set(), {}
    for d, c in configs.items():
        added[d] = sshconfig.added_options(
            c, multiplex=options.multiplex, cpu_aes=aes, builtin_ciphers=builtin
        )
        addresses = sshconfig.peer_addresses(c) or known.get(d, [])
        resolved[d] = addresses
        if options.kill_switch:
            added[d] += sshconfig.pinned(c, addresses)
        peers.update(addresses)
    if options.kill_switch and not peers:
        raise TunhelperError(
            "--kill-switch: cannot resolve the first hop of any destination (ssh -G); "
            "with a ProxyCommand, name the gateway with ProxyJump instead"
        )
    return Plan(destinations, added, tuple(sorted(peers)), resolved)


def _run(options: Options, plan: Plan, machine: Machine) -> int:
    """The loop, and what ends it: the user's request, or a failure (blocked under the
    kill-switch, else an exit code)."""
    try:
        return _loop(options, plan, machine)
    except Interrupted:
        return EXIT_REQUESTED if machine.ever_connected else EXIT_INTERRUPTED
    except Failed as e:
        return _failed(machine, str(e), e.hint, e.code)
    except TunhelperError as e:
        return _failed(machine, str(e), "", EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - a bug must block, never open the host
        what = f"internal error: {type(e).__name__}: {e}"
        return _failed(machine, what, "please report it; 'tunhelper disconnect' ends it", 70)


def _failed(machine: Machine, error: str, hint: str, code: int) -> int:
    """Without the kill-switch: one line and the exit code. With it: blocked until the
    user asks (the table stays); then ``code``, so a unit shows why it had failed."""
    if not machine.kill_switch:
        log.error(f"{error}{'; ' + hint if hint else ''}")
        machine.failed(error, hint)
        return code
    try:
        machine.block(error, hint)
    except Exception as e:  # noqa: BLE001 - keep the last table, keep waiting
        log.error(f"blocked, but the kill-switch could not be rewritten: {e}")
    background.ready(code)
    try:
        while True:
            signal.pause()  # only an end signal (Interrupted) leaves
    except Interrupted:
        return code


def _loop(options: Options, plan: Plan, machine: Machine) -> int:
    destinations = plan.destinations
    index, failures, unit = 0, 0, None
    last = len(destinations) - 1
    while True:
        destination = destinations[index % len(destinations)]
        try:
            kind, reason, unit = _attempt(options, plan, machine, destination, unit)
        except Failed as e:
            if not e.retry or (not options.reconnect and index >= last):
                raise
            log.error(f"{destination}: {e}")
            failures += 1
        else:
            failures = 0
            if kind == SIGNAL:
                return EXIT_REQUESTED
            if not options.reconnect and index >= last:
                code = EXIT_DEVICE_GONE if kind == platform.DEVICE_GONE else EXIT_CONNECTION_ENDED
                raise Failed(f"{reason}; the link is down", code, hint="connect again")
            log.error(f"{destination}: {reason}; the link is down, reconnecting")
        index += 1
        following = destinations[index % len(destinations)]
        state = State.RECONNECTING if machine.ever_connected else State.CONNECTING
        machine.enter(state, destination=following)
        seconds = reconnect.delay(failures)
        log.info(f"connect: trying {following} in {seconds:.1f}s")
        time.sleep(seconds)  # a signal interrupts it (Interrupted)


def _attempt(
    options: Options, plan: Plan, machine: Machine, destination: str, unit: int | None
) -> tuple[str, str, int | None]:
    """One ssh connection: up, held, down. Returns why a link that came up ended
    (``hold``'s kind, a reason) and its unit; raises :class:`Failed` otherwise."""
    prefix = "tap" if options.tap else "tun"
    if unit is not None and platform.device_info(f"{prefix}{unit}") is not None:
        unit = None  # taken meanwhile: any unit rather than a failed open
    ssh = link.Ssh(ssh_argv(options, destination, plan.added[destination], unit))
    journal = machine.journal
    try:
        journal.change(ssh.record)  # ssh also dies with us (PR_SET_PDEATHSIG)
        line, closed = ssh.first_line(options.wait)
        if line is None:
            raise link.never_came_up(ssh, closed, options.wait, options.tap, destination)
        up = link.configure_link(ssh, line, journal, platform.client.CAPABILITIES, plan.peers)
        return _connected(options, machine, up, destination)
    finally:
        journal.give_back(keep=lambda r: r.get("kind") == "nft")
        ssh.stop()


def _connected(
    options: Options, machine: Machine, up: link.Up, destination: str
) -> tuple[str, str, int | None]:
    found, ann = up.found, up.ann
    first = not machine.ever_connected
    try:  # from here on, a signal is a request to end, not a failure
        machine.enter(
            State.CONNECTED, destination=destination, device=found.device.name,
            address=ann.address, address6=ann.address6, index=found.device.index, dns=up.dns,
        )  # fmt: skip
        _report(found, ann, options.as_json, destination)
        if first:
            background.ready(0, found.device.name)
        kind, reason, _ = hold(found)
    except Interrupted as e:
        kind, reason = SIGNAL, f"signal {e}"
    log.info(f"connect: {found.device.name} {ann.address} ended: {reason}")
    if kind == platform.PROCESS_ENDED:
        reason = f"the ssh connection ended ({reason})"
    return kind, reason, link.unit(found.device.name)


def _report(found, ann: protocol.Announcement, as_json: bool, destination: str = "") -> None:
    import json

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
            "destination": destination,
        }
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
