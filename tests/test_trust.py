"""The gateway's announcement held against the client's own networks (pure logic)."""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid

import pytest

from tests.conftest import require_lab_prerequisites
from tests.lab import run
from tunhelper.client import trust
from tunhelper.client.trust import HostView, Untrusted, judge
from tunhelper.protocol import Announcement

LAN = "10.232.0.0/24"
HOST = HostView(
    connected=(LAN, "10.232.0.2/32", "127.0.0.0/8", "fe80::/64", "2001:db8:1::/64"),
    routes=(LAN, "10.50.0.0/16", "2001:db8:1::/64"),  # 10.50/16 via the LAN's router
    peers=("10.231.0.1",),
)
HALVES = ["0.0.0.0/1", "128.0.0.0/1"]


def ann(routes=(), dns=(), **kw) -> Announcement:
    base = dict(address="192.168.3.2", prefix=32, gateway="192.168.3.1", mode="tun", mtu=1500)
    return Announcement(**{**base, **kw}, routes=list(routes), dns=list(dns))


def dropped(verdict: trust.Verdict) -> dict[str, str]:
    return {d.what: d.reason for d in verdict.dropped}


def test_a_plain_split_tunnel_passes_whole() -> None:
    v = judge(ann(["10.232.0.0/16", "172.16.0.0/12"], ["10.232.1.1"]), HOST)
    assert v.routes == ("10.232.0.0/16", "172.16.0.0/12")  # covering the LAN: LAN stays local
    assert v.dns == trust.Dns(("10.232.1.1",), default_route=False, domains=())
    assert v.dropped == () and v.warnings() == []


def test_the_lans_halves_and_a_lan_hosts_host_route_are_dropped() -> None:
    routes = ["10.232.0.0/25", "10.232.0.128/25", "10.232.0.53/32", "10.232.0.0/24", "10.9.0.0/16"]
    v = judge(ann(routes), HOST)
    assert v.routes == ("10.9.0.0/16",)
    assert set(dropped(v)) == {f"route {r}" for r in routes[:4]}
    assert "directly connected" in dropped(v)["route 10.232.0.53/32"]


def test_a_route_more_specific_than_the_hosts_own_lan_route_is_dropped() -> None:
    v = judge(ann(["10.50.7.0/24", "10.50.0.0/16", "10.48.0.0/12", "10.0.0.0/8"]), HOST)
    assert v.routes == ("10.48.0.0/12",)
    assert "peer 10.231.0.1" in dropped(v)["route 10.0.0.0/8"]
    assert "routes by itself" in dropped(v)["route 10.50.7.0/24"]
    assert "route 10.50.0.0/16" in dropped(v)  # equal: as specific, so it would compete


def test_a_route_covering_the_ssh_peer_is_dropped_but_the_full_tunnel_is_not() -> None:
    v = judge(ann([*HALVES, "10.231.0.0/16", "10.231.0.1/32"]), HOST)
    assert v.full == (4,) and v.routes == ()
    assert dropped(v)["route 10.231.0.0/16"] == "covers the ssh connection's peer 10.231.0.1"
    assert dropped(v)["route 10.231.0.1/32"] == "is the ssh connection's peer 10.231.0.1"
    full = judge(ann(["0.0.0.0/0"]), HOST)
    assert full.full == (4,) and full.dropped == ()


def test_ipv6_is_held_to_the_same_rules_and_families_never_mix() -> None:
    routes = ["::/1", "8000::/1", "2001:db8:1::/65", "2001:db8:2::/48", "fe80::/64"]
    v = judge(ann(routes), HOST)
    assert v.full == (6,) and v.routes == ("2001:db8:2::/48",)
    assert set(dropped(v)) == {"route 2001:db8:1::/65", "route fe80::/64"}
    # an IPv4 LAN never judges an IPv6 route, nor the other way round
    assert judge(ann(["::a00:0/120"]), HOST).routes == ("::a00:0/120",)


def test_full_tunnel_dns_becomes_the_default_dns_route() -> None:
    v = judge(ann(HALVES, ["192.168.3.1", "9.9.9.9"]), HOST)
    assert v.dns == trust.Dns(("192.168.3.1", "9.9.9.9"), default_route=True, domains=("~.",))


def test_dns_servers_outside_the_tunnel_are_dropped() -> None:
    servers = ["10.232.0.53", "10.50.0.53", "10.231.0.1", "8.8.8.8", "192.168.3.1", "10.9.0.1"]
    v = judge(ann(["10.9.0.0/16"], servers), HOST)  # a split tunnel
    assert v.dns.servers == ("192.168.3.1", "10.9.0.1")
    assert v.dns.default_route is False and v.dns.domains == ()
    reasons = dropped(v)
    assert "directly connected" in reasons["DNS server 10.232.0.53"]
    assert "routes by itself" in reasons["DNS server 10.50.0.53"]
    assert "peer" in reasons["DNS server 10.231.0.1"]
    assert "not reached through the tunnel" in reasons["DNS server 8.8.8.8"]
    full = judge(ann(HALVES, ["10.232.0.53", "8.8.8.8"]), HOST)
    assert full.dns.servers == ("8.8.8.8",)  # on a full tunnel, the LAN's is still dropped


def test_no_server_left_means_no_default_dns_route() -> None:
    v = judge(ann(HALVES, ["10.232.0.53"]), HOST)
    assert v.dns == trust.Dns((), default_route=False, domains=())


@pytest.mark.parametrize(
    "field, value",
    [
        ("address", "10.232.0.9"),  # a LAN host's address
        ("gateway", "10.232.0.1"),  # the LAN's router as the tunnel's peer
        ("gateway", "10.231.0.1"),  # the ssh peer as the tunnel's peer: a loop
        ("address", "10.50.3.3"),
    ],
)
def test_the_links_own_addresses_on_the_lan_refuse_the_link(field: str, value: str) -> None:
    with pytest.raises(Untrusted) as e:
        judge(dataclasses.replace(ann(), **{field: value}), HOST)
    message = str(e.value)
    assert "\n" not in message and value in message and "refusing the link" in message


def test_a_tap_link_network_over_the_lan_or_the_peer_refuses_the_link() -> None:
    tap = dict(mode="tap", prefix=24, gateway="192.168.3.1")
    assert judge(ann(**tap), HOST).routes == ()
    with pytest.raises(Untrusted):  # address outside, network covering the ssh peer
        judge(ann(**{**tap, "address": "10.231.7.2", "prefix": 16, "gateway": None}), HOST)
    with pytest.raises(Untrusted):  # the LAN itself as the link's network
        judge(ann(**{**tap, "address": "10.232.0.200", "gateway": None}), HOST)
    wide = {**tap, "address": "10.232.9.2", "prefix": 16, "gateway": "10.232.9.1"}
    wide = judge(ann(**wide), HOST)
    assert wide.dropped == ()  # covering the LAN: harmless, the LAN's route wins


def test_dual_stack_addresses_are_checked_too() -> None:
    dual = dict(address6="2001:db8:1::9", prefix6=128, gateway6="2001:db8:9::1")
    with pytest.raises(Untrusted, match="IPv6 address 2001:db8:1::9"):
        judge(ann(**dual), HOST)


def test_warnings_are_one_line_each_naming_the_route_and_why() -> None:
    v = judge(ann(["10.232.0.0/25"]), HOST)
    assert v.warnings() == [
        "ignoring the gateway's route 10.232.0.0/25: inside 10.232.0.0/24, a network this "
        "host is directly connected to"
    ]


def test_control_an_empty_host_view_drops_nothing() -> None:
    """The control: the same hostile announcement against a host with no networks of
    its own passes whole, so the drops above come from the host's view."""
    routes = ["10.232.0.0/25", "10.232.0.128/25", "10.232.0.53/32", "10.231.0.0/16"]
    v = judge(ann(routes, ["10.232.0.53"]), HostView())
    assert v.routes == tuple(routes) and v.dropped == ()
    assert v.dns.servers == ("10.232.0.53",)


def test_host_view_reads_this_hosts_networks() -> None:
    """Against the real kernel (read only): loopback is always there."""
    view = trust.host_view(["192.0.2.77", "192.0.2.77"])
    assert "127.0.0.0/8" in view.connected and view.peers == ("192.0.2.77",)


_READ = (
    "import json; from tunhelper.platform.linux import routes_view as r; "
    "print(json.dumps([r.local_networks(['tun9']), r.local_networks()]))"
)


def test_local_networks_reads_the_hosts_own_and_leaves_out_the_tunnels() -> None:
    """platform/linux/routes_view.py against a real kernel, in a namespace of its own."""
    require_lab_prerequisites()
    ns = f"th-trust-{uuid.uuid4().hex[:6]}"
    run("ip", "netns", "add", ns)
    try:
        steps = [
            ("link", "add", "d0", "type", "veth", "peer", "name", "d1"),
            ("addr", "add", "10.9.0.2/24", "dev", "d0"),
            ("link", "set", "d1", "up"),
            ("link", "set", "d0", "up"),
            ("link", "add", "tun9", "type", "veth", "peer", "name", "t9"),  # the tunnel's stand-in
            ("addr", "add", "192.168.3.2", "peer", "192.168.3.1/32", "dev", "tun9"),
            ("link", "set", "t9", "up"),
            ("link", "set", "tun9", "up"),
            ("route", "add", "default", "via", "10.9.0.1"),
            ("route", "add", "10.50.0.0/16", "via", "10.9.0.1"),  # the LAN's router's
            ("route", "add", "blackhole", "10.80.0.0/16"),  # the user's policy
            ("route", "add", "10.60.0.0/16", "dev", "tun9"),  # the tunnel's own
            ("route", "add", "10.70.0.0/16", "via", "10.9.0.1", "proto", "113"),  # tunhelper's
        ]
        for step in steps:
            run("ip", *step, ns=ns)
        out = run(sys.executable, "-c", _READ, ns=ns).stdout
        (connected, routes), (all_connected, all_routes) = json.loads(out)
    finally:
        run("ip", "netns", "del", ns, check=False)
    assert {"10.9.0.0/24", "10.9.0.2/32"} <= set(connected)
    assert not [n for n in connected if n.startswith("192.168.3.")]
    assert [r for r in routes if "." in r] == ["10.50.0.0/16", "10.80.0.0/16", "10.9.0.0/24"]
    # the control: not excluded, the tunnel's address and route are seen
    assert {"192.168.3.1/32", "192.168.3.2/32"} <= set(all_connected)
    assert "10.60.0.0/16" in all_routes and "10.70.0.0/16" not in all_routes
