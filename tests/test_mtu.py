"""The link MTU: the most an ssh channel carries by default, never more."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunhelper.errors import TunhelperError
from tunhelper.link import configure
from tunhelper.link.bridge import BridgePlan

MANAGED = BridgePlan("thbrx", managed=True, address="192.168.3.1", prefixlen=24)
ADMINS = BridgePlan("lan0", managed=False, address=None, prefixlen=24)


def test_defaults_are_the_channel_limits() -> None:
    assert configure.choose_mtu("tun", None, MANAGED) == 16380
    assert configure.choose_mtu("tap", None, MANAGED) == 16370


def test_explicit_mtu_within_the_limit_is_kept() -> None:
    assert configure.choose_mtu("tun", 1500, MANAGED) == 1500
    assert configure.choose_mtu("tap", 16370, MANAGED) == 16370


@pytest.mark.parametrize(("mode", "mtu", "limit"), [("tun", 16381, 16380), ("tap", 16371, 16370)])
def test_above_the_channel_limit_is_refused(mode: str, mtu: int, limit: int) -> None:
    with pytest.raises(TunhelperError, match=f"--mtu {mtu} is above .* {mode} channel .*{limit}"):
        configure.choose_mtu(mode, mtu, MANAGED)


def test_an_ipv6_pool_needs_1280() -> None:
    with pytest.raises(TunhelperError, match="--mtu 1279 is below 1280.*IPv6") as e:
        configure.choose_mtu("tun", 1279, MANAGED, ipv6=True)
    assert "\n" not in str(e.value)
    assert configure.choose_mtu("tun", 1280, MANAGED, ipv6=True) == 1280
    assert configure.choose_mtu("tun", None, MANAGED, ipv6=True) == 16380
    assert configure.choose_mtu("tun", 576, MANAGED) == 576  # IPv4 only: as before


def test_a_smaller_admin_bridge_caps_the_default_and_refuses_more(monkeypatch) -> None:
    stats = {"lan0": SimpleNamespace(mtu=9000)}
    monkeypatch.setattr("psutil.net_if_stats", lambda: stats)
    assert configure.choose_mtu("tap", None, ADMINS) == 9000
    assert configure.choose_mtu("tap", 8000, ADMINS) == 8000
    with pytest.raises(TunhelperError, match="above the MTU of bridge lan0"):
        configure.choose_mtu("tap", 9001, ADMINS)
    assert configure.choose_mtu("tun", None, ADMINS) == 16380  # tun never uses the bridge
