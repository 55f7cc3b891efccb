"""Dual stack end to end: one IPv4 and one IPv6 pool, a real sshd, real ssh, real pings."""

from __future__ import annotations

import json

from tests.lab import Lab, run, wait_until

DUAL = ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]


def client_addresses(client, device: str) -> dict[str, list[dict]]:
    out = json.loads(run("ip", "-j", "addr", "show", "dev", device, ns=client.ns).stdout)
    info = out[0]["addr_info"]
    return {family: [a for a in info if a["family"] == family] for family in ("inet", "inet6")}


def ping(client, device: str, address: str) -> bool:
    argv = ("ping", "-c", "1", "-W", "2", "-I", device, address)
    return run(*argv, ns=client.ns, check=False).returncode == 0


def active_of(lab: Lab, client_id: str | None = None) -> list[dict]:
    return [x for x in lab.active_leases() if client_id is None or x["client"] == client_id]


def test_dual_stack_connect_pings_over_both_families_and_releases_both(make_lab) -> None:
    lab = make_lab(DUAL)
    client = lab.add_client()
    conn = client.tunhelper_connect("--json")
    status = json.loads(conn.status() or "{}")
    assert status, conn.stderr()
    device = status["device"]
    assert (status["address"], status["gateway"], status["prefix"]) == (
        "192.168.3.2",
        "192.168.3.1",
        32,
    )
    assert (status["address6"], status["gateway6"], status["prefix6"]) == (
        "fd00:3::2",
        "fd00:3::1",
        128,
    )
    addrs = client_addresses(client, device)
    (inet,) = addrs["inet"]
    assert (inet["local"], inet["address"], inet["prefixlen"]) == ("192.168.3.2", "192.168.3.1", 32)
    (inet6,) = [a for a in addrs["inet6"] if a.get("scope") == "global"]
    assert (inet6["local"], inet6["address"], inet6["prefixlen"]) == ("fd00:3::2", "fd00:3::1", 128)

    assert ping(client, device, "192.168.3.1")
    assert ping(client, device, "fd00:3::1")
    assert lab.ping_from_server("192.168.3.2")
    assert lab.ping6_from_server("fd00:3::2")
    assert not lab.ping6_from_server("fd00:3::3")  # an honest check: nobody has .3

    leases = active_of(lab)
    assert sorted((x["pool"], x["address"], x["device"]) for x in leases) == [
        ("192.168.3.0/24", "192.168.3.2", leases[0]["device"]),
        ("fd00:3::/112", "fd00:3::2", leases[0]["device"]),
    ]
    assert len({x["client"] for x in leases}) == 1  # one identity, one lease per family

    assert conn.interrupt() == 0
    assert wait_until(lambda: active_of(lab) == [], 5), lab.leases()
    assert sorted(x["state"] for x in lab.leases()) == ["released", "released"]
    assert wait_until(lambda: lab.server_tun_devices() == [], 5)
    assert client.tun_devices() == []


def test_plain_ssh_to_a_dual_stack_key_prints_only_the_ipv4_line(make_lab) -> None:
    lab = make_lab(DUAL)
    client = lab.add_client()
    session = client.connect()
    assert session.read_address() == "192.168.3.2", session.stderr()
    assert session.read_line(1.0) is None  # nothing after the one line
    addresses = lab.server_addresses()
    (device,) = lab.server_tun_devices()
    local = sorted(a["local"] for a in addresses[device] if a.get("scope") == "global")
    assert local == ["192.168.3.1", "fd00:3::1"]


def test_an_ipv6_only_pool_announces_its_address_on_the_plain_line(make_lab) -> None:
    lab = make_lab(["--pool", "fd00:3::/112"])
    client = lab.add_client()
    conn = client.tunhelper_connect("--json")
    status = json.loads(conn.status() or "{}")
    assert status.get("address") == "fd00:3::2" and "address6" not in status, conn.stderr()
    assert ping(client, status["device"], "fd00:3::1")
    assert lab.ping6_from_server("fd00:3::2")
    plain = lab.add_client().connect()
    assert plain.read_address() == "fd00:3::3", plain.stderr()


def test_hooks_get_both_families_and_a_reserved_ipv6_address(make_lab) -> None:
    from tests.test_policy_e2e import hook_script, read_env

    lab = make_lab(DUAL)
    up, down = hook_script(lab, "up"), hook_script(lab, "down")
    args = [*DUAL, "--address", "fd00:3::0:42", "--up", up, "--down", down]
    client = lab.add_client(helper_args=args)
    session = client.connect()
    assert session.read_address() == "192.168.3.2", session.stderr()
    env = read_env(lab, "up")
    assert (env["TUNHELPER_ADDRESS"], env["TUNHELPER_PREFIX"]) == ("192.168.3.2", "32")
    assert env["TUNHELPER_ADDRESS6"] == "fd00:3::42"  # reserved, in compact form
    assert (env["TUNHELPER_GATEWAY6"], env["TUNHELPER_PREFIX6"]) == ("fd00:3::1", "128")
    session.close()
    assert wait_until(lambda: (lab.dir / "down.env").exists(), 5)
    assert read_env(lab, "down")["TUNHELPER_ADDRESS6"] == "fd00:3::42"
    assert wait_until(lambda: lab.active_leases() == [], 5)


def test_an_mtu_below_1280_is_refused_for_an_ipv6_pool(make_lab) -> None:
    lab = make_lab([*DUAL, "--mtu", "1200"])
    session = lab.add_client().connect()
    assert session.read_address() is None
    assert session.wait(15) is not None
    stderr = session.stderr()
    assert "--mtu 1200 is below 1280" in stderr and "Traceback" not in stderr
    assert lab.leases() == []


def test_a_config_file_client_reserves_an_address_of_each_family(make_lab) -> None:
    from tests.test_policy_e2e import fingerprint

    lab = make_lab()
    conf = lab.dir / "tunhelper.conf"
    args = ["--pool", "office", "--config", str(conf)]
    walkin = lab.add_client("walkin", helper_args=args)
    vip = lab.add_client("vip", helper_args=args)
    conf.write_text(
        "[pool office]\nnetwork = 192.168.3.0/24\nnetwork = fd00:3::/112\n"
        f"[client {fingerprint(vip)}]\naddress = 192.168.3.2\naddress = fd00:3::2\n"
    )
    first = json.loads(walkin.tunhelper_connect("--json").status() or "{}")
    assert (first.get("address"), first.get("address6")) == ("192.168.3.3", "fd00:3::3")
    second = json.loads(vip.tunhelper_connect("--json").status() or "{}")
    assert (second.get("address"), second.get("address6")) == ("192.168.3.2", "fd00:3::2")
    assert ping(vip, second["device"], "fd00:3::1")


def routes6(ns: str, network: str) -> list[dict]:
    return json.loads(run("ip", "-6", "-j", "route", "show", network, ns=ns).stdout)


def test_connect_installs_ipv6_routes_through_the_tun_and_removes_them(make_lab) -> None:
    from tests.test_policy_e2e import connect_json, routes

    lab = make_lab([*DUAL, "--route", "fd00:77::/64", "--route", "10.77.0.0/16"])
    client = lab.add_client()
    status = connect_json(client)
    assert status["routes"] == ["fd00:77::/64", "10.77.0.0/16"]
    (route,) = routes6(client.ns, "fd00:77::/64")
    assert route["dev"] == status["device"] and "gateway" not in route
    assert routes(client.ns, "10.77.0.0/16")[0]["dev"] == status["device"]
    assert status["connect"].interrupt() == 0
    assert routes6(client.ns, "fd00:77::/64") == []
    assert routes(client.ns, "10.77.0.0/16") == []


def test_an_ipv6_route_with_an_ipv4_only_pool_is_refused_before_leasing(make_lab) -> None:
    from tests.lab import refused

    lab = make_lab(["--pool", "192.168.3.0/24", "--route", "fd00:77::/64"])
    line = refused(lab.add_client().connect(), 15)
    assert "--route fd00:77::/64 is an IPv6 network but no --pool is IPv6" in line
    assert "add an IPv6 --pool" in line
    assert lab.leases() == []


def test_an_ipv6_client_network_is_routed_while_the_session_lives(make_lab) -> None:
    from tests.test_policy_e2e import connect_json

    lab = make_lab()
    site = lab.add_client("site", helper_args=[*DUAL, "--client-net", "fd00:88::/64"])
    run("ip", "-6", "addr", "add", "fd00:88::1/128", "dev", "lo", ns=site.ns)  # behind the client
    status = connect_json(site)
    (route,) = routes6(lab.server_ns, "fd00:88::/64")
    assert route["dev"] == lab.server_tun_devices()[0] and "gateway" not in route
    assert lab.ping6_from_server("fd00:88::1")

    other = lab.add_client("other", helper_args=[*DUAL, "--client-net", "fd00:88::/80"])
    denied = other.tunhelper_connect()
    assert denied.status() is None and denied.wait(15) == 1
    assert "--client-net fd00:88::/80 overlaps fd00:88::/64" in denied.stderr()

    assert status["connect"].interrupt() == 0
    assert wait_until(lambda: routes6(lab.server_ns, "fd00:88::/64") == [], 5)
    assert not lab.ping6_from_server("fd00:88::1")
