"""``tunhelper connect --kill-switch`` under a hostile network, a hostile gateway and
ordinary accidents (issue 23), end to end in namespaces with a real sshd.

The router between the client and the gateway counts every packet that reaches it
outside the tunnel (tests/hostile.py); a prober sends packets that must not leave
all along each scenario. Each test's control shows that the same count sees the
prober's packets once the network is given back (``tunhelper disconnect``), or that
the state check sees what is left behind.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from tests.hostile import (
    BEYOND,
    BEYOND6,
    FULL,
    FULL6,
    GATEWAY,
    GATEWAY6,
    GATEWAY_NAME,
    LAN_DNS,
    HostileNet,
    Prober,
    kill_ssh,
    probe_once,
    snapshot,
    ssh_pids,
    strict_ssh,
    wait_for,
)
from tests.lab import Client, Session, run, tunhelper_command


@pytest.fixture
def hostile(make_lab):
    nets: list[HostileNet] = []

    def factory(helper_args=FULL, *, ipv6_only=False, command=None, **kw):
        lab = make_lab(helper_args, **kw)
        client = lab.add_client(command=command)
        net = HostileNet(lab, client, ipv6_only)
        nets.append(net)
        return lab, client, net

    yield factory
    for net in nets:
        net.close()


def up(conn, timeout: float = 60) -> dict:
    status_line = json.loads(conn.status(timeout) or "{}")
    assert status_line.get("address"), conn.stderr()
    return status_line


def given_back(client: Client, net: HostileNet, start: int, v6: bool = False) -> None:
    """The control: with the network given back, the prober's packets are counted."""
    probe_once(client.ns, v6)
    assert net.leaks() > start, "the counter must see packets outside the tunnel"


def tunhelper_lines(conn, needle: str) -> list[str]:
    return [x for x in conn.stderr().splitlines() if x.startswith("tunhelper") and needle in x]


def test_a_cut_then_an_impostor_with_another_host_key_stays_blocked(hostile) -> None:
    """The café attack: the tunnel's packets vanish until ssh gives up (here: ssh is
    killed once the path is cut), and the gateway's address is answered by the
    attacker's sshd. connect must stay blocked, name the key, and leak nothing."""
    lab, client, net = hostile()
    strict = strict_ssh(client, net.known_hosts)
    conn = net.connect("-e", strict, "--json", "--reconnect", "--kill-switch")
    up(conn)
    start = net.leaks()
    with Prober(client.ns):
        net.cut()
        fingerprint = net.impersonate_gateway()
        kill_ssh(client.ns)
        wait_for(lambda: net.state() == "blocked", 45, "connect says it is blocked")
        net.heal()  # the impostor still answers: it owns the gateway's address now
        time.sleep(1)  # noqa: ASYNC251 - a window for a wrong unlock to show, not a sync
        assert net.state() == "blocked"
    assert net.leaks() == start
    assert net.kill_switch_tables(), "the kill-switch stays"
    (line,) = tunhelper_lines(conn, fingerprint)  # one line: which key, and the threat
    assert "hostile" in line, line
    (running,) = net.status()
    assert fingerprint in json.dumps(running), running  # the last error names it too
    result = net.disconnect()
    assert result.returncode == 0, result.stderr
    assert net.kill_switch_tables() == []
    given_back(client, net, start)


def test_a_refused_reconnect_stays_blocked(hostile) -> None:
    """The roaming client's old session is still live on the gateway, which refuses
    extra sessions: the reconnect is refused, and the kill-switch must stay."""
    lab, client, net = hostile([*FULL, "--refuse-extra"])
    conn = net.connect("--json", "--reconnect", "--kill-switch")
    up(conn)
    port = _ssh_local_port(client)
    start = net.leaks()
    with Prober(client.ns):
        net.cut(port)  # only the old connection: the gateway keeps its session
        kill_ssh(client.ns)
        wait_for(lambda: "refus" in conn.stderr(), 45, "the gateway refuses the reconnect")
        wait_for(lambda: net.state() == "blocked", 30, "connect says it is blocked")
        assert conn.proc.poll() is None or net.kill_switch_tables(), conn.stderr()
    assert net.leaks() == start
    assert net.kill_switch_tables()
    assert net.disconnect().returncode == 0
    given_back(client, net, start)


def test_a_containers_forwarded_traffic_never_leaves_outside_the_tunnel(hostile) -> None:
    lab, client, net = hostile()
    container = net.container()
    conn = net.connect("--json", "--reconnect", "--kill-switch")
    first = up(conn)
    start = net.leaks()
    with Prober(container):  # to the LAN while up, beyond the gateway while down
        time.sleep(1)  # noqa: ASYNC251 - traffic while connected, not a sync
        kill_ssh(client.ns)  # the link drops; connect reconnects
        again = up(conn)
        assert again["device"] == first["device"]
    assert net.leaks() == start
    assert net.disconnect().returncode == 0
    probe_once(container)
    assert net.leaks() > start  # the control: forwarding is open again


def test_a_gateway_named_only_by_the_lans_dns_connects_and_reconnects(hostile) -> None:
    lab, client, net = hostile()
    assert run("getent", "hosts", GATEWAY_NAME, ns=client.ns, check=False).returncode != 0
    queries = net.serve_gateway_name()  # the control: only the LAN's DNS knows it
    strict = strict_ssh(client, net.known_hosts)
    args = ("-e", strict, "--json", "--reconnect", "--kill-switch")
    conn = net.connect(*args, server=f"root@{GATEWAY_NAME}")
    up(conn)  # resolved once, before blocking; ssh never looks it up itself
    asked = int(queries.read_text())
    assert asked > 0
    start = net.leaks()
    with Prober(client.ns):
        kill_ssh(client.ns)
        up(conn)
    assert net.leaks() == start
    assert int(queries.read_text()) == asked  # no query left the host under the switch
    assert net.disconnect().returncode == 0
    given_back(client, net, start)


def test_ipv6_only_underlay_survives_a_neighbour_cache_flush(hostile) -> None:
    lab, client, net = hostile(FULL6, ipv6_only=True, sshd_options={"ListenAddress": "::"})
    conn = net.connect("--json", "--reconnect", "--kill-switch", server=f"root@{GATEWAY6}")
    up(conn)
    ping6 = ("ping", "-6", "-c", "1", "-W", "1", BEYOND6)
    assert run(*ping6, ns=client.ns, check=False).returncode == 0
    start = net.leaks()
    with Prober(client.ns, v6=True):
        for ns in (client.ns, net.ns):
            run("ip", "-6", "neigh", "flush", "all", ns=ns)
        wait_for(
            lambda: run(*ping6, ns=client.ns, check=False).returncode == 0,
            30,
            "the tunnel carries again after the flush",
        )
        kill_ssh(client.ns)  # a flap: the reconnect needs neighbour discovery too
        for ns in (client.ns, net.ns):
            run("ip", "-6", "neigh", "flush", "all", ns=ns)
        up(conn)
    assert net.leaks() == start
    assert net.disconnect().returncode == 0
    given_back(client, net, start, v6=True)


_SUBREAPER = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
code = subprocess.Popen(sys.argv[1:]).wait()
print(f"exit {code}", flush=True)
time.sleep(3600)  # adopts the detached connect and never reaps it
"""


def test_background_kill_switch_then_disconnect_under_a_subreaper(hostile) -> None:
    lab, client, net = hostile()
    before = snapshot(client.ns)
    argv = [tunhelper_command(), "connect", "-e", client.ssh_command(), "--json",
            "--background", "--kill-switch", f"root@{GATEWAY}"]  # fmt: skip
    reaper = Session(client, net.client_argv("python3", "-c", _SUBREAPER, *argv))
    client.sessions.append(reaper)
    assert json.loads(reaper.read_line(30) or "{}").get("address"), reaper.stderr()
    assert reaper.read_line(15) == "exit 0"
    during = snapshot(client.ns)
    assert during["nft"] != before["nft"]  # the control: the snapshot sees the table
    assert len(net.kill_switch_tables()) == 1  # one table, named once
    began = time.monotonic()
    result = net.disconnect()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 45  # it ends: a hung one never would
    assert snapshot(client.ns) == before
    assert net.status() == []
    result = net.disconnect()  # a second one finds nothing to do, and says so
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 1
    assert snapshot(client.ns) == before


def test_a_restarted_connect_takes_over_the_kill_switch_without_a_gap(hostile) -> None:
    lab, client, net = hostile()
    before = snapshot(client.ns)
    first = net.connect("--json", "--kill-switch")
    up(first)
    start = net.leaks()
    with Prober(client.ns):
        first.proc.kill()  # as a crash or an OOM kill: its table stays, recorded
        first.wait(10)
        second = net.connect("--json", "--kill-switch")
        up(second)
    assert net.leaks() == start
    assert len(net.kill_switch_tables()) == 1
    assert second.interrupt() == 0  # the user's request: everything given back
    assert snapshot(client.ns) == before
    given_back(client, net, start)


def test_sigkill_at_random_points_of_setup_then_disconnect_leaves_nothing(hostile) -> None:
    lab, client, net = hostile([*FULL, "--dns", "192.168.3.53"])
    before = snapshot(client.ns)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    left_something = 0
    for attempt in range(5):
        conn = net.connect("--json", "--kill-switch")
        if attempt == 4:
            up(conn)  # the last one once the link is up, so something is always there
        else:
            time.sleep(rng.uniform(0.05, 1.5))  # noqa: ASYNC251 - the random kill point
        conn.proc.kill()
        conn.wait(10)
        left = snapshot(client.ns) != before or ssh_pids(client.ns) != []
        left_something += left
        result = net.disconnect()
        assert "Traceback" not in result.stderr, (seed, attempt, result.stderr)
        if left:  # with nothing to end, disconnect may say so and fail, truthfully
            assert result.returncode == 0, (seed, attempt, result.stderr)
        wait_for(lambda: snapshot(client.ns) == before, 20, f"clean (seed {seed}, {attempt})")
        assert ssh_pids(client.ns) == [], (seed, attempt)
    assert left_something >= 1  # the control: the snapshot saw what SIGKILL left


CRAFTED = {
    "version": 1,
    "address": "192.168.3.2",
    "prefix": 32,
    "gateway": "192.168.3.1",
    "mode": "tun",
    "mtu": 1500,
    # the LAN's halves, a LAN host (its resolver), a route over the ssh peer, one inside
    # a network the client routes through its LAN's router, and one honest route
    "routes": [
        "10.232.0.0/25",
        "10.232.0.128/25",
        f"{LAN_DNS}/32",
        "10.231.0.0/16",
        "10.50.7.0/24",
        "198.51.100.0/24",
    ],  # fmt: skip
}


def test_a_hostile_announcement_never_takes_the_lan_or_the_ssh_peer(hostile) -> None:
    line = json.dumps(CRAFTED, separators=(",", ":"))
    lab, client, net = hostile(command=f"printf '%s\\n' '{line}'; exec sleep 600")
    run("ip", "route", "add", "10.50.0.0/16", "via", "10.232.0.1", ns=client.ns)
    conn = net.connect("--json")
    device = up(conn)["device"]
    for lan_host in ("10.232.0.77", "10.232.0.200", LAN_DNS, GATEWAY, "10.50.7.1"):
        assert _route_dev(client, lan_host) == "eth0", lan_host
    assert _route_dev(client, BEYOND) == device  # the honest route is applied
    for dropped in CRAFTED["routes"][:5]:
        assert len(tunhelper_lines(conn, dropped)) == 1, (dropped, conn.stderr())
    assert conn.proc.poll() is None  # dropped, not refused: the link stays up
    # the control: the same route added by hand does take a LAN host
    run("ip", "route", "add", "10.232.0.0/25", "dev", device, ns=client.ns)
    assert _route_dev(client, "10.232.0.77") == device
    assert conn.interrupt() == 0


def _route_dev(client: Client, address: str) -> str:
    out = json.loads(run("ip", "-j", "route", "get", address, ns=client.ns).stdout)
    return out[0]["dev"]


def _ssh_local_port(client: Client) -> int:
    """The local port of the client's ssh connection to the gateway."""
    out = run("ss", "-Htn", "state", "established", "dst", GATEWAY, ns=client.ns).stdout
    ports = {int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines()}
    assert len(ports) == 1, out
    return ports.pop()
