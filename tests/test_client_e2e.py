"""``tunhelper connect`` as a daily VPN client, end to end: the client reaches its
gateways through a router namespace (not a connected subnet), as on a real network.

    client (10.232.N.2) -- router (10.232.N.1 | 10.231.0.254, 10.241.0.254) -- gateways

The gateway also has 198.51.100.1, which the router cannot reach: a ping to it
succeeds only through the tunnel ("an address beyond the gateway").
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab import UNDERLAY, Client, Connect, Lab, run, tunhelper_command, wait_until

GATEWAY = f"{UNDERLAY}.0.1"
BEYOND = "198.51.100.1"
FULL = ["--pool", "192.168.3.0/24", "--route", "0.0.0.0/1", "--route", "128.0.0.0/1"]
ORIGINAL_RESOLV = "nameserver 10.232.0.53\n"


class Router:
    """A router namespace between one client and the labs' bridges."""

    def __init__(self, lab: Lab, client: Client) -> None:
        self.lab, self.client = lab, client
        self.ns = f"th-{lab.tag}-rt"
        run("ip", "netns", "add", self.ns)
        lab.namespaces.append(self.ns)
        run("ip", "link", "set", "lo", "up", ns=self.ns)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.ns)
        # The client leaves the bridge: its only way out is the router.
        run("ip", "link", "del", "eth0", ns=client.ns)
        self.client_side = "cl0"
        run("ip", "link", "add", self.client_side, "netns", self.ns, "type", "veth", "peer",
            "name", "eth0", "netns", client.ns)  # fmt: skip
        run("ip", "addr", "add", "10.232.0.1/24", "dev", self.client_side, ns=self.ns)
        run("ip", "link", "set", self.client_side, "up", ns=self.ns)
        run("ip", "addr", "add", "10.232.0.2/24", "dev", "eth0", ns=client.ns)
        run("ip", "link", "set", "eth0", "up", ns=client.ns)
        run("ip", "route", "add", "default", "via", "10.232.0.1", ns=client.ns)
        self.attach(lab, f"{UNDERLAY}.0.254/16", "g0")
        run("ip", "addr", "add", f"{BEYOND}/32", "dev", "lo", ns=lab.server_ns)
        # resolv.conf of the client's namespace: `ip netns exec` bind-mounts this file.
        self.etc = Path("/etc/netns") / client.ns
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(ORIGINAL_RESOLV)

    def attach(self, lab: Lab, address: str, name: str) -> None:
        """A leg of the router on ``lab``'s bridge, and the lab's route back to clients."""
        outer = f"thv{lab.tag}{name}"
        run("ip", "link", "add", outer, "netns", lab.server_ns, "type", "veth", "peer", "name",
            name, "netns", self.ns)  # fmt: skip
        run("ip", "link", "set", outer, "master", lab.bridge, ns=lab.server_ns)
        run("ip", "link", "set", outer, "up", ns=lab.server_ns)
        run("ip", "addr", "add", address, "dev", name, ns=self.ns)
        run("ip", "link", "set", name, "up", ns=self.ns)
        via = address.split("/")[0]
        run("ip", "route", "add", "10.232.0.0/16", "via", via, ns=lab.server_ns)

    def resolv_conf(self) -> str:
        return (self.etc / "resolv.conf").read_text()

    def close(self) -> None:
        shutil.rmtree(self.etc, ignore_errors=True)

    def counters(self) -> dict[str, int]:
        """The router's own ICMP echo and UDP counters (its namespace's /proc/net/snmp)."""
        text = run("cat", "/proc/net/snmp", ns=self.ns).stdout.splitlines()
        out = {}
        for names, values in zip(text[::2], text[1::2], strict=False):
            proto = names.split(":")[0]
            for k, v in zip(names.split()[1:], values.split()[1:], strict=False):
                out[f"{proto}.{k}"] = int(v)
        return out


@pytest.fixture
def routed(make_lab):
    routers: list[Router] = []

    def factory(helper_args=FULL, **kw) -> tuple[Lab, Client, Router]:
        lab = make_lab(helper_args, **kw)
        client = lab.add_client()
        router = Router(lab, client)
        routers.append(router)
        return lab, client, router

    yield factory
    for router in routers:
        router.close()


def connect(client: Client, *args: str, dest: tuple[str, ...] = (f"root@{GATEWAY}",)):
    return client.tunhelper_connect(*args, *dest[:-1], server=dest[-1])


def snapshot(client: Client) -> dict[str, str]:
    """Everything connect may change on the client host, as text."""
    ns = client.ns
    return {
        "rules4": run("ip", "-4", "rule", ns=ns).stdout,
        "rules6": run("ip", "-6", "rule", ns=ns).stdout,
        "routes4": run("ip", "-4", "route", "show", "table", "all", ns=ns).stdout,
        # without eth0's link-local address, which appears on its own once DAD is done
        "routes6": "".join(
            line
            for line in run("ip", "-6", "route", "show", "table", "all", ns=ns).stdout.splitlines(1)
            if "fe80::" not in line
        ),
        "nft": run("nft", "list", "ruleset", ns=ns).stdout,
        "resolv": run("cat", "/etc/resolv.conf", ns=ns).stdout,
        "links": " ".join(client.tun_devices()),
    }


def ping(client: Client, address: str, count: int = 1) -> bool:
    argv = ("ping", "-c", str(count), "-W", "2", address)
    return run(*argv, ns=client.ns, check=False).returncode == 0


def route_dev(client: Client, address: str) -> str:
    out = json.loads(run("ip", "-j", "route", "get", address, ns=client.ns).stdout)
    return out[0]["dev"]


def test_full_tunnel_reaches_beyond_the_gateway_and_ssh_survives(routed) -> None:
    lab, client, router = routed([*FULL, "--dns", "192.168.3.53"])
    before = snapshot(client)
    assert ping(client, GATEWAY) and not ping(client, BEYOND)  # routed, and nothing beyond
    conn = connect(client, "--json")
    status = json.loads(conn.status() or "{}")
    assert status.get("address") == "192.168.3.2", conn.stderr()
    device = status["device"]
    assert ping(client, BEYOND, 3)  # only the tunnel leads there
    assert route_dev(client, BEYOND) == device
    assert route_dev(client, "10.232.0.77") == "eth0"  # the LAN stays local
    assert route_dev(client, GATEWAY) == "eth0"  # ssh's own peer stays outside
    assert router.resolv_conf() == "" or "nameserver 192.168.3.53" in router.resolv_conf()
    assert "nameserver 192.168.3.53" in snapshot(client)["resolv"]
    time.sleep(3)
    assert conn.proc.poll() is None and ping(client, BEYOND)  # ssh survived its own tunnel
    assert conn.interrupt() == 0
    assert snapshot(client) == before


def test_clean_exit_after_sigkill_then_disconnect(routed) -> None:
    lab, client, router = routed([*FULL, "--dns", "192.168.3.53"])
    before = snapshot(client)
    conn = connect(client, "--json", "--kill-switch")
    status = json.loads(conn.status() or "{}")
    assert status.get("address"), conn.stderr()
    during = snapshot(client)
    assert during["rules4"] != before["rules4"] and during["nft"] != before["nft"]
    assert during["resolv"] != before["resolv"]
    conn.proc.send_signal(signal.SIGKILL)  # `ip netns exec` execs: this is connect itself
    conn.wait(5)
    assert snapshot(client)["rules4"] == during["rules4"]  # left behind, as SIGKILL does
    result = run(tunhelper_command(), "disconnect", ns=client.ns, check=False)
    assert result.returncode == 0, result.stderr
    assert "client-" in result.stdout
    assert wait_until(lambda: snapshot(client) == before, 10), (snapshot(client), before)
    assert wait_until(lambda: [x["state"] for x in lab.leases()] == ["released"], 10)


def test_an_existing_controlmaster_does_not_take_the_tunnel(routed, tmp_path: Path) -> None:
    lab, client, router = routed(FULL, sshd_options={"Port": "2222"})
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host *\n  ControlMaster auto\n  ControlPath {lab.dir}/cm-%p\n  ControlPersist 60\n"
        f"Match host office\n  HostName {GATEWAY}\n  Port 2222\n  User root\n"
        f"Host *\n  IdentityFile {client.key}\n  BatchMode yes\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    master = subprocess.run(
        ["ip", "netns", "exec", client.ns, "ssh", "-F", str(config), "-MNf", "office"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert master.returncode == 0, master.stderr
    assert list(lab.dir.glob("cm-*")), "the master connection exists"
    ssh_cmd = f"ssh -F {shlex.quote(str(config))}"
    muxed = client.tunhelper_connect("-e", ssh_cmd, "--multiplex", server="office")
    assert muxed.status(15) is None  # through the master, the tunnel never comes up
    muxed.wait(15)
    conn = client.tunhelper_connect("-e", ssh_cmd, "--json", server="office")
    status = json.loads(conn.status() or "{}")
    assert status.get("address") == "192.168.3.2", conn.stderr()
    assert ping(client, BEYOND)
    assert conn.interrupt() == 0
    run("ip", "netns", "exec", client.ns, "ssh", "-F", str(config), "-O", "exit", "office",
        check=False)  # fmt: skip


def test_reconnect_after_sshd_restart_and_a_10s_cut_gets_the_same_address(routed) -> None:
    lab, client, router = routed()
    conn = connect(client, "--json", "--reconnect")
    first = json.loads(conn.status() or "{}")
    assert first.get("address"), conn.stderr()
    run("ip", "link", "set", router.client_side, "down", ns=router.ns)
    lab.power_cut()  # every server process dies; sshd starts again
    time.sleep(10)
    run("ip", "link", "set", router.client_side, "up", ns=router.ns)
    again = json.loads(conn.status(90) or "{}")
    assert again.get("address") == first["address"], conn.stderr()
    assert again["device"] == first["device"]  # the same unit asked for again
    assert ping(client, BEYOND)
    assert conn.proc.poll() is None
    assert conn.interrupt() == 0


def test_refused_with_reconnect_stops_at_once(routed) -> None:
    lab, client, router = routed(["--pool", "192.168.3.0/30"])  # one address
    holder = lab.add_client().tunhelper_connect()  # another identity, on the bridge
    assert holder.status() is not None, holder.stderr()
    late = connect(client, "--reconnect")
    assert late.wait(30) == 1, late.stderr()  # no retry after the refusal
    assert "is exhausted" in late.stderr()


def test_authentication_failure_is_exit_5_and_not_retried(routed) -> None:
    lab, client, router = routed()
    lab._keys.clear()
    (lab.dir / "authorized_keys").write_text("")
    conn = connect(client, "--reconnect")
    assert conn.wait(30) == 5
    assert "could not authenticate" in conn.stderr()


def test_failover_to_the_next_gateway_when_one_is_destroyed(routed, make_lab) -> None:
    lab, client, router = routed(FULL, sshd_options={"ListenAddress": "0.0.0.0"})  # noqa: S104
    other = make_lab(FULL, sshd_options={"ListenAddress": "0.0.0.0"})  # noqa: S104
    other.authorize(client.public_key)
    run("ip", "addr", "add", "10.241.0.1/16", "dev", other.bridge, ns=other.server_ns)
    router.attach(other, "10.241.0.254/16", "g1")
    run("ip", "addr", "add", f"{BEYOND}/32", "dev", "lo", ns=other.server_ns)
    conn = connect(client, "--json", "--reconnect", dest=(f"root@{GATEWAY}", "root@10.241.0.1"))
    first = json.loads(conn.status() or "{}")
    assert first.get("destination") == f"root@{GATEWAY}", conn.stderr()
    for pid in lab.server_pids():  # the first gateway's namespace is destroyed
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run("ip", "netns", "del", lab.server_ns)
    moved = json.loads(conn.status(60) or "{}")
    assert moved.get("destination") == "root@10.241.0.1", conn.stderr()
    assert ping(client, BEYOND)
    assert conn.interrupt() == 0


def test_kill_switch_leaks_nothing_while_the_link_is_down(routed) -> None:
    lab, client, router = routed()
    before = snapshot(client)
    leak = ("ping", "-c", "3", "-i", "0.2", "-W", "1", "10.232.0.1")
    start = router.counters()["Icmp.InEchos"]
    run(*leak, ns=client.ns, check=False)
    assert router.counters()["Icmp.InEchos"] - start == 3  # the counter sees a leak
    conn = connect(client, "--json", "--reconnect", "--kill-switch")
    assert json.loads(conn.status() or "{}").get("address"), conn.stderr()
    assert ping(client, BEYOND)
    for pid in lab.server_pids():  # the gateway goes away: connect keeps reconnecting
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: client.tun_devices() == [], 10)
    start = router.counters()
    run(*leak, ns=client.ns, check=False)
    run("ping", "-c", "2", "-W", "1", BEYOND, ns=client.ns, check=False)
    udp = "import socket; socket.socket(2, 2).sendto(b'x', ('10.232.0.1', 9))"
    run("python3", "-c", udp, ns=client.ns, check=False)
    after = router.counters()
    assert after["Icmp.InEchos"] == start["Icmp.InEchos"]
    assert after["Udp.NoPorts"] + after["Udp.InDatagrams"] == (
        start["Udp.NoPorts"] + start["Udp.InDatagrams"]
    )
    assert conn.proc.poll() is None  # still trying
    assert conn.interrupt() == 0
    assert snapshot(client) == before


def test_a_profile_under_a_notify_socket_reports_ready_with_the_address(
    routed, monkeypatch, tmp_path: Path
) -> None:
    lab, client, router = routed()
    directory = Path("/etc/tunhelper/connect")
    created = [d for d in (directory.parent, directory) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    name = f"test-{lab.tag}"
    conf = directory / f"{name}.conf"
    conf.write_text(f"destination = root@{GATEWAY}\nssh = {client.ssh_command()}\njson = yes\n")
    conf.chmod(0o600)
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(address)
        manager.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        try:
            argv = ["ip", "netns", "exec", client.ns, tunhelper_command(), "connect"]
            conn = Connect(client, [*argv, "--profile", name])
            client.sessions.append(conn)
            status = json.loads(conn.status() or "{}")
            assert status.get("address") == "192.168.3.2", conn.stderr()
            messages = [manager.recv(4096).decode()]
            while "READY=1" not in messages[-1]:
                messages.append(manager.recv(4096).decode())
        finally:
            conf.unlink()
            for made in reversed(created):  # the host's /etc as it was
                made.rmdir()
    assert messages[0] == f"STATUS=connecting to root@{GATEWAY}"
    assert messages[-1].splitlines() == [
        "READY=1",
        f"STATUS=connected: {status['device']} 192.168.3.2 to root@{GATEWAY}",
    ]
    assert conn.interrupt() == 0


def test_roaming_to_a_new_default_gateway_keeps_the_tunnel(routed) -> None:
    """The underlying default route moves to another router address and the old one
    disappears: the peer's policy rule follows the main table, a pinned host route
    through the old next hop would not."""
    lab, client, router = routed()
    conn = connect(client, "--json")
    assert json.loads(conn.status() or "{}").get("address"), conn.stderr()
    side = router.client_side
    run("sysctl", "-qw", f"net.ipv4.conf.{side}.promote_secondaries=1", ns=router.ns)
    run("ip", "addr", "add", "10.232.0.254/24", "dev", side, ns=router.ns)
    run("ip", "route", "replace", "default", "via", "10.232.0.254", ns=client.ns)
    run("ip", "addr", "del", "10.232.0.1/24", "dev", side, ns=router.ns)
    run("ip", "neigh", "flush", "all", ns=client.ns)
    assert not ping(client, "10.232.0.1")  # the old next hop is gone
    assert ping(client, BEYOND, 3)  # the tunnel, whose ssh now leaves by .254
    time.sleep(2)
    assert conn.proc.poll() is None and ping(client, BEYOND)
    assert conn.interrupt() == 0
