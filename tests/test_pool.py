"""Pool arithmetic and the admin's pool/gateway input."""

from __future__ import annotations

import pytest

from tunhelper.errors import UsageError
from tunhelper.pool import Pool


def test_default_gateway_and_range() -> None:
    pool = Pool.parse("192.168.3.0/24")
    assert str(pool.gateway) == "192.168.3.1"
    assert pool.address(pool.first) == "192.168.3.1"
    assert pool.address(pool.last) == "192.168.3.254"  # broadcast .255 never handed out
    assert pool.capacity == 253


def test_excluded_has_gateway_and_local_addresses_in_pool_only() -> None:
    pool = Pool.parse("10.8.0.0/29", "10.8.0.6")
    assert pool.excluded(["10.8.0.3", "127.0.0.1", "10.8.1.3", "not-an-ip"]) == {6, 3}


def test_offset_round_trip() -> None:
    pool = Pool.parse("172.20.0.0/16")
    assert pool.offset(pool.address(300)) == 300
    assert pool.offset("172.21.0.1") is None
    assert pool.offset("172.20.1") is None  # not 172.20.0.1, whatever netaddr's age


@pytest.mark.parametrize(
    ("cidr", "gateway", "expect"),
    [
        ("192.168.3.0", None, "prefix"),
        ("192.168.3.1/24", None, "did you mean 192.168.3.0/24"),
        ("banana/24", None, "not a network"),
        ("192.168.3.0/33", None, "not a network"),
        ("2001:db8::/64", None, "only IPv4"),
        ("192.168.3.0/31", None, "too small"),
        ("192.168.3.0/24", "192.168.3.0", "host address inside"),
        ("192.168.3.0/24", "192.168.3.255", "host address inside"),
        ("192.168.3.0/24", "10.0.0.1", "host address inside"),
        ("192.168.3.0/24", "gw", "not an IPv4 address"),
        # inet_aton forms that netaddr < 1.0 accepts by default: never guess what they mean
        ("10.0.0.0/8", "10.1", "not an IPv4 address"),
        ("10.0.0.0/8", "10.0.0.010", "not an IPv4 address"),
        ("10.0.0.0/8", "0xa000001", "not an IPv4 address"),
        ("10.0.0.0/8", "10.0.0.5\n", "not an IPv4 address"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(cidr, gateway, expect) -> None:
    with pytest.raises(UsageError) as e:
        Pool.parse(cidr, gateway)
    message = str(e.value)
    assert expect in message
    assert "\n" not in message
    assert message.startswith("--pool" if gateway is None else ("--gateway", "--pool"))
