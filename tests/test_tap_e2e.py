"""Ethernet (tap) sessions end to end: one bridge per pool, shared by layer-2 clients."""

from __future__ import annotations

import json
import os
import signal

from tests.lab import Lab, refused, run, tunhelper_command, wait_until

GATEWAY = "192.168.3.1"
DUAL = ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]


def ping(client, address: str) -> bool:
    return run("ping", "-c", "1", "-W", "2", address, ns=client.ns, check=False).returncode == 0


def addresses_on(ns: str, device: str) -> set[tuple[str, int]]:
    """Global addresses of a device, none of them still tentative (IPv6 duplicate detection)."""
    out = json.loads(run("ip", "-j", "addr", "show", "dev", device, ns=ns).stdout)
    info = [a for a in out[0]["addr_info"] if a.get("scope") == "global"]
    assert not [a for a in info if a.get("tentative")], info
    return {(a["local"], a["prefixlen"]) for a in info}


def tap_connect(client) -> dict:
    conn = client.tunhelper_connect("--tap", "--json")
    status = json.loads(conn.status() or "{}")
    assert status, conn.stderr()
    status["connect"] = conn
    return status


def bridges(lab: Lab) -> list[str]:
    out = json.loads(run("ip", "-j", "link", "show", "type", "bridge", ns=lab.server_ns).stdout)
    return sorted(link["ifname"] for link in out if link["ifname"] != lab.bridge)


def bridge_mac(lab: Lab, bridge: str) -> str:
    (link,) = json.loads(run("ip", "-j", "link", "show", "dev", bridge, ns=lab.server_ns).stdout)
    return link["address"]


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
    listing = run(tunhelper_command(), "leases", "--state-dir", lab.state_dir, ns=lab.server_ns)
    assert f"bridge {bridge} was left" in listing.stderr and "tunhelper repair" in listing.stderr
    assert bridges(lab) == [bridge]  # ...which a listing only reports...
    repaired = run(tunhelper_command(), "repair", "--state-dir", lab.state_dir, ns=lab.server_ns)
    assert f"removed bridge {bridge}" in repaired.stdout  # ...and repair removes
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


def test_full_size_packets_cross_both_ways_at_the_default_mtu(make_lab) -> None:
    """One byte over OpenSSH's limit and full-size packets vanish silently: check the limit."""
    lab = make_lab()
    tun_client, tap_client = lab.add_client("tun"), lab.add_client("tap")
    tun_conn = tun_client.tunhelper_connect("--json")
    tun = json.loads(tun_conn.status() or "{}")
    tap = tap_connect(tap_client)
    assert (tun["mtu"], tap["mtu"]) == (16380, 16370)
    for client, status in ((tun_client, tun), (tap_client, tap)):
        size = str(status["mtu"] - 28)  # IPv4 and ICMP headers
        df = ("ping", "-c", "1", "-W", "3", "-M", "do", "-s", size)
        assert run(*df, GATEWAY, ns=client.ns, check=False).returncode == 0
        assert run(*df, status["address"], ns=lab.server_ns, check=False).returncode == 0
        too_big = ("ping", "-c", "1", "-W", "3", "-M", "do", "-s", str(int(size) + 1), GATEWAY)
        assert run(*too_big, ns=client.ns, check=False).returncode != 0  # DF: not sent


def test_mtu_above_the_tap_limit_is_refused_and_nothing_configured(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/24", "--mtu", "16375"])  # fine for tun, not tap
    conn = lab.add_client().tunhelper_connect("--tap")
    assert conn.status() is None
    assert conn.wait(15) == 1
    assert "--mtu 16375 is above what an ssh tap channel carries (16370)" in conn.stderr()
    assert lab.leases() == []
    assert wait_until(lambda: lab.server_links() == [], 5), lab.server_links()


# ---------------------------------------------------------------- IPv6 on tap


def test_dual_stack_tap_clients_ping_both_families_through_the_bridge(make_lab) -> None:
    lab = make_lab(DUAL)
    a, b = lab.add_client("a"), lab.add_client("b")
    sa, sb = tap_connect(a), tap_connect(b)
    for s, n in ((sa, 2), (sb, 3)):
        assert (s["mode"], s["address"], s["prefix"], s["gateway"]) == (
            "tap",
            f"192.168.3.{n}",
            24,
            GATEWAY,
        )
        assert (s["address6"], s["prefix6"], s["gateway6"]) == (f"fd00:3::{n}", 112, "fd00:3::1")
    (bridge,) = bridges(lab)
    assert addresses_on(lab.server_ns, bridge) == {(GATEWAY, 24), ("fd00:3::1", 112)}
    assert addresses_on(a.ns, sa["device"]) == {("192.168.3.2", 24), ("fd00:3::2", 112)}
    # at once: no waiting for duplicate address detection on either end
    assert ping(a, "fd00:3::1") and ping(a, GATEWAY)
    assert lab.ping6_from_server("fd00:3::2") and lab.ping_from_server("192.168.3.2")
    assert ping(a, "fd00:3::3") and ping(b, "fd00:3::2")  # each other, across the bridge
    assert not lab.ping6_from_server("fd00:3::4")  # an honest check: nobody has ::4
    leases = lab.active_leases()
    assert sorted(x["address"] for x in leases) == [
        "192.168.3.2",
        "192.168.3.3",
        "fd00:3::2",
        "fd00:3::3",
    ]

    tun_client = lab.add_client("tun")  # a dual-stack tun beside the bridge's gateways
    tun_conn = tun_client.tunhelper_connect("--json")
    tun = json.loads(tun_conn.status() or "{}")
    assert (tun.get("mode"), tun.get("address6"), tun.get("prefix6")) == (
        "tun",
        "fd00:3::4",
        128,
    ), tun_conn.stderr()
    assert ping(tun_client, "fd00:3::1") and lab.ping6_from_server("fd00:3::4")
    assert ping(a, "fd00:3::1")

    for conn in (sa["connect"], sb["connect"]):
        assert conn.interrupt() == 0
    assert wait_until(lambda: bridges(lab) == [], 5), bridges(lab)  # the last tap session
    assert ping(tun_client, "fd00:3::1")
    assert tun_conn.interrupt() == 0
    assert wait_until(lambda: lab.server_links() == [], 10), lab.server_links()
    assert wait_until(lambda: lab.active_leases() == [], 5), lab.leases()
    assert len(lab.leases()) == 6 and {x["state"] for x in lab.leases()} == {"released"}
    assert a.tun_devices("tap") == [] and b.tun_devices("tap") == []


def test_an_ipv6_only_tap_pool_of_a_whole_64_works_with_plain_ssh_too(make_lab) -> None:
    lab = make_lab(["--pool", "fd00:3::/64"])  # the usual IPv6 subnet
    client = lab.add_client()
    status = tap_connect(client)
    assert (status["address"], status["prefix"], status["gateway"]) == (
        "fd00:3::2",
        64,
        "fd00:3::1",
    )
    assert "address6" not in status
    (bridge,) = bridges(lab)
    assert addresses_on(lab.server_ns, bridge) == {("fd00:3::1", 64)}
    assert addresses_on(client.ns, status["device"]) == {("fd00:3::2", 64)}
    assert ping(client, "fd00:3::1") and lab.ping6_from_server("fd00:3::2")

    plain = lab.add_client().connect("-o", "Tunnel=ethernet")
    assert plain.read_address() == "fd00:3::3", plain.stderr()
    assert bridges(lab) == [bridge]
    plain.close()
    assert status["connect"].interrupt() == 0
    assert wait_until(lambda: lab.server_links() == [], 5), lab.server_links()
    assert wait_until(lambda: lab.active_leases() == [], 5), lab.leases()


def test_a_dual_stack_key_adds_its_ipv6_gateway_to_the_bridge_of_an_ipv4_only_key(
    make_lab,
) -> None:
    lab = make_lab()
    old = lab.add_client("old", helper_args=["--pool", "192.168.3.0/24"])
    new = lab.add_client("new", helper_args=DUAL)
    first = tap_connect(old)
    (bridge,) = bridges(lab)
    assert addresses_on(lab.server_ns, bridge) == {(GATEWAY, 24)}
    second = tap_connect(new)
    assert bridges(lab) == [bridge]  # one bridge per IPv4 pool, whatever the key's IPv6
    assert addresses_on(lab.server_ns, bridge) == {(GATEWAY, 24), ("fd00:3::1", 112)}
    assert second["address6"] == "fd00:3::2" and second["prefix6"] == 112
    assert ping(new, "fd00:3::1") and lab.ping6_from_server("fd00:3::2")
    assert ping(old, second["address"]) and ping(new, first["address"])
    mac = bridge_mac(lab, bridge)
    assert first["connect"].interrupt() == 0
    assert wait_until(lambda: len(lab.active_leases()) == 2, 5), lab.leases()
    assert bridge_mac(lab, bridge) == mac  # not its ports' lowest, which just changed
    # the bridge stays with its last session, and keeps its MAC address when a port goes
    assert ping(new, "fd00:3::1") and ping(new, GATEWAY)
    assert second["connect"].interrupt() == 0
    assert wait_until(lambda: lab.server_links() == [], 5), lab.server_links()


def test_ipv6_on_an_admins_bridge_needs_its_ipv6_network(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.128/25", "--pool", "fd00:3::8000/113", "--bridge", "lan0"])
    ns = lab.server_ns
    run("ip", "link", "add", "lan0", "type", "bridge", ns=ns)
    run("ip", "addr", "add", "192.168.3.1/24", "dev", "lan0", ns=ns)
    run("ip", "link", "set", "lan0", "up", ns=ns)
    client = lab.add_client()
    line = refused(client.connect("-o", "Tunnel=ethernet"), 15)  # one line, from the server
    assert "bridge lan0 (--bridge) has no IPv6 address around --pool fd00:3::8000/113" in line
    assert "ip addr add" in line
    assert lab.leases() == []

    run("ip", "addr", "add", "fd00:3::1/64", "dev", "lan0", "nodad", ns=ns)
    status = tap_connect(client)
    assert (status["address"], status["prefix"], status["gateway"]) == ("192.168.3.129", 24, None)
    assert (status["address6"], status["prefix6"], status["gateway6"]) == (
        "fd00:3::8001",
        64,
        "fd00:3::1",
    )
    assert ping(client, "fd00:3::1") and lab.ping6_from_server("fd00:3::8001")
    assert status["connect"].interrupt() == 0
    assert wait_until(lambda: lab.server_links() == ["lan0"], 5), lab.server_links()
    assert addresses_on(ns, "lan0") == {("192.168.3.1", 24), ("fd00:3::1", 64)}  # untouched


def test_connect_on_tap_installs_routes_through_the_gateway(make_lab) -> None:
    """On tap, a device route would need neighbour discovery for every destination."""
    from tests.test_policy_e2e import routes

    lab = make_lab(["--pool", "192.168.3.0/24", "--route", "10.77.0.0/16"])
    client = lab.add_client()
    status = tap_connect(client)
    (route,) = routes(client.ns, "10.77.0.0/16")
    assert (route["gateway"], route["dev"]) == (GATEWAY, status["device"])
    assert status["connect"].interrupt() == 0
    assert routes(client.ns, "10.77.0.0/16") == []


def test_a_client_network_on_tap_is_refused_in_one_line_and_leaves_nothing(make_lab) -> None:
    """Its route would sit on the shared bridge and outlive a killed helper: tun only."""
    lab = make_lab()
    site = lab.add_client(
        "site", helper_args=["--pool", "192.168.3.0/24", "--client-net", "10.88.0.0/24"]
    )
    line = refused(site.connect("-o", "Tunnel=ethernet"), 15)
    assert "--client-net 10.88.0.0/24 is routed through tun links only" in line
    assert lab.leases() == [] and bridges(lab) == []
    assert wait_until(lambda: lab.server_links() == [], 5), lab.server_links()
