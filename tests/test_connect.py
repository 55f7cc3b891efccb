"""Client-side pure logic: the ssh command line and reading the server's announcement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunhelper import protocol
from tunhelper.client import connect
from tunhelper.errors import TunhelperError
from tunhelper.link import discover
from tunhelper.platform import DeviceInfo
from tunhelper.protocol import Announcement


def options(**kw) -> connect.Options:
    base = dict(
        destination="gw.example",
        ssh_cmd=["ssh"],
        tap=False,
        wait=30.0,
        as_json=False,
        background=False,
        pid_file=None,
    )
    return connect.Options(**{**base, **kw})


def test_ssh_argv_options_before_w_and_the_exact_request_last() -> None:
    argv = connect.ssh_argv(options(ssh_cmd=["ssh", "-i", "key", "-p", "2222"], tap=True))
    assert argv == [
        "ssh",
        "-i",
        "key",
        "-p",
        "2222",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "Tunnel=ethernet",
        "-w",
        "any",
        "--",
        "gw.example",
        protocol.REQUEST,
    ]
    assert "-N" not in argv


def test_not_root_is_caught_before_ssh_starts(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "ssh-ran"
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake_ssh.chmod(0o755)
    monkeypatch.setattr(connect.os, "geteuid", lambda: 1000)
    with pytest.raises(TunhelperError, match="must run as root"):
        connect.run(options(ssh_cmd=[str(fake_ssh)]))
    assert not marker.exists()


def test_announcement_round_trip() -> None:
    ann = Announcement("192.168.3.2", 32, "192.168.3.1", "tun", 1500, ["10.0.0.0/8"])
    line = ann.to_json()
    assert "dns" not in json.loads(line)  # only when the admin set it
    assert protocol.parse(line) == ann


def test_dual_stack_announcement_round_trip_keeps_ipv4_first() -> None:
    ann = Announcement(
        "192.168.3.2",
        32,
        "192.168.3.1",
        "tun",
        1500,
        address6="fd00:3::2",
        prefix6=128,
        gateway6="fd00:3::1",
    )
    data = json.loads(ann.to_json())
    assert (data["address"], data["address6"], data["prefix6"]) == ("192.168.3.2", "fd00:3::2", 128)
    assert protocol.parse(ann.to_json()) == ann
    only6 = Announcement("fd00:3::2", 128, "fd00:3::1", "tun", 1500)
    assert "address6" not in json.loads(only6.to_json())  # an IPv6-only link: in address
    assert protocol.parse(only6.to_json()) == only6


def test_a_dual_stack_tap_announcement_carries_the_ipv6_prefix(capsys) -> None:
    ann = Announcement(
        "192.168.3.2",
        24,
        "192.168.3.1",
        "tap",
        16370,
        address6="fd00:3::2",
        prefix6=112,
        gateway6="fd00:3::1",
    )
    assert protocol.parse(ann.to_json()) == ann
    found = discover.SessionDevice(DeviceInfo("tap0", 7, "tap"), 1, 0.0)
    connect._report(found, ann, as_json=False)
    assert capsys.readouterr().out == (
        "tap0 192.168.3.2/24 gateway 192.168.3.1 mtu 16370 fd00:3::2/112 gateway fd00:3::1\n"
    )


def test_ipv6_routes_and_dns_round_trip() -> None:
    ann = Announcement(
        "192.168.3.2",
        32,
        "192.168.3.1",
        "tun",
        1500,
        ["10.77.0.0/16", "fd00:9::/64"],
        ["fd00:3::53", "192.168.3.53"],
        "fd00:3::2",
        128,
        "fd00:3::1",
    )
    assert protocol.parse(ann.to_json()) == ann


def test_only_the_exact_request_gets_a_description() -> None:
    assert protocol.wants_description(protocol.REQUEST)
    for other in (None, "", "ls", protocol.REQUEST + " ", protocol.REQUEST + ";id", "tunhelper"):
        assert not protocol.wants_description(other)


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("192.168.3.2", "did not describe"),
        ('{"version": 2}', "version 2"),
        ('{"version": 1, "mode": "gre"}', "mode"),
        ('{"version": 1, "mode": "tun", "prefix": 33, "mtu": 1500}', "prefix"),
        ('{"version": 1, "mode": "tun", "prefix": true, "mtu": 1500}', "prefix"),
        ('{"version": 1, "mode": "tun", "prefix": 32, "mtu": 20}', "MTU"),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "1.2.3",'
            ' "gateway": "192.168.3.1"}',
            "address",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "192.168.3.2",'
            ' "gateway": "192.168.3.1", "routes": ["10.0.0.1/8"]}',
            "route",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "192.168.3.2",'
            ' "gateway": "192.168.3.1", "routes": ["fd00:9::1/64"]}',
            "route",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "192.168.3.2",'
            ' "gateway": "192.168.3.1", "routes": ["::/0"]}',
            "route",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "192.168.3.2",'
            ' "gateway": "192.168.3.1", "dns": ["fe80::1%eth0"]}',
            "DNS server",
        ),
        ("[1, 2]", "did not describe"),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "192.168.3.2",'
            ' "gateway": "192.168.3.1", "address6": "192.168.3.3", "prefix6": 128,'
            ' "gateway6": "fd00:3::1"}',
            "IPv6 address",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 32, "mtu": 1500, "address": "192.168.3.2",'
            ' "gateway": "192.168.3.1", "address6": "fd00:3::2", "prefix6": 129,'
            ' "gateway6": "fd00:3::1"}',
            "IPv6 prefix",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 128, "mtu": 1500, "address": "fd00:3::2",'
            ' "gateway": "192.168.3.1"}',
            "gateway",
        ),
        (
            '{"version": 1, "mode": "tun", "prefix": 128, "mtu": 1000, "address": "fd00:3::2",'
            ' "gateway": "fd00:3::1"}',
            "too small for IPv6",
        ),
    ],
)
def test_bad_announcements_are_one_clear_line(line: str, expect: str) -> None:
    with pytest.raises(TunhelperError, match=expect) as e:
        protocol.parse(line)
    assert "\n" not in str(e.value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.dictionaries(st.text(max_size=10), st.none())))
def test_any_server_line_is_parsed_or_refused_cleanly(value) -> None:
    line = value if isinstance(value, str) else json.dumps({"version": 1, **value})
    try:
        protocol.parse(line)
    except TunhelperError as e:
        assert "\n" not in str(e)


# -- property-based: the request a client sends, the announcement a server sends -------


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=60))
def test_only_the_exact_request_text_asks_for_a_description(command: str) -> None:
    assert protocol.wants_description(command) == (command == protocol.REQUEST)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3).filter(bool))
def test_the_request_with_anything_added_is_not_the_request(extra: str) -> None:
    for command in (protocol.REQUEST + extra, extra + protocol.REQUEST):
        assert not protocol.wants_description(command)


json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**33), 2**33),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from(["192.168.3.2", "192.168.3.1", "10.0.0.0/8", "tun", "tap", "::1"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
announcement_fields = st.fixed_dictionaries(
    {},
    optional={
        "version": st.one_of(st.just(1), json_value),
        "address": st.one_of(st.sampled_from(["192.168.3.2", "192.168.3.02"]), json_value),
        "prefix": st.one_of(st.integers(-1, 40), json_value),
        "gateway": st.one_of(st.sampled_from(["192.168.3.1", None]), json_value),
        "mode": st.one_of(st.sampled_from(["tun", "tap"]), json_value),
        "mtu": st.one_of(st.integers(0, 70000), json_value),
        "routes": st.one_of(
            st.lists(st.sampled_from(["10.0.0.0/8", "10.0.0.1/8", "fd00:9::/64", "fd00:9::1/64"])),
            json_value,
        ),
        "dns": st.one_of(
            st.lists(st.sampled_from(["192.168.3.1", "x", "fd00::53", "FD00:0::53"])), json_value
        ),
    },
)


@settings(max_examples=3000, deadline=None)
@given(announcement_fields)
def test_any_announcement_is_parsed_into_something_usable_or_refused(fields: dict) -> None:
    """The client configures its device from this: whatever is accepted must be sound."""
    try:
        ann = protocol.parse(json.dumps(fields))
    except TunhelperError as e:
        assert "\n" not in str(e)
        return
    assert ann.mode in ("tun", "tap") and 0 < ann.prefix <= 32 and 68 <= ann.mtu <= 65535
    assert ann.gateway is not None or ann.mode == "tap"
    import ipaddress

    for address in [ann.address] + ([ann.gateway] if ann.gateway else []):
        assert str(ipaddress.IPv4Address(address)) == address
    for server in ann.dns:
        assert str(ipaddress.ip_address(server)) == server
    for route in ann.routes:
        assert str(ipaddress.ip_network(route)) == route
