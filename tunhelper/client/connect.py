"""``tunhelper connect``: the client side configures itself from what the server announced.

Runs the system ssh with ``-w any`` and the versioned describe request, finds the
local device that its own ssh child opened (the same discovery code as the server,
pointed at the child), configures it from the announcement, and holds until ssh
ends or a signal; then removes what it configured. Replaces the guide's
``LocalCommand (sleep 3; ifconfig ...) &``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from dataclasses import dataclass

import psutil

from tunhelper import configure, log, platform, protocol
from tunhelper.client import background, diagnose
from tunhelper.errors import TunhelperError
from tunhelper.hold import SIGNAL, hold
from tunhelper.server import discover
from tunhelper.signals import Interrupted, catch_end_signals, ignore_end_signals

# Exit codes: why connect ended.
EXIT_REQUESTED = 0  # SIGINT, SIGTERM or 'tunhelper disconnect'
EXIT_FAILED = 1  # never established: refused, no device, no announcement
EXIT_CONNECTION_ENDED = 3  # ssh ended after the link was up (server, network)
EXIT_DEVICE_GONE = 4  # the local device was deleted under us
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


def ssh_argv(options: Options) -> list[str]:
    """ssh's own options first: ssh keeps the first value it sees, and -w sets Tunnel."""
    argv = [*options.ssh_cmd, "-o", "ExitOnForwardFailure=yes"]
    if options.tap:
        argv += ["-o", "Tunnel=ethernet"]
    return [*argv, "-w", "any", "--", options.destination, protocol.REQUEST]


def run(options: Options) -> int:
    if os.geteuid() != 0:
        raise TunhelperError("connect must run as root: it configures the local tunnel device")
    catch_end_signals()
    try:
        proc = subprocess.Popen(
            ssh_argv(options),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # stderr is passed through as it comes, its tail kept to say why a link failed
    except OSError as e:
        raise TunhelperError(f"cannot run {options.ssh_cmd[0]!r}: {e.strerror}") from None
    assert proc.stderr is not None
    tail = diagnose.Tail(proc.stderr.fileno())
    ssh = psutil.Process(proc.pid)  # survives --background, where ssh is no longer our child
    try:
        with contextlib.ExitStack() as undo:
            undo.callback(_stop, proc, ssh)
            try:
                return _session(options, proc, undo, tail)
            finally:
                ignore_end_signals()
    except Interrupted as e:
        log.error(f"interrupted by {e} before the link was up")
        return EXIT_INTERRUPTED


def _session(
    options: Options, proc: subprocess.Popen, undo: contextlib.ExitStack, tail: diagnose.Tail
) -> int:
    line, closed = _first_line(proc, options.wait)
    if line is None:
        if closed:  # the server (or its shell, or sshd) said why on stderr, above
            raise TunhelperError(diagnose.refusal(proc, tail, options.tap))
        raise TunhelperError(
            f"no announcement from the server within {options.wait:g}s: is tunhelper the "
            "forced command for this key?"
        )
    ann = protocol.parse(line)
    found = discover.find_device_of(psutil.Process(proc.pid), DEVICE_WAIT)
    if found is None:
        raise TunhelperError(
            "ssh opened no local tunnel device: check /dev/net/tun, and that ssh runs as root"
        )
    applied = configure.apply_local(found.device, ann)
    undo.callback(_quietly, configure.undo, applied)
    if ann.address6 is not None:
        applied6 = configure.apply_local6(found.device, ann)
        undo.callback(_quietly, configure.undo, applied6)
    if ann.routes:
        for routes in configure.routes_by_family(found.device, ann.routes, _via(ann)):
            undo.callback(_quietly, configure.undo, routes)
    if ann.dns:
        _apply_dns(found.device, ann.dns, undo)
    try:  # from the status line on, a signal is a request to end, not a failure
        _report(found, ann, options.as_json)
        if options.background:
            pid_file = options.pid_file or background.default_pid_file(found.device.name)
            background.detach(pid_file)
            undo.callback(background.remove_pid_file, pid_file)
        kind, reason, _ = hold(found)
    except Interrupted as e:
        kind, reason = SIGNAL, f"signal {e}"
    log.info(f"connect: {found.device.name} {ann.address} ended: {reason}")
    if kind == SIGNAL:
        return EXIT_REQUESTED
    if kind == platform.DEVICE_GONE:
        log.error(f"{reason}; the link is down")
        return EXIT_DEVICE_GONE
    log.error(f"the ssh connection ended ({reason}); the link is down")
    return EXIT_CONNECTION_ENDED


def _via(ann: protocol.Announcement) -> dict[int, str]:
    """Where announced routes go, by IP version: on tun the device itself (empty); on
    tap the server's gateway of the route's family, which the server must have given."""
    if ann.mode == "tun":
        return {}
    via = {6 if ":" in g else 4: g for g in (ann.gateway, ann.gateway6) if g is not None}
    for route in ann.routes:
        version = 6 if ":" in route else 4
        if version not in via:
            raise TunhelperError(
                f"the server announced route {route} on a tap link without an "
                f"IPv{version} gateway to reach it through"
            )
    return via


def _apply_dns(device: platform.DeviceInfo, servers: list[str], undo: contextlib.ExitStack) -> None:
    """Use the system's standard way if it has one; otherwise say so, and go on."""
    listed = ", ".join(servers)
    try:
        tool = platform.apply_dns(device, servers)
    except OSError as e:
        log.error(f"could not set the announced DNS servers {listed}: {e}")
        return
    if tool is None:
        log.error(
            f"the server announced DNS servers {listed}; this system has neither "
            "resolvectl nor resolvconf, so set them by hand"
        )
        return
    undo.callback(_quietly, platform.revert_dns, device, tool)


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


def _report(found: discover.SessionDevice, ann: protocol.Announcement, as_json: bool) -> None:
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


def _quietly(step, *args) -> None:
    try:
        step(*args)
    except Exception as e:  # noqa: BLE001 - cleanup must go on whatever failed
        log.error(f"could not remove the local configuration: {e}")


def _stop(proc: subprocess.Popen, ssh: psutil.Process) -> None:
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
    if proc.stdout is not None:
        proc.stdout.close()
