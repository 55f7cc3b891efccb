"""``tunhelper connect`` end to end: a real sshd, real ssh, no manual step on the client."""

from __future__ import annotations

import json
import os

from tests.lab import Lab, run, tunhelper_command, wait_until

GATEWAY = "192.168.3.1"


def client_inet(client, device: str) -> list[dict]:
    out = json.loads(run("ip", "-j", "addr", "show", "dev", device, ns=client.ns).stdout)
    return [a for a in out[0]["addr_info"] if a["family"] == "inet"]


def ping_via(client, device: str, address: str) -> bool:
    argv = ("ping", "-c", "1", "-W", "2", "-I", device, address)
    return run(*argv, ns=client.ns, check=False).returncode == 0


def server_lease_state(lab: Lab, address: str) -> str:
    return next(x["state"] for x in lab.leases() if x["address"] == address)


def test_connect_then_ping_the_gateway_with_no_manual_step(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    conn = client.tunhelper_connect()
    status = conn.status()
    assert status is not None, conn.stderr()
    device, address, _, gateway, _, mtu = status.split()
    assert (address, gateway, mtu) == ("192.168.3.2", GATEWAY, "16380")
    (inet,) = client_inet(client, device)
    assert (inet["local"], inet["address"], inet["prefixlen"]) == (address, GATEWAY, 32)
    assert ping_via(client, device, GATEWAY)
    assert lab.ping_from_server(address)
    assert server_lease_state(lab, address) == "active"
    assert conn.proc.poll() is None  # stays in the foreground while the link is up


def test_sigint_removes_the_local_address_and_releases_the_server_lease(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    conn = client.tunhelper_connect("--json")
    status = json.loads(conn.status() or "{}")
    assert status["address"] == "192.168.3.2" and status["mode"] == "tun", conn.stderr()
    assert conn.interrupt() == 0  # ended on request
    assert client.tun_devices() == []  # ssh gone, so is its device and the address on it
    assert wait_until(lambda: server_lease_state(lab, status["address"]) == "released", 5)
    assert wait_until(lambda: lab.server_tun_devices() == [], 5)


def test_two_connects_from_one_host_get_two_working_links(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/24", "--max-sessions", "2"])  # one key, twice
    client = lab.add_client()
    first, second = client.tunhelper_connect("--json"), client.tunhelper_connect("--json")
    a, b = json.loads(first.status() or "{}"), json.loads(second.status() or "{}")
    assert a and b, (first.stderr(), second.stderr())
    assert a["device"] != b["device"] and a["address"] != b["address"]
    assert ping_via(client, a["device"], GATEWAY)
    assert ping_via(client, b["device"], GATEWAY)
    # From the server, only one: the client's two routes to the one gateway collide, so
    # the other link's replies leave by the first tunnel, and the gateway drops what
    # arrives on a session's tunnel from another session's address (docs/security.md).
    assert any(lab.ping_from_server(x["address"]) for x in (a, b))


def test_refusal_is_shown_as_the_server_wrote_it_and_connect_fails(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/30"])  # one client address
    holder, late = lab.add_client(), lab.add_client()
    assert holder.tunhelper_connect().status() is not None
    conn = late.tunhelper_connect()
    assert conn.status() is None  # no status line: the link never came up
    code = conn.wait(15)
    assert code == 1
    stderr = conn.stderr()
    assert "tunhelper: pool 192.168.3.0/30 is exhausted" in stderr  # the server's own words
    assert "before the server announced an address" in stderr  # not "within 30s"
    assert "no announcement" not in stderr and "Traceback" not in stderr
    assert late.tun_devices() == []


def test_background_and_disconnect(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    pid_file = str(lab.dir / "connect.pid")
    conn = client.tunhelper_connect("--background", "--pid-file", pid_file)
    status = conn.status()
    assert status is not None, conn.stderr()
    assert conn.wait(10) == 0  # the foreground part returns once the link is up
    device, address = status.split()[:2]
    assert ping_via(client, device, GATEWAY)
    assert os.path.exists(pid_file)
    result = run(tunhelper_command(), "disconnect", "--pid-file", pid_file, ns=client.ns)
    assert pid_file in result.stdout
    assert not os.path.exists(pid_file)
    assert client.tun_devices() == []
    assert wait_until(lambda: server_lease_state(lab, address) == "released", 5)
