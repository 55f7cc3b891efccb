"""Ethernet (tap) sessions end to end: one bridge per pool, shared by layer-2 clients."""

from __future__ import annotations

import json
import os
import signal

from tests.lab import Lab, run, wait_until

GATEWAY = "192.168.3.1"


def ping(client, address: str) -> bool:
    return run("ping", "-c", "1", "-W", "2", address, ns=client.ns, check=False).returncode == 0


def tap_connect(client) -> dict:
    conn = client.tunhelper_connect("--tap", "--json")
    status = json.loads(conn.status() or "{}")
    assert status, conn.stderr()
    status["connect"] = conn
    return status


def bridges(lab: Lab) -> list[str]:
    out = json.loads(run("ip", "-j", "link", "show", "type", "bridge", ns=lab.server_ns).stdout)
    return sorted(link["ifname"] for link in out if link["ifname"] != lab.bridge)


def test_three_tap_clients_share_a_bridge_beside_a_tun_client(make_lab) -> None:
    lab = make_lab()
    taps = [lab.add_client(f"tap{i}") for i in range(3)]
    conns = [c.tunhelper_connect("--tap", "--json") for c in taps]  # all at once
    status = [json.loads(c.status() or "{}") for c in conns]
    assert all(status), [c.stderr() for c in conns]
    assert all(s["mode"] == "tap" and s["prefix"] == 24 for s in status)
    addresses = [s["address"] for s in status]
    assert len(set(addresses)) == 3
    (bridge,) = bridges(lab)
    bridge_addr = json.loads(
        run("ip", "-j", "addr", "show", "dev", bridge, ns=lab.server_ns).stdout
    )
    assert {
        (a["local"], a["prefixlen"]) for a in bridge_addr[0]["addr_info"] if a["family"] == "inet"
    } == {(GATEWAY, 24)}
    for client in taps:
        assert ping(client, GATEWAY)
        assert all(ping(client, a) for a in addresses)  # each other, across the bridge

    tun_client = lab.add_client("tun")
    tun = tun_client.tunhelper_connect("--json")
    tun_status = json.loads(tun.status() or "{}")
    assert tun_status.get("mode") == "tun", tun.stderr()
    assert tun_status["address"] not in addresses  # one pool, no collision
    assert ping(tun_client, GATEWAY)
    assert lab.ping_from_server(tun_status["address"])

    assert conns[0].interrupt() == 0  # one tap client leaves
    assert wait_until(
        lambda: (
            len(
                json.loads(
                    run("ip", "-j", "link", "show", "master", bridge, ns=lab.server_ns).stdout
                )
            )
            == 2
        ),
        5,
    )
    assert ping(taps[1], addresses[2]) and ping(taps[2], addresses[1])
    assert ping(tun_client, GATEWAY)

    for conn in (conns[1], conns[2], tun):
        assert conn.interrupt() == 0
    assert wait_until(lambda: lab.server_links() == [], 5), lab.server_links()
    assert wait_until(lambda: not [x for x in lab.leases() if x["state"] == "active"], 5)


def test_a_killed_helpers_bridge_is_repaired(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    status = tap_connect(client)
    (bridge,) = bridges(lab)
    helper = next(x["pid"] for x in lab.leases() if x["address"] == status["address"])
    os.kill(helper, signal.SIGKILL)
    assert ping(client, GATEWAY)  # the session and its bridge port live on
    status["connect"].interrupt()  # the client leaves: sshd closes the tap
    assert wait_until(lambda: not [p for p in lab.server_links() if p.startswith("tap")], 5)
    assert bridges(lab) == [bridge]  # left behind by the killed helper...
    lab.leases()  # ...until the next admin look (or the next session) repairs it
    assert bridges(lab) == []
    assert lab.server_links() == []


def test_existing_bridge_joined_never_removed_and_lan_prefix_announced(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.128/25", "--bridge", "lan0"])
    ns = lab.server_ns
    run("ip", "link", "add", "lan0", "type", "bridge", ns=ns)
    run("ip", "addr", "add", "192.168.3.1/24", "dev", "lan0", ns=ns)
    run("ip", "link", "set", "lan0", "up", ns=ns)
    a, b = lab.add_client(), lab.add_client()
    sa, sb = tap_connect(a), tap_connect(b)
    assert (sa["address"], sa["prefix"], sa["gateway"]) == ("192.168.3.129", 24, None)
    assert sb["address"] == "192.168.3.130"
    assert ping(a, "192.168.3.1") and ping(a, sb["address"]) and ping(b, sa["address"])
    sa["connect"].interrupt()
    sb["connect"].interrupt()
    assert wait_until(lambda: lab.server_links() == ["lan0"], 5), lab.server_links()


def test_plain_tun_is_refused_on_a_gatewayless_bridge_pool(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.128/25", "--bridge", "lan0"])
    session = lab.add_client().connect()
    assert session.read_address() is None
    assert session.wait(10) not in (None, 0)
    assert "serves ethernet links only" in session.stderr()
