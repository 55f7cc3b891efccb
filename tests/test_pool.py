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


def test_ipv6_pool_has_no_broadcast_and_never_hands_out_offset_0() -> None:
    pool = Pool.parse("fd00:3::/112")
    assert (pool.version, str(pool.gateway)) == (6, "fd00:3::1")
    assert pool.address(pool.first) == "fd00:3::1" and pool.first == 1  # ::0 is anycast
    assert pool.address(pool.last) == "fd00:3::ffff"  # no broadcast: the last is usable
    assert pool.capacity == 2**16 - 2
    assert pool.offset("fd00:3::a") == 10 and pool.offset("192.168.3.10") is None
    assert pool.excluded(["fd00:3::5", "fd00:4::5", "192.168.3.5", "fe80::1"]) == {1, 5}
    smallest = Pool.parse("fd00:3::/126", "fd00:3::3")  # the last address may be the gateway
    assert (smallest.first, smallest.last, smallest.capacity) == (1, 3, 2)


def test_ipv6_offsets_stay_far_inside_the_store_integer() -> None:
    pool = Pool.parse("2001:db8::/96")
    assert pool.last == 2**32 - 1 < 2**62
    assert pool.offset(pool.address(pool.last)) == pool.last
    assert not pool.overlaps("0.0.0.0/1")  # another family never overlaps


def test_a_64_hands_out_its_first_2_to_the_32_addresses() -> None:
    pool = Pool.parse("2001:db8:0:3::/64")
    assert (pool.first, pool.last, str(pool.gateway)) == (1, 2**32 - 1, "2001:db8:0:3::1")
    assert pool.address(pool.last) == "2001:db8:0:3::ffff:ffff"
    assert pool.offset("2001:db8:0:3::1:0:0") == 2**32  # in the network, beyond the range


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
        ("2001:db8::/63", None, "use a /64 or longer IPv6 pool"),
        ("fd00:3::/127", None, "too small"),
        ("fd00:3::1/112", None, "did you mean fd00:3::/112"),
        ("fd00:3::/112", "fd00:3::", "host address inside"),
        ("fd00:3::/112", "fd00:4::1", "host address inside"),
        ("fd00:3::/112", "192.168.3.1", "host address inside"),
        ("fd00:3::/112", "fd00:3::zz", "not an IPv6 address"),
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


# -- property-based: what an admin may type -------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ipv4 = st.ip_addresses(v=4).map(str)
pool_text = st.one_of(
    st.builds(lambda a, p: f"{a}/{p}", ipv4, st.integers(-2, 40)),
    st.builds(lambda a, p: f"{a}/{p}", ipv4, st.sampled_from(["", "024", "+24", " 24", "24 "])),
    ipv4,
    st.text(max_size=30),
)
gateway_text = st.one_of(st.none(), ipv4, st.text(max_size=20))


@settings(max_examples=3000, deadline=None)
@given(pool_text, gateway_text, st.booleans())
def test_any_pool_and_gateway_accepted_with_sound_arithmetic_or_one_line(
    cidr: str, gateway, optional: bool
) -> None:
    try:
        pool = Pool.parse(cidr, gateway, gateway_optional=optional)
    except UsageError as e:
        text = str(e)
        assert "\n" not in text and text.startswith(("--pool", "--gateway"))
        return
    assert pool.name == cidr  # only the normalised form is accepted
    assert pool.network.version == 4 and pool.prefixlen <= 30
    assert 1 <= pool.first <= pool.last < pool.network.size - 1
    if pool.gateway is None:
        assert optional and gateway is None
    else:
        offset = pool.offset(str(pool.gateway))
        assert offset is not None and pool.first <= offset <= pool.last
    excluded = pool.excluded([])
    assert pool.capacity == pool.last - pool.first + 1 - len(excluded) >= 1
    for slot in (pool.first, pool.last):
        assert pool.offset(pool.address(slot)) == slot
