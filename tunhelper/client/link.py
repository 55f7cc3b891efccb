"""One ssh connection of ``connect``: started, announced, configured, held, stopped.

Every change on the host outside the tunnel device (policy rules, DNS) goes through
the connect's journal, recorded before it is made. The device's own addresses and
routes need no record: they vanish with the device when ssh ends, and ssh ends with
its connect (``PR_SET_PDEATHSIG`` on Linux), so a SIGKILL of connect also ends it.

Raises :class:`Failed` for an attempt that never came up, with what to do and
whether another attempt may help.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil

from tunhelper import family, log, platform, protocol
from tunhelper.client import diagnose, fulltunnel, reconnect, trust
from tunhelper.client.journal import Journal
from tunhelper.errors import TunhelperError
from tunhelper.link import configure, discover

# Exit codes: why connect ended (connect's docstring has the list).
EXIT_FAILED = 1
EXIT_AUTH = 5
DEVICE_WAIT = 5.0  # ssh opens its device before it asks for the channel: normally instant


class Failed(TunhelperError):
    """An attempt that did not bring the link up. ``retry``: whether another may help;
    ``hint``: what the user can do; ``code``: the exit code without a kill-switch."""

    def __init__(self, message: str, code: int = EXIT_FAILED, retry: bool = True, hint: str = ""):
        super().__init__(message)
        self.code, self.retry, self.hint = code, retry, hint


@dataclass
class Up:
    """A link that came up: what ``status`` shows and what ``hold`` watches."""

    found: platform.SessionDevice
    ann: protocol.Announcement
    dns: bool = False
    warnings: list[str] = field(default_factory=list)


class Ssh:
    """Our ssh child, its stderr passed on line by line and kept (to tell a refusal,
    an authentication failure and a changed host key from a network failure)."""

    def __init__(self, argv: list[str]) -> None:
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,  # raw pipes: no buffer lock a thread could hold
                preexec_fn=platform.client.ssh_preexec(),  # noqa: PLW1509 - one syscall
            )
        except OSError as e:
            raise Failed(f"cannot run {argv[0]!r}: {e.strerror}", retry=False) from None
        self.process = psutil.Process(self.proc.pid)
        self.record = {"kind": "process", "pid": self.proc.pid, "start": self.process.create_time()}
        self.text = ""
        self._thread = threading.Thread(target=self._tee, daemon=True)
        self._thread.start()

    def _tee(self) -> None:
        fd = self.proc.stderr.fileno()
        while True:
            try:
                raw = os.read(fd, 4096)
            except OSError:
                return
            if not raw:
                return
            if len(self.text) < 65536:
                self.text += raw.decode("utf-8", "replace")
            with contextlib.suppress(OSError):
                os.write(2, raw)

    def first_line(self, timeout: float) -> tuple[str | None, bool]:
        """The server's first line (``None`` if none), and whether ssh's stdout closed
        (a refusal, not a timeout: the message must not blame a slow server)."""
        fd = self.proc.stdout.fileno()
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

    def stop(self) -> None:
        """End ssh (the server then releases the lease); reap it; close the pipes."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.process.terminate()  # psutil checks the start time: never a reused pid
            try:
                self.process.wait(5)
            except psutil.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        with contextlib.suppress(ChildProcessError, OSError, subprocess.TimeoutExpired):
            self.proc.wait(0)
        self._thread.join(2.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()


def never_came_up(ssh: Ssh, closed: bool, wait: float, tap: bool, destination: str) -> Failed:
    """Why an attempt ended without an announcement, as a :class:`Failed`."""
    if not closed:
        return Failed(
            f"no announcement from {destination} within {wait:g}s",
            hint="is tunhelper the forced command for this key?",
        )
    with contextlib.suppress(subprocess.TimeoutExpired):
        ssh.proc.wait(diagnose.END_WAIT)  # ssh may stay on an open tunnel
    ssh._thread.join(0.3)  # what ssh wrote is in by now: it went out before the EOF
    code, text = ssh.proc.poll(), ssh.text
    key = diagnose.host_key(text, destination)
    if key is not None:
        return Failed(key[0], EXIT_AUTH, retry=False, hint=key[1])
    if reconnect.is_auth_failure(text):
        return Failed(
            f"ssh could not authenticate to {destination}",
            EXIT_AUTH,
            retry=False,
            hint="check the key (ssh -e, IdentityFile) and the gateway's authorized_keys",
        )
    why = diagnose.explain(text, code, tap)
    if why is not None:
        return Failed(why, retry=False, hint="fix it on the gateway")
    status = "the connection was closed" if code is None else f"ssh exited ({code})"
    # The server's helper says why in a "tunhelper:" line (relayed above), then ends
    # the connection: a refusal, never retried. ssh alone: the network.
    refused = reconnect.is_refusal(text) or code not in (None, 255)
    message = f"{status} before the server announced an address ({destination})"
    if refused:
        return Failed(f"{message}; the gateway refused", retry=False, hint="see its line above")
    return Failed(message, hint="check the network path to the gateway")


def configure_link(
    ssh: Ssh, line: str, journal: Journal, capabilities, peers: tuple[tuple[str, int], ...]
) -> Up:
    """Configure this end from the announcement, as far as :mod:`trust` lets it: the
    gateway's routes and DNS servers are held against this host's own networks first.
    Host-wide changes (rules, DNS) go through the journal."""
    ann = protocol.parse(line)
    found = discover.find_device_of(ssh.process, DEVICE_WAIT)
    if found is None:
        raise Failed(
            "ssh opened no local tunnel device",
            retry=False,
            hint="check /dev/net/tun, and that ssh runs as root",
        )
    peer = fulltunnel.ssh_peer(ssh.proc.pid)
    addresses = [a for a, _ in peers] + ([peer] if peer else [])
    try:
        verdict = trust.judge(ann, _host_view(addresses, found.device.name, journal))
    except trust.Untrusted as e:
        raise Failed(str(e), retry=False, hint="check the gateway's pool and routes") from None
    up = Up(found, ann, warnings=verdict.warnings())
    for warning in up.warnings:
        log.error(f"warning: {warning}")  # the user's to see: stderr and syslog
    journal.update(device=found.device.name)  # before its networks appear: _host_view
    try:  # the device's own configuration vanishes with it: no record
        configure.apply_local(found.device, ann)
        if ann.address6 is not None:
            configure.apply_local6(found.device, ann)
    except OSError as e:  # the device went away meanwhile, most likely
        raise Failed(f"could not configure {found.device.name}: {e}") from None
    full = list(verdict.full)
    if full and not capabilities.full_tunnel:
        log.error(
            "warning: this system cannot route everything through the link: the "
            "gateway's default route is ignored, only its other routes are used"
        )
        full = []
    if verdict.routes:
        try:
            configure.routes_by_family(found.device, list(verdict.routes), _via(ann))
        except OSError as e:
            raise Failed(
                f"could not add the gateway's routes on {found.device.name}: {e}"
            ) from None
    if full:
        _full_tunnel(found, full, peer, journal)
    if verdict.dns.servers:
        servers = list(verdict.dns.servers)
        up.dns = _dns(found.device.name, servers, verdict.dns.default_route, journal)
    return up


def _host_view(peers: list[str], device: str, journal: Journal) -> trust.HostView:
    """This host's own networks, without our tunnel nor those of the other live
    connects here (a second link to one gateway is not the LAN)."""
    from tunhelper.client import journal as journal_

    def tunnels() -> list[str]:
        found = [device]
        for _, data in journal_.read_all(os.path.dirname(journal.path)):
            other = data.get("status", {}).get("device")
            if other and data["pid"] != journal.pid and journal_.alive(data):
                found.append(other)
        return sorted(set(found))

    # Each connect records its device before it configures it (configure_link), so a
    # tunnel whose networks were read here is in the journals read after: read them
    # again until they agree, or a connect starting beside us is taken for the LAN.
    left_out = tunnels()
    for _ in range(5):
        try:
            connected, routes = platform.routes_view.local_networks(left_out)
        except OSError as e:
            raise Failed(f"cannot read this host's networks to check the gateway's: {e}") from None
        again = tunnels()
        if again == left_out:
            break
        left_out = again
    return trust.HostView(tuple(connected), tuple(routes), tuple(sorted(set(peers))))


def _full_tunnel(found, versions: list[int], peer: str | None, journal: Journal) -> None:
    """Everything through the link, the ssh connection's own peer excepted."""
    if peer is None:
        raise Failed("cannot find the TCP peer of ssh: not routing everything", retry=False)
    if platform.client.full_tunnel_active():
        raise Failed(
            "another full-tunnel connect is running (ip rule 7460-7462)",
            retry=False,
            hint="end it first ('tunhelper status' lists it)",
        )
    try:
        for record in platform.client.full_tunnel_plan(found.device.index, versions, peer):
            journal.change(record, platform.client.apply)
    except OSError as e:
        raise Failed(f"could not route everything through {found.device.name}: {e}") from None


def _dns(device: str, servers: list[str], full: bool, journal: Journal) -> bool:
    """The announced servers, through the system's resolver manager (or resolv.conf on a
    full tunnel); a split tunnel without a manager says to set them by hand."""
    listed = ", ".join(servers)
    try:
        record = platform.client.dns_plan(device, servers, full)
        if record is None:
            log.error(f"the gateway announced DNS servers {listed}; set them by hand")
            return False
        journal.change(record, platform.client.apply)
    except OSError as e:
        log.error(f"could not set the announced DNS servers {listed}: {e}")
        return False
    return True


def _via(ann: protocol.Announcement) -> dict[int, str]:
    """Where announced routes go, by IP version: on tun the device itself (empty); on
    tap the server's gateway of the route's family, which the server must have given."""
    if ann.mode == "tun":
        return {}
    via = {family.of(g): g for g in (ann.gateway, ann.gateway6) if g is not None}
    for route in ann.routes:
        version = family.of(route)
        if version not in via:
            raise Failed(
                f"the server announced route {route} on a tap link without an "
                f"IPv{version} gateway to reach it through",
                retry=False,
            )
    return via


def unit(name: str) -> int | None:
    digits = name.lstrip("tunap")
    return int(digits) if digits.isdigit() else None
