"""A hostile network for ``tunhelper connect``: the lab (tests/lab.py) with a router
between the client and the gateway that counts every packet reaching it outside the
tunnel, and the means to attack: cut the path, answer for the gateway with another
sshd, serve the gateway's name from the LAN, hang a container behind the client.

    container (10.233.0.2) -- client (10.233.0.1 | 10.232.0.2, fd32::2)
        -- LAN -- router (10.232.0.1, .53 the LAN's DNS; fd32::1 | 10.231.0.254, fd31::254)
        -- the lab's bridge -- gateway (10.231.0.1, fd31::1; 198.51.100.1 beyond)

The router's ``leak`` counter (nftables, prerouting on its LAN side) counts every
packet from the LAN except the ssh connection to the gateway's address (tcp port 22)
and the link-local protocols a link needs (neighbour and router discovery, MLD,
DHCP): those are what a kill-switch lets pass. Everything is made inside namespaces
the lab owns and removed with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

from tests.lab import SSHD, UNDERLAY, Client, Connect, Lab, run, tunhelper_command, wait_until
from tunhelper.defaults import RUN_DIR

GATEWAY, GATEWAY6 = f"{UNDERLAY}.0.1", "fd31::1"
ROUTER_LAN, ROUTER_LAN6, CLIENT_LAN, CLIENT_LAN6 = "10.232.0.1", "fd32::1", "10.232.0.2", "fd32::2"
LAN, LAN6 = "10.232.0.0/24", "fd32::/64"
LAN_DNS = "10.232.0.53"  # a LAN host: the LAN's resolver
BEYOND, BEYOND6 = "198.51.100.1", "2001:db8:100::1"  # reached only through the tunnel
CONTAINER, CONTAINER_GW = "10.233.0.2", "10.233.0.1"
FULL = ["--pool", "192.168.3.0/24", "--route", "0.0.0.0/1", "--route", "128.0.0.0/1"]
FULL6 = ["--pool", "fd33::/112", "--route", "::/1", "--route", "8000::/1"]
GATEWAY_NAME = "gw.office.test"

_COUNTER_TABLE = "hostile"
_CUT_TABLE = "hostile_cut"


class HostileNet:
    """The router, the LAN and what an attacker does with them, around one lab client."""

    def __init__(self, lab: Lab, client: Client, ipv6_only: bool = False) -> None:
        self.lab, self.client, self.ipv6_only = lab, client, ipv6_only
        self.ns = f"th-{lab.tag}-rt"
        self.etc = Path("/etc/netns") / client.ns
        self.attacker: subprocess.Popen | None = None
        self.dns: subprocess.Popen | None = None
        self.container_ns: str | None = None
        self.known_hosts = lab.dir / "known_hosts"
        # The client's own /run/tunhelper: on this shared machine, other tests' connects
        # (other namespaces, other versions) write theirs to the host's.
        self.run_dir = lab.dir / "run"
        self.run_dir.mkdir(mode=0o755)
        os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
        try:
            self._build()
        except BaseException:
            self.close()  # the lab removes the rest
            raise

    # -- building --------------------------------------------------------------------

    def _build(self) -> None:
        lab, client, ns = self.lab, self.client, self.ns
        run("ip", "netns", "add", ns)
        lab.namespaces.append(ns)  # the lab kills its processes and deletes it
        run("ip", "link", "set", "lo", "up", ns=ns)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns)
        run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", ns=ns)
        run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=ns)
        run("ip", "link", "del", "eth0", ns=client.ns)  # the router is its only way out
        run("ip", "link", "add", "lan0", "netns", ns, "type", "veth", "peer", "name", "eth0",
            "netns", client.ns)  # fmt: skip
        outer = f"thv{lab.tag}rt"
        run("ip", "link", "add", outer, "netns", lab.server_ns, "type", "veth", "peer", "name",
            "g0", "netns", ns)  # fmt: skip
        run("ip", "link", "set", outer, "master", lab.bridge, "up", ns=lab.server_ns)
        for dev, where in (("lan0", ns), ("g0", ns), ("eth0", client.ns)):
            run("ip", "link", "set", dev, "up", ns=where)
        v6 = [
            (ns, "lan0", f"{ROUTER_LAN6}/64"),
            (client.ns, "eth0", f"{CLIENT_LAN6}/64"),
            (ns, "g0", "fd31::254/64"),
            (lab.server_ns, lab.bridge, f"{GATEWAY6}/64"),
        ]
        for where, dev, address in v6:
            run("ip", "addr", "add", address, "dev", dev, "nodad", ns=where)
        run("ip", "-6", "route", "add", "default", "via", ROUTER_LAN6, ns=client.ns)
        run("ip", "-6", "route", "add", "fd32::/64", "via", "fd31::254", ns=lab.server_ns)
        run("ip", "addr", "add", f"{BEYOND6}/128", "dev", "lo", ns=lab.server_ns)
        if not self.ipv6_only:
            run("ip", "addr", "add", f"{ROUTER_LAN}/24", "dev", "lan0", ns=ns)
            run("ip", "addr", "add", f"{LAN_DNS}/24", "dev", "lan0", ns=ns)
            run("ip", "addr", "add", f"{CLIENT_LAN}/24", "dev", "eth0", ns=client.ns)
            run("ip", "route", "add", "default", "via", ROUTER_LAN, ns=client.ns)
            run("ip", "addr", "add", f"{UNDERLAY}.0.254/16", "dev", "g0", ns=ns)
            run("ip", "route", "add", "10.232.0.0/16", "via", f"{UNDERLAY}.0.254",
                ns=lab.server_ns)  # fmt: skip
            run("ip", "addr", "add", f"{BEYOND}/32", "dev", "lo", ns=lab.server_ns)
        self.etc.mkdir(parents=True, exist_ok=True)  # `ip netns exec` bind-mounts these
        (self.etc / "resolv.conf").write_text(f"nameserver {LAN_DNS}\n")
        (self.etc / "hosts").write_text("127.0.0.1 localhost\n")
        self._counter()
        host_key = (lab.dir / "host_key.pub").read_text().split()[:2]
        names = f"{GATEWAY},{GATEWAY6},{GATEWAY_NAME}"
        self.known_hosts.write_text(f"{names} {' '.join(host_key)}\n")

    def _counter(self) -> None:
        nd = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"
        mld = "mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report"
        ruleset = f"""
        table inet {_COUNTER_TABLE} {{
          counter leak {{}}
          chain pre {{
            type filter hook prerouting priority -300; policy accept;
            iifname != "lan0" return
            ip daddr {GATEWAY} tcp dport 22 return
            ip6 daddr {GATEWAY6} tcp dport 22 return
            icmpv6 type {{ {nd}, {mld} }} return
            udp dport {{ 67, 547 }} return
            counter name leak
          }}
        }}
        """
        run("nft", "-f", "-", ns=self.ns, input=textwrap.dedent(ruleset))

    def close(self) -> None:
        """What the lab does not remove itself: the client's /etc/netns files."""
        shutil.rmtree(self.etc, ignore_errors=True)

    # -- the client's commands ------------------------------------------------------

    def client_argv(self, *argv: str) -> list[str]:
        """``argv`` in the client's namespace, with its own run directory mounted on
        /run/tunhelper (a mount namespace of its own; every step execs, so the pid is
        the command's)."""
        mount = f'mount --bind "$0" {RUN_DIR} && exec "$@"'
        return ["ip", "netns", "exec", self.client.ns, "unshare", "-m", "sh", "-c", mount,
                str(self.run_dir), *argv]  # fmt: skip

    def connect(self, *args: str, server: str = f"root@{GATEWAY}") -> Connect:
        """Start ``tunhelper connect`` on the client; returns at once."""
        ssh = self.client.ssh_command()
        argv = self.client_argv(tunhelper_command(), "connect", "-e", ssh, *args, server)
        conn = Connect(self.client, argv)
        self.client.sessions.append(conn)
        return conn

    def tunhelper(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = self.client_argv(tunhelper_command(), *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def status(self) -> list[dict]:
        """``tunhelper status --json`` on the client: one object per connect."""
        result = self.tunhelper("status", "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout or "[]")
        return data if isinstance(data, list) else [data]

    def state(self) -> str | None:
        found = self.status()
        return found[0].get("state") if len(found) == 1 else None

    def disconnect(self) -> subprocess.CompletedProcess:
        return self.tunhelper("disconnect")

    # -- observing -------------------------------------------------------------------

    def leaks(self) -> int:
        """Packets that reached the router from the LAN outside the tunnel, so far."""
        out = run("nft", "-j", "list", "counter", "inet", _COUNTER_TABLE, "leak", ns=self.ns)
        for item in json.loads(out.stdout)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise AssertionError(f"no leak counter: {out.stdout}")

    def kill_switch_tables(self, ns: str | None = None) -> list[str]:
        """tunhelper's nftables tables in the client's namespace."""
        out = run("nft", "-j", "list", "tables", ns=ns or self.client.ns).stdout
        items = json.loads(out)["nftables"]
        names = [i["table"]["name"] for i in items if "table" in i]
        return sorted(n for n in names if n.startswith("tunhelper"))

    def remove_kill_switch(self) -> None:
        """The control's step: the kill-switch taken away by hand."""
        for table in self.kill_switch_tables():
            run("nft", "delete", "table", "inet", table, ns=self.client.ns, check=False)

    # -- attacking -------------------------------------------------------------------

    def cut(self, port: int | None = None) -> None:
        """Blackhole the path to the gateway's sshd (the tunnel's packets vanish); with
        ``port``, only the connection from that client port (new ones get through)."""
        mine, theirs = ("", "") if port is None else (f"tcp sport {port}", f"tcp dport {port}")
        ruleset = f"""
        table inet {_CUT_TABLE} {{
          chain cut {{
            type filter hook forward priority -10; policy accept;
            ip daddr {GATEWAY} {mine} tcp dport 22 drop
            ip saddr {GATEWAY} {theirs} tcp sport 22 drop
            ip6 daddr {GATEWAY6} {mine} tcp dport 22 drop
            ip6 saddr {GATEWAY6} {theirs} tcp sport 22 drop
          }}
        }}
        """
        run("nft", "-f", "-", ns=self.ns, input=textwrap.dedent(ruleset))

    def heal(self) -> None:
        run("nft", "delete", "table", "inet", _CUT_TABLE, ns=self.ns, check=False)

    def impersonate_gateway(self) -> str:
        """An sshd of the attacker's own, on the router, answering for the gateway's
        address; returns its host key's fingerprint (``SHA256:...``)."""
        lab = self.lab
        key = lab.dir / "attacker_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        config = {
            "ListenAddress": GATEWAY,
            "HostKey": str(key),
            "AuthorizedKeysFile": "/dev/null",
            "PidFile": str(lab.dir / "attacker.pid"),
            "UsePAM": "no",
            "StrictModes": "no",
        }
        (lab.dir / "attacker_config").write_text("".join(f"{k} {v}\n" for k, v in config.items()))
        run("ip", "addr", "add", f"{GATEWAY}/32", "dev", "lo", ns=self.ns)
        log = lab.dir / "attacker.log"
        with open(log, "w") as out:
            argv = [SSHD, "-D", "-e", "-f", str(lab.dir / "attacker_config")]
            self.attacker = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv], stdout=out, stderr=subprocess.STDOUT
            )
        assert wait_until(lambda: "Server listening" in log.read_text(), 10), log.read_text()
        out = run("ssh-keygen", "-l", "-f", f"{key}.pub").stdout
        return out.split()[1]

    def serve_gateway_name(self) -> Path:
        """A DNS server on the LAN (the router's LAN_DNS address) that alone knows
        the gateway's name; returns the file where it counts the queries it got."""
        log = self.lab.dir / "dns.count"
        log.write_text("0")
        argv = ["python3", "-c", _DNS_SERVER, LAN_DNS, GATEWAY_NAME, GATEWAY, str(log)]
        self.dns = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv])
        assert wait_until(lambda: _dns_answers(self.client.ns), 10), "the LAN's DNS is not up"
        return log

    def container(self) -> str:
        """A namespace behind the client (a container or VM), which forwards for it."""
        ns = self.container_ns = f"th-{self.lab.tag}-ct"
        run("ip", "netns", "add", ns)
        self.lab.namespaces.append(ns)
        run("ip", "link", "add", "ct0", "netns", self.client.ns, "type", "veth", "peer",
            "name", "eth0", "netns", ns)  # fmt: skip
        run("ip", "addr", "add", f"{CONTAINER_GW}/24", "dev", "ct0", ns=self.client.ns)
        run("ip", "link", "set", "ct0", "up", ns=self.client.ns)
        run("ip", "addr", "add", f"{CONTAINER}/24", "dev", "eth0", ns=ns)
        run("ip", "link", "set", "eth0", "up", ns=ns)
        run("ip", "link", "set", "lo", "up", ns=ns)
        run("ip", "route", "add", "default", "via", CONTAINER_GW, ns=ns)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.client.ns)
        return ns


class Prober:
    """Packets that must not leave outside the tunnel, sent all along from ``ns``: UDP
    to an address beyond the gateway and to the LAN's router, every 20 ms (IPv4 or
    IPv6). Started before the scenario and stopped after, so a short window is seen."""

    def __init__(self, ns: str, v6: bool = False) -> None:
        targets = [BEYOND6, ROUTER_LAN6] if v6 else [BEYOND, ROUTER_LAN]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-c", _PROBE, *targets],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()  # after its first round: the scenario may start
        assert ready == b"sending\n", "the prober did not start"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def probe_once(ns: str, v6: bool = False) -> None:
    """A burst of the prober's packets (for controls): 10 of each."""
    targets = [BEYOND6, ROUTER_LAN6] if v6 else [BEYOND, ROUTER_LAN]
    run("python3", "-c", _PROBE, *targets, "10", ns=ns, check=False)


def strict_ssh(client: Client, known_hosts: Path) -> str:
    """The ssh command for ``connect -e`` that checks the gateway's host key."""
    argv = ["ssh", "-F", "/dev/null", "-i", str(client.key), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]  # fmt: skip
    return " ".join(shlex.quote(a) for a in argv)


def ssh_pids(ns: str) -> list[int]:
    """The ssh client processes in a namespace (connect's children)."""
    pids = []
    for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "ssh":
                pids.append(int(pid))
    return pids


def kill_ssh(ns: str) -> None:
    """ssh gives up (as after ServerAliveCountMax unanswered probes), at once."""
    for pid in ssh_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def snapshot(ns: str) -> dict[str, str]:
    """Everything connect may change on the client host, as text."""
    v6_routes = run("ip", "-6", "route", "show", "table", "all", ns=ns).stdout
    return {
        "rules4": run("ip", "-4", "rule", ns=ns).stdout,
        "rules6": run("ip", "-6", "rule", ns=ns).stdout,
        "routes4": run("ip", "-4", "route", "show", "table", "all", ns=ns).stdout,
        "routes6": "".join(x for x in v6_routes.splitlines(True) if "fe80::" not in x),
        "nft": run("nft", "list", "ruleset", ns=ns).stdout,
        "resolv": run("cat", "/etc/resolv.conf", ns=ns).stdout,
        "links": " ".join(
            link["ifname"]
            for link in json.loads(run("ip", "-j", "link", ns=ns).stdout)
            if link["ifname"].startswith(("tun", "tap"))
        ),
    }


def _dns_answers(ns: str) -> bool:
    result = run("getent", "ahostsv4", GATEWAY_NAME, ns=ns, check=False)
    return GATEWAY in result.stdout


def wait_for(predicate, timeout: float, what: str) -> None:
    assert wait_until(predicate, timeout, 0.1), f"not within {timeout:g}s: {what}"


# A UDP sender: argv targets, then optionally a count (else forever, every 20 ms).
_PROBE = """
import socket, sys, time
args = sys.argv[1:]
count = int(args.pop()) if args[-1].isdigit() else None
sent = 0
while count is None or sent < count:
    for target in args:
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(b"leak", (target, 9))
            except OSError:
                pass
    if sent == 0:
        print("sending", flush=True)
    sent += 1
    time.sleep(0.02)
"""

# The LAN's DNS server: A records for one name, NXDOMAIN for the rest; counts queries.
_DNS_SERVER = """
import socket, struct, sys
listen, name, address, log = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((listen, 53))
count = 0
while True:
    query, peer = s.recvfrom(512)
    count += 1
    with open(log, "w") as f:
        f.write(str(count))
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1 : i + 1 + query[i]].decode().lower())
        i += 1 + query[i]
    qtype = struct.unpack("!H", query[i + 1 : i + 3])[0]
    question = query[12 : i + 5]
    found = ".".join(labels) == name and qtype == 1
    flags = 0x8180 if found or ".".join(labels) == name else 0x8183
    head = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if found else 0, 0, 0)
    answer = b""
    if found:
        answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    s.sendto(head + question + answer, peer)
"""
