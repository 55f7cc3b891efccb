"""The source filter's rule sets, as nft itself reads them (``nft -c``: checked, not
loaded), for every shape a session can ask for; what they do is shown end to end in
tests/test_spoof_e2e.py."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest

from tunhelper.platform.base import DeviceInfo
from tunhelper.platform.linux import sourcefilter

GATEWAY_LL = [ipaddress.IPv6Address("fe80::1"), ipaddress.IPv6Address("fe80::2")]
CASES = {
    "tun, one address": ("tun", ["192.168.3.2/32"], []),
    "tun, dual stack and client nets": (
        "tun",
        ["192.168.3.2/32", "fd00:3::2/128", "10.77.0.0/24", "fd77::/64"],
        [],
    ),
    "tap, IPv4 only": ("tap", ["192.168.3.2/32"], []),
    "tap, dual stack, a bridge with link-locals": (
        "tap",
        ["192.168.3.2/32", "fd00:3::2/128"],
        GATEWAY_LL,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rule_set_is_valid_nftables(case: str) -> None:
    nft = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if nft is None:
        pytest.fail("nft (nftables) is needed: the gateway's source filter is made of it")
    mode, sources, gateway = CASES[case]
    script = sourcefilter.guard_script(DeviceInfo("lo", 1, mode), sources, gateway)
    result = subprocess.run([nft, "-c", "-f", "-"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + script


def test_a_tap_port_pins_one_mac_and_one_link_local_unique_among_ports() -> None:
    script = sourcefilter.guard_script(DeviceInfo("tap3", 17, "tap"), ["192.168.3.2/32"], [])
    lines = script.splitlines()
    assert "add rule netdev tunhelper tap3_17 meta iif != 17 accept" in lines  # first rule
    pin = [x for x in lines if "add @tap3_17 " in x]
    assert len(pin) == 1 and pin[0].index("add @tap3_17 ") < pin[0].index("add @macs ")
    assert lines[-1] == "add rule netdev tunhelper tap3_17 drop"
