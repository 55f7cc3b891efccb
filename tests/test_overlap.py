"""policy.check_overlap: pure logic over (interface, network) pairs."""

from __future__ import annotations

import pytest

from tunhelper.errors import TunhelperError
from tunhelper.server import policy
from tunhelper.settings import serve_settings

NETS = [("eth0", "10.0.0.0/24"), ("eth0", "fd00:1::/64"), ("lan0", "192.168.3.0/24")]


def check(argv: list[str], outer: str | None = None, nets=NETS) -> None:
    policy.check_overlap(serve_settings([*argv, "--state-dir", "/nonexistent"]), nets, outer)


def test_disjoint_pool_passes() -> None:
    check(["--pool", "192.168.4.0/24", "--pool", "fd00:2::/112"], "203.0.113.9")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--pool", "10.0.0.128/25"], "overlaps 10.0.0.0/24 on the server's interface eth0"),
        (["--pool", "10.0.0.0/8"], "overlaps 10.0.0.0/24"),
        (["--pool", "192.168.4.0/24", "--pool", "fd00:1::/112"], "pool fd00:1::/112 overlaps"),
        (["--pool", "192.168.3.128/25"], "on the server's interface lan0"),
    ],
)
def test_overlap_refused_naming_it(argv: list[str], named: str) -> None:
    with pytest.raises(TunhelperError, match=named):
        check(argv)


def test_bridge_slice_of_its_own_lan_is_the_point() -> None:
    check(["--pool", "192.168.3.128/25", "--bridge", "lan0"])
    with pytest.raises(TunhelperError, match="eth0"):
        check(["--pool", "10.0.0.128/25", "--bridge", "lan0"])


def test_client_outer_address_is_never_leased() -> None:
    with pytest.raises(TunhelperError, match="own address 198.51.100.7"):
        check(["--pool", "198.51.100.0/24"], "198.51.100.7", [])
    check(["--pool", "198.51.100.0/24"], "198.51.101.7", [])


def test_interface_networks_skip_host_and_link_local() -> None:
    for name, net in policy.interface_networks(None):
        assert not net.endswith(("/32", "/128")) and not net.startswith("fe80"), (name, net)
