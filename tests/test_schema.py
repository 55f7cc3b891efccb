"""One option schema: Settings and connect's Options are built from the parsed options,
field by name, never copied by hand; a field no option fills is refused."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tunhelper import options
from tunhelper.client import connect
from tunhelper.errors import UsageError
from tunhelper.options import CONNECT_OPTIONS, SERVE_OPTIONS, build
from tunhelper.settings import Settings, serve_settings

# Settings fields that serve_settings derives from several options and the config file.
DERIVED = {
    "pool",
    "pool6",
    "address",
    "address6",
    "routes",
    "bridge",
    "pool_label",
    "identities",
    "store",
}
CONSUMED = {"config", "gateway", "route", "bridge_name"}  # read to derive the above


def test_every_settings_field_is_an_option_or_derived() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    dests = {o.dest for o in SERVE_OPTIONS}
    assert fields - DERIVED <= dests
    assert dests - fields <= CONSUMED | DERIVED


def test_a_settings_field_of_an_option_has_the_options_default() -> None:
    """Settings made directly (tests, doctor) default as the command line does."""
    by_dest = {o.dest: o for o in SERVE_OPTIONS}
    for f in dataclasses.fields(Settings):
        option = by_dest.get(f.name)
        if option is None or f.name in DERIVED:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is not dataclasses.MISSING:
            assert default == option.default, f.name


def test_settings_take_each_options_value() -> None:
    argv = [
        "--pool=192.168.3.0/24",
        "--client=alice",
        "--client-net=10.9.0.0/24",
        "--dns=192.168.3.53",
        "--max-sessions=3",
        "--refuse-extra",
        "--wait=2.5",
        "--up=/bin/true x",
    ]
    s = serve_settings(argv)
    assert (s.identity, s.client_nets, s.dns, s.max_sessions, s.refuse_extra) == (
        "alice",
        ["10.9.0.0/24"],
        ["192.168.3.53"],
        3,
        True,
    )
    assert (s.wait, s.up, s.max_leases, s.mtu) == (2.5, ["/bin/true", "x"], None, None)


def test_connect_options_are_built_from_connects_table() -> None:
    fields = {f.name for f in dataclasses.fields(connect.Options)}
    dests = {o.dest for o in CONNECT_OPTIONS}
    assert fields - {"destination", "more"} == dests - {"profile"}
    argv = ["-e", "ssh -p 2222", "--no-aes-gcm", "--json", "--tap", "gw1", "gw2", "gw3"]
    args = options.connect_parser().parse_args(argv)
    built = build(
        connect.Options, args, destination=args.destination[0], more=tuple(args.destination[1:])
    )
    assert built == connect.Options(
        destination="gw1",
        more=("gw2", "gw3"),
        ssh_cmd=["ssh", "-p", "2222"],
        tap=True,
        wait=options.connect_parser().get_default("wait"),
        as_json=True,
        background=False,
        pid_file=None,
        aes=False,
    )
    plain = options.connect_parser().parse_args(["gw"])
    assert (plain.aes, plain.ssh_cmd, plain.as_json) == (True, ["ssh"], False)


def test_a_field_no_option_fills_is_refused_not_defaulted() -> None:
    """Control: a record that grew a field the schema lacks fails loudly."""

    @dataclasses.dataclass
    class Grown:
        wait: float
        forgotten: bool = False

    with pytest.raises(TypeError, match="Grown.forgotten: no option fills it"):
        build(Grown, argparse.Namespace(wait=1.0))
    assert build(Grown, argparse.Namespace(wait=1.0), forgotten=True) == Grown(1.0, True)


def test_an_ipv6_pool_is_refused_at_start_where_the_platform_lacks_ipv6(monkeypatch) -> None:
    monkeypatch.setattr("tunhelper.platform.CAPABILITIES", frozenset())
    with pytest.raises(UsageError, match=r"--pool fd00:3::/112: IPv6 pools .* not supported"):
        serve_settings(["--pool=192.168.3.0/24", "--pool=fd00:3::/112"])
    assert serve_settings(["--pool=192.168.3.0/24"]).pool6 is None  # IPv4 alone: served
    monkeypatch.setattr("tunhelper.platform.CAPABILITIES", frozenset({"ipv6"}))
    assert serve_settings(["--pool=fd00:3::/112"]).pool.version == 6  # control
