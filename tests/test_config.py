"""The config file of named pools and clients: argv wins, every error names file:line: key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunhelper import conffile, options
from tunhelper import settings as settings_module
from tunhelper.errors import UsageError

GOOD = """\
# the office gateway
[pool office]
network = 192.168.3.0/24   # a comment after a value
mtu = 9000
route = 10.0.0.0/8
route = 10.20.0.0/16
dns = 192.168.3.53
max-sessions = 2
refuse-extra = yes
up = /usr/local/sbin/tunnel-up --verbose

[client laptop]
pool = office
address = 192.168.3.10
client-net = 10.99.0.0/24
"""


def write(tmp_path: Path, text: str, mode: int = 0o644) -> str:
    path = tmp_path / "tunhelper.conf"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def resolve(path: str, *argv: str):
    parser = options.serve_parser()
    argv_list = [*argv, "--config", path]
    args = parser.parse_args(argv_list)
    sections = conffile.read(path)
    conffile.apply_pool(args, argv_list, path, sections)
    return args, conffile.identities(path, sections)


def test_a_named_pool_fills_the_options(tmp_path: Path) -> None:
    args, clients = resolve(write(tmp_path, GOOD), "--pool", "office")
    assert args.pool == ["192.168.3.0/24"] and args.mtu == 9000
    assert args.route == ["10.0.0.0/8", "10.20.0.0/16"] and args.dns == ["192.168.3.53"]
    assert args.max_sessions == 2 and args.refuse_extra is True
    assert args.up == ["/usr/local/sbin/tunnel-up", "--verbose"]
    laptop = clients["laptop"]
    assert (laptop.pool, laptop.addresses, laptop.client_nets) == (
        "office",
        ("192.168.3.10",),
        ("10.99.0.0/24",),
    )
    assert laptop.applies_to("office") and not laptop.applies_to("lab")


def test_the_command_line_wins(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    args, _ = resolve(path, "--pool", "office", "--mtu", "1500", "--route", "172.16.0.0/12")
    assert args.mtu == 1500 and args.route == ["172.16.0.0/12"]
    assert args.dns == ["192.168.3.53"]  # not given on the line: from the file


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (
            "[pool office]\nnetwork = 192.168.3.0/24\nmtu = 99999\n",
            ":3: mtu: '99999' is not an MTU",
        ),
        ("[pool office]\nnetwork = 192.168.3.7/24\n", ":2: network: "),
        ("[pool office]\nnetwork = 192.168.3.0/24\nroute = 0.0.0.0/0\n", ":3: route: "),
        ("[pool office]\nnetwork = fd00:3::/112\nroute = ::/0\n", ":3: route: '::/0' would"),
        (
            "[pool office]\nroute = fd00:9::/64\nnetwork = 192.168.3.0/24\n",
            ":2: route: fd00:9::/64 is an IPv6 network but [pool office] has no IPv6 network",
        ),
        (
            "[pool office]\nnetwork = fd00:3::/112\ndns = 192.168.3.53\n",
            ":3: dns: 192.168.3.53 is an IPv4 address but [pool office] has no IPv4 network",
        ),
        ("[pool office]\nnetwork = 192.168.3.0/24\ndns = fd00::53%eth0\n", ":3: dns: "),
        ("[pool office]\nnetwork = 192.168.3.0/24\ncolour = blue\n", ":3: colour: not a pool"),
        ("[pool office]\nnetwork = 192.168.3.0/24\naddress = 192.168.3.9\n", ":3: address: not a"),
        ("[pool office]\nmtu = 9000\n", ":1: [pool office] has no network"),
        (
            "[pool office]\nnetwork = 192.168.3.0/24\nnetwork = 10.0.0.0/8\n",
            ":3: network: a second IPv4 network",
        ),
        ("[pool office]\nnetwork = fd00:3::/60\n", ":2: network: --pool fd00:3::/60 is larger"),
        ("[pool office]\nnetwork = 192.168.3.0/24\nrefuse-extra = perhaps\n", ":3: refuse-extra"),
        ("[pool office]\nnetwork\n", ":2: expected KEY = VALUE"),
        ("mtu = 9000\n", ":1: mtu: outside any"),
        ("[pools office]\n", ":1: a section is [pool NAME], [client IDENTITY] or [store]"),
        ("[pool lab]\nnetwork = 192.168.3.0/24\n", "--pool office: no [pool office] in"),
        ("[pool office]\nnetwork = 192.168.3.0/24\n[client x]\nmtu = 1\n", ":4: mtu: not a client"),
        ("[pool office]\nnetwork = 192.168.3.0/24\n[client x]\naddress = y\n", ":4: address: "),
        (
            "[pool office]\nnetwork = 192.168.3.0/24\n[client x]\n"
            "address = 192.168.3.9\naddress = 192.168.3.10\n",
            ":5: address: a second IPv4 address (192.168.3.9, 192.168.3.10)",
        ),
    ],
)
def test_every_error_is_one_line_naming_file_line_and_key(tmp_path, text, expect) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        resolve(path, "--pool", "office")
    message = str(e.value)
    assert "\n" not in message and message.startswith(path) or message.startswith("--pool")
    assert expect in message


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be owned by root")
def test_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, 0o666)
    with pytest.raises(UsageError, match="nobody else can write"):
        conffile.read(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        conffile.read(str(tmp_path / "nope.conf"))


def test_the_forced_command_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[pool office]\nnetwork = 192.168.3.0/24\nmtu = lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "tunhelper", "--pool", "office", "--config", path],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"tunhelper: {path}:3: mtu: 'lots' is not an MTU from 576 (IPv4's minimum) "
        "to 16380 (the most an ssh tun channel carries)\n"
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("[]=# \npoolclientnetworkmtu0123456789./")), max_size=120)
)
def test_any_file_is_parsed_or_refused_in_one_line(tmp_path_factory, text: str) -> None:
    path = write(tmp_path_factory.mktemp("c"), text)
    try:
        resolve(path, "--pool", "pool")
    except UsageError as e:
        assert "\n" not in str(e)


def test_a_dual_stack_pool_has_one_network_of_each_family(tmp_path: Path) -> None:
    text = "[pool office]\nnetwork = 192.168.3.0/24\nnetwork = fd00:3::/112\ngateway = fd00:3::1\n"
    args, _ = resolve(write(tmp_path, text), "--pool", "office")
    assert args.pool == ["192.168.3.0/24", "fd00:3::/112"] and args.gateway == ["fd00:3::1"]
    pool, pool6 = settings_module.resolve_pools(args.pool, args.gateway)
    assert pool.version == 4 and pool6 is not None and str(pool6.gateway) == "fd00:3::1"


def test_the_shipped_example_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "contrib" / "tunhelper.conf.example"
    args, clients = resolve(write(tmp_path, example.read_text()), "--pool", "office")
    assert args.pool == ["192.168.3.0/24"] and args.route == ["10.20.0.0/16"]
    (client,) = clients.values()
    assert client.addresses == ("192.168.3.10",) and client.applies_to("office")


def test_a_client_reserves_one_address_of_each_family(tmp_path: Path) -> None:
    text = (
        "[pool office]\nnetwork = 192.168.3.0/24\nnetwork = fd00:3::/112\n"
        "[client laptop]\naddress = fd00:3::0:10\naddress = 192.168.3.10\n"
    )
    _, clients = resolve(write(tmp_path, text), "--pool", "office")
    assert clients["laptop"].addresses == ("fd00:3::10", "192.168.3.10")  # compact form


def test_ipv6_routes_and_dns_of_a_dual_stack_pool(tmp_path: Path) -> None:
    text = (
        "[pool office]\nnetwork = 192.168.3.0/24\nnetwork = fd00:3::/112\n"
        "route = fd00:9:0::/64\nroute = 10.77.0.0/16\ndns = fd00:3::53\n"
    )
    args, _ = resolve(write(tmp_path, text), "--pool", "office")
    assert args.route == ["fd00:9::/64", "10.77.0.0/16"] and args.dns == ["fd00:3::53"]


def test_a_file_value_the_command_line_replaces_is_not_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "[pool office]\nnetwork = 192.168.3.0/24\nroute = fd00:9::/64\n")
    args, _ = resolve(path, "--pool", "office", "--route", "10.77.0.0/16")
    assert args.route == ["10.77.0.0/16"]


def test_a_client_network_of_a_family_without_a_pool_names_its_section(tmp_path: Path) -> None:
    laptop = "[client laptop]\nclient-net = fd00:8::/64\n"
    path = write(tmp_path, "[pool office]\nnetwork = 192.168.3.0/24\n\n" + laptop)
    with pytest.raises(UsageError) as e:
        settings_module.serve_settings(["--pool", "office", "--config", path])
    assert str(e.value) == (
        f"{path}:4: [client laptop]: client-net fd00:8::/64 is an IPv6 network but no --pool "
        "is IPv6: add an IPv6 --pool (e.g. --pool fd00:3::/112) or drop it"
    )
    dual = "[pool office]\nnetwork = 192.168.3.0/24\nnetwork = fd00:3::/112\n" + laptop
    settings = settings_module.serve_settings(
        ["--pool", "office", "--config", write(tmp_path, dual)]
    )
    assert settings.identities["laptop"].client_nets == ("fd00:8::/64",)


def test_route_default_is_each_familys_two_halves(tmp_path: Path) -> None:
    """A full tunnel: both halves of each pool family, so the ssh peer keeps its route."""
    only4 = settings_module.serve_settings(["--pool", "10.0.0.0/24", "--route", "default"])
    assert only4.routes == ["0.0.0.0/1", "128.0.0.0/1"]
    only6 = settings_module.serve_settings(["--pool", "fd00:3::/112", "--route", "default"])
    assert only6.routes == ["::/1", "8000::/1"]
    path = write(tmp_path, "[pool office]\nnetwork = fd00:3::/112\nroute = default\n")
    from_file = settings_module.serve_settings(["--pool", "office", "--config", path])
    assert from_file.routes == ["::/1", "8000::/1"]
    with pytest.raises(UsageError, match="'default'"):
        settings_module.serve_settings(["--pool", "10.0.0.0/24", "--route", "0.0.0.0/0"])
