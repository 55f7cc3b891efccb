"""A real OpenSSH lab on one machine: sshd in one network namespace, clients in others.

Used by the end-to-end tests, the demo and the benchmarks. Everything it creates has
a unique name and is removed by :meth:`Lab.close`, also when a test fails: processes
in its namespaces are killed, then the namespaces are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNDERLAY = "10.231"  # /16 inside the lab's namespaces only: server .0.1, clients .1.x
SSHD = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/sshd"


# Test configuration, read here only (never by tunhelper): the launcher of an installed
# package to test instead of the project's venv, e.g. /usr/bin/tunhelper from the .deb.
COMMAND_VARIABLE = "TUNHELPER_TEST_COMMAND"


def installed_command() -> str | None:
    """The launcher named by ``TUNHELPER_TEST_COMMAND``, or ``None`` when unset.

    Set but unusable is an error, never a quiet fallback to the venv: a run meant to
    test the installed package must not pass by testing something else.
    """
    value = os.environ.get(COMMAND_VARIABLE)
    if not value:
        return None
    if not os.path.isabs(value) or not os.access(value, os.X_OK):
        raise RuntimeError(f"{COMMAND_VARIABLE}={value!r} is not an absolute path to a program")
    return value


def tunhelper_command() -> str:
    """The ``tunhelper`` under test: the installed one if named, else the project's venv's."""
    installed = installed_command()
    if installed is not None:
        return installed
    candidate = Path(sys.executable).with_name("tunhelper")
    return str(candidate) if candidate.exists() else shutil.which("tunhelper") or "tunhelper"


# The client's run directory (tunhelper.defaults.RUN_DIR: connect's state files and pid
# files). It is one per host, and a namespace does not separate it: see in_netns().
CLIENT_RUN_DIR = "/run/tunhelper"


def private_run_dir(ns: str) -> Path:
    """The run directory that tunhelper sees in namespace ``ns`` (removed with the lab)."""
    return Path(tempfile.gettempdir()) / f"tunhelper-run-{ns}"


def in_netns(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run in namespace ``ns``. tunhelper itself also gets a run directory of the
    namespace's own, as a host of its own would: connect replays the state files of dead
    connects it finds there and disconnect ends every connect it finds, so in a shared
    /run/tunhelper a test's connect would undo or end another test's connect (tests run
    side by side). ``ip netns exec`` runs it in a mount namespace of its own, where the
    bind mount stays; sh execs, so the pid stays the command's."""
    if not argv or argv[0] != tunhelper_command():
        return ["ip", "netns", "exec", ns, *argv]
    private = private_run_dir(ns)
    private.mkdir(mode=0o755, exist_ok=True)
    os.makedirs(CLIENT_RUN_DIR, mode=0o755, exist_ok=True)  # the mount point
    mount = 'mount --bind "$0" "$1" && shift && exec "$@"'
    return ["ip", "netns", "exec", ns, "sh", "-c", mount, str(private), CLIENT_RUN_DIR, *argv]


def run(*argv: str, ns: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    if ns is not None:
        argv = tuple(in_netns(ns, argv))
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the lab; empty when it can run."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("ip", "ssh", "ssh-keygen", "ping"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not os.path.exists(SSHD):
        missing.append("sshd (openssh-server)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    return missing


class Lab:
    """One sshd whose root account runs tunhelper as the forced command."""

    def __init__(
        self,
        helper_args: Sequence[str] = ("--pool", "192.168.3.0/24"),
        *,
        sshd_options: dict[str, str] | None = None,
        key_options: str = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding",
        hostname: str | None = None,
        uplink: tuple[str, str, str] | None = None,
    ) -> None:
        """``hostname``: sshd (and so its helpers) in a UTS namespace of that name, so that
        several labs are several gateways, each judging only its own leases. ``uplink``:
        (namespace, bridge, address/prefix) of a shared underlay this gateway joins, e.g.
        where a fleet's PostgreSQL listens."""
        self.tag = uuid.uuid4().hex[:6]
        self.hostname = hostname
        self.uplink = uplink
        self.dir = Path(tempfile.mkdtemp(prefix=f"tunhelper-lab-{self.tag}-"))
        self.state_dir = str(self.dir / "state")
        self.helper_args = list(helper_args)
        self.key_options = key_options
        self.sshd_options = {
            "PermitTunnel": "yes",
            "PermitRootLogin": "forced-commands-only",
            "ExposeAuthInfo": "yes",
            "MaxStartups": "200",
            "MaxSessions": "50",
            **(sshd_options or {}),
        }
        self.server_ns = f"th-{self.tag}-srv"
        self.bridge = f"thb{self.tag}"
        self.namespaces: list[str] = []
        self.clients: list[Client] = []
        self.sshd: subprocess.Popen | None = None
        self._keys: list[str] = []

    # -- life cycle --------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        os.chmod(self.dir, 0o755)
        run("ip", "netns", "add", self.server_ns)
        self.namespaces.append(self.server_ns)
        ns = self.server_ns
        enable_ipv6(ns)
        run("ip", "link", "set", "lo", "up", ns=ns)
        run("ip", "link", "add", self.bridge, "address", fixed_mac(), "type", "bridge", ns=ns)
        run("ip", "addr", "add", f"{UNDERLAY}.0.1/16", "dev", self.bridge, ns=ns)
        run("ip", "link", "set", self.bridge, "up", ns=ns)
        if self.uplink is not None:
            shared_ns, shared_bridge, address = self.uplink
            outer = f"thu{self.tag}"
            run("ip", "link", "add", outer, "netns", shared_ns, "type", "veth", "peer", "name",
                "uplink", "netns", ns)  # fmt: skip
            run("ip", "link", "set", outer, "master", shared_bridge, "up", ns=shared_ns)
            run("ip", "addr", "add", address, "dev", "uplink", ns=ns)
            run("ip", "link", "set", "uplink", "up", ns=ns)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key"))
        (self.dir / "authorized_keys").write_text("")
        config = {
            "ListenAddress": f"{UNDERLAY}.0.1",
            "Port": "22",
            "HostKey": str(self.dir / "host_key"),
            "AuthorizedKeysFile": str(self.dir / "authorized_keys"),
            "PidFile": str(self.dir / "sshd.pid"),
            "UsePAM": "no",
            "StrictModes": "no",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "LogLevel": "VERBOSE",
            **self.sshd_options,
        }
        (self.dir / "sshd_config").write_text("".join(f"{k} {v}\n" for k, v in config.items()))
        os.makedirs("/run/sshd", exist_ok=True)
        self.start_sshd()

    def start_sshd(self) -> None:
        """Start the lab's sshd (again, after :meth:`power_cut`); wait until it listens."""
        log = self.dir / "sshd.log"
        self.sshd_log = open(log, "a")  # noqa: SIM115 - lives as long as sshd
        offset = log.stat().st_size
        # its own hostname: unshare and sh exec, so the pid stays sshd's
        uts = ("unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname)
        self.sshd = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.server_ns,
                *(uts if self.hostname else ()),
                SSHD,
                "-D",
                "-e",
                "-f",
                str(self.dir / "sshd_config"),
            ],
            stdout=self.sshd_log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while b"Server listening" not in log.read_bytes()[offset:]:
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {log.read_text()}")
            time.sleep(0.02)

    def power_cut(self) -> None:
        """Every process of the server dies at once, as in a crash; then sshd starts again.

        What survives is what a reboot leaves: the state directory. (Network devices of
        sshd's sessions vanish with their processes, as they would.)
        """
        for pid in self.server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.sshd is not None
        self.sshd.wait()
        self.sshd_log.close()
        deadline = time.monotonic() + 10
        while self.server_pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.start_sshd()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for ns in reversed(self.namespaces):
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        if self.sshd is not None:
            with contextlib.suppress(ProcessLookupError):
                self.sshd.kill()
            self.sshd.wait()
            self.sshd_log.close()
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
            shutil.rmtree(private_run_dir(ns), ignore_errors=True)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- configuration -----------------------------------------------------------

    def authorize(
        self,
        public_key: str,
        helper_args: Sequence[str] | None = None,
        command: str | None = None,
    ) -> None:
        """A key whose forced command is tunhelper (or ``command``, for a baseline)."""
        if command is None:
            args = self.helper_args if helper_args is None else list(helper_args)
            argv = [tunhelper_command(), *args, "--state-dir", self.state_dir]
            command = " ".join(shlex.quote(a) for a in argv)
        quoted = command.replace('"', '\\"')  # sshd's quoting: only \" is special
        options = (
            f'{self.key_options},command="{quoted}"' if self.key_options else f'command="{quoted}"'
        )
        self._keys.append(f"{options} {public_key}")
        (self.dir / "authorized_keys").write_text("\n".join(self._keys) + "\n")

    def add_client(
        self,
        name: str | None = None,
        helper_args: Sequence[str] | None = None,
        command: str | None = None,
    ) -> Client:
        """A client host in its own namespace, with its own key authorized on the server."""
        index = len(self.clients) + 2
        client = Client(self, name or f"c{index}", index)
        self.clients.append(client)
        client.setup()
        self.authorize(client.public_key, helper_args, command)
        return client

    # -- observation -------------------------------------------------------------

    def server_pids(self) -> list[int]:
        """Every process in the server's namespace: sshd, its sessions, helpers."""
        out = run("ip", "netns", "pids", self.server_ns, check=False).stdout.split()
        return sorted(int(p) for p in out)

    def in_server_mounts(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` in sshd's own mount and network namespaces, where its helpers run.

        ``ip netns exec`` gives every command a fresh mount namespace: a mount made in
        sshd's (a read-only state directory, a small tmpfs) is seen only from there.
        """
        assert self.sshd is not None
        target = str(self.sshd.pid)
        # --root and --wd: sshd's own, which differ from the namespace's root in a chroot
        result = run(
            "nsenter", "--mount", "--net", "--uts", "--root", "--wd", "--target", target, *argv,
            check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in sshd's namespaces: {result.stderr.strip()}")
        return result

    def leases(self) -> list[dict]:
        out = run(
            tunhelper_command(),
            "leases",
            "--json",
            "--state-dir",
            self.state_dir,
            ns=self.server_ns,
        )
        return json.loads(out.stdout)

    def active_leases(self) -> list[dict]:
        return [lease for lease in self.leases() if lease["state"] == "active"]

    def server_addresses(self) -> dict[str, list[dict]]:
        """``ip -j addr`` on the server, by device name."""
        out = json.loads(run("ip", "-j", "addr", ns=self.server_ns).stdout)
        return {link["ifname"]: link.get("addr_info", []) for link in out}

    def server_tun_devices(self) -> list[str]:
        return sorted(d for d in self.server_addresses() if d.startswith("tun"))

    def server_links(self) -> list[str]:
        """Every link in the server namespace but the lab's own (lo, bridge, veths)."""
        ours = ("lo", self.bridge, f"thv{self.tag}")
        return sorted(d for d in self.server_addresses() if not d.startswith(ours))

    def ping_from_server(self, address: str) -> bool:
        return (
            run("ping", "-c", "1", "-W", "2", address, ns=self.server_ns, check=False).returncode
            == 0
        )

    def ping6_from_server(self, address: str) -> bool:
        return (
            run(
                "ping", "-6", "-c", "1", "-W", "2", address, ns=self.server_ns, check=False
            ).returncode
            == 0
        )

    def doctor(self, *extra: str) -> subprocess.CompletedProcess:
        """``tunhelper doctor`` on this server: its sshd_config and authorized_keys."""
        return run(
            tunhelper_command(),
            "doctor",
            "--sshd-config",
            str(self.dir / "sshd_config"),
            "--authorized-keys",
            str(self.dir / "authorized_keys"),
            *extra,
            ns=self.server_ns,
            check=False,
        )

    def sshd_log_text(self) -> str:
        return (self.dir / "sshd.log").read_text()


class Client:
    """A client host: a namespace on the lab's bridge, an ed25519 key, ssh sessions."""

    def __init__(self, lab: Lab, name: str, index: int) -> None:
        self.lab = lab
        self.name = name
        self.index = index
        self.ns = f"th-{lab.tag}-{name}"
        self.key = lab.dir / f"key-{name}"
        self.sessions: list[Session] = []

    def setup(self) -> None:
        lab = self.lab
        run("ip", "netns", "add", self.ns)
        lab.namespaces.append(self.ns)
        enable_ipv6(self.ns)
        outer, inner = f"thv{lab.tag}{self.index}", "eth0"
        run(
            "ip",
            "link",
            "add",
            outer,
            "netns",
            lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            self.ns,
        )
        run("ip", "link", "set", outer, "master", lab.bridge, ns=lab.server_ns)
        run("ip", "link", "set", outer, "up", ns=lab.server_ns)
        hi, lo = divmod(self.index, 250)
        run("ip", "addr", "add", f"{UNDERLAY}.{1 + hi}.{lo + 1}/16", "dev", inner, ns=self.ns)
        run("ip", "link", "set", inner, "up", ns=self.ns)
        run("ip", "link", "set", "lo", "up", ns=self.ns)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.key))
        self.public_key = Path(f"{self.key}.pub").read_text().strip()

    def ssh_argv(self, *extra: str, command: Sequence[str] = (), tunnel: str = "any") -> list[str]:
        """``tunnel`` is ``-w``'s value: ``any``, or ``any:N`` to ask the server for unit N."""
        return [
            "ip",
            "netns",
            "exec",
            self.ns,
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            # options first: ssh keeps the first value it sees, and -w sets Tunnel
            *extra,
            "-w",
            tunnel,
            "--",  # a command that starts with "-" is the command, not an ssh option
            f"root@{UNDERLAY}.0.1",
            *command,
        ]

    def connect(self, *extra: str, command: Sequence[str] = (), tunnel: str = "any") -> Session:
        """Start ``ssh -w any`` to the lab's server; returns at once."""
        session = Session(self, self.ssh_argv(*extra, command=command, tunnel=tunnel))
        self.sessions.append(session)
        return session

    def ssh_command(self) -> str:
        """The ssh command (for ``connect -e``) with the lab's key and no host checks."""
        argv = self.ssh_argv()[4 : self.ssh_argv().index("-w")]
        return " ".join(shlex.quote(a) for a in argv)

    def tunhelper_connect(self, *args: str, server: str = f"root@{UNDERLAY}.0.1") -> Connect:
        """Start ``tunhelper connect`` in this client's namespace; returns at once."""
        argv = in_netns(
            self.ns, [tunhelper_command(), "connect", "-e", self.ssh_command(), *args, server]
        )
        connect = Connect(self, argv)
        self.sessions.append(connect)
        return connect

    def tun_devices(self, prefix: str = "tun") -> list[str]:
        out = json.loads(run("ip", "-j", "link", ns=self.ns).stdout)
        return sorted(link["ifname"] for link in out if link["ifname"].startswith(prefix))

    def close(self) -> None:
        for s in self.sessions:
            s.close()


class Session:
    """One ``ssh -w any`` process and what it printed."""

    def __init__(self, client: Client, argv: list[str]) -> None:
        self.client = client
        self.stderr_path = client.lab.dir / f"ssh-{client.name}-{len(client.sessions)}.err"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in close()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._buffer = b""
        self.address: str | None = None
        self.device: str | None = None

    def read_address(self, timeout: float = 15.0) -> str | None:
        """The first line the server wrote, or ``None`` if ssh ended or time ran out."""
        line = self.read_line(timeout)
        self.address = line
        return line

    def read_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    return None
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def configure_client_side(self, gateway: str = "192.168.3.1") -> str:
        """What a user does by hand today: address and peer on the local tun, up."""
        assert self.address is not None
        devices = self.client.tun_devices()
        assert len(devices) == 1, f"expected one tun in {self.client.ns}, found {devices}"
        self.device = devices[0]
        ns = self.client.ns
        run("ip", "addr", "add", self.address, "peer", gateway, "dev", self.device, ns=ns)
        run("ip", "link", "set", self.device, "up", ns=ns)
        return self.device

    def ping(self, address: str, count: int = 1) -> bool:
        result = run("ping", "-c", str(count), "-W", "2", address, ns=self.client.ns, check=False)
        return result.returncode == 0

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._stderr.close()


class Connect(Session):
    """A ``tunhelper connect`` process: its first stdout line is the status line."""

    def status(self, timeout: float = 30.0) -> str | None:
        return self.read_line(timeout)

    def interrupt(self) -> int | None:
        self.proc.send_signal(signal.SIGINT)
        return self.wait(10)


def enable_ipv6(ns: str) -> None:
    """A new namespace may inherit a host's disabled IPv6; the lab's always have it."""
    for key in ("all", "default"):
        run("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=0", ns=ns)


def refused(session: Session, timeout: float) -> str:
    """The session announced nothing and ended; return its one ``tunhelper:`` line."""
    assert session.read_address(timeout) is None
    assert session.wait(timeout) not in (None, 0), "ssh must not sit on a refused tunnel"
    text = session.stderr()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.startswith("tunhelper:")]
    assert len(lines) == 1, text
    return lines[0]


def fixed_mac() -> str:
    """A MAC for a bridge the tests make. Without one, Linux gives a bridge the lowest
    MAC of its ports, which changes when that port goes (a client, a gateway of a fleet
    destroyed on purpose), and every neighbour entry for the bridge's address then
    points at a MAC no one has, for tens of seconds."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFE) | 0x02  # unicast, locally administered
    return mac.hex(":")


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll a condition in a test (never in tunhelper itself) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
