"""nftables from this process (platform/linux/nft.py) does what ``nft -f -`` does.

Each case runs in a network namespace of its own (``unshare --net``), so the host's
rule set is never touched. The same script goes through libnftables in process and
through the forked ``nft``; the listings must be the same, and a refused script must
raise the same one-line error either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import require_lab_prerequisites
from tunhelper.platform.base import DeviceInfo
from tunhelper.platform.linux import sourcefilter

IN_NAMESPACE = r"""
import json, sys
from tunhelper.platform.linux import nft
if sys.argv[1] == "forked":
    nft._unavailable = True  # as on a system without the library
else:
    assert nft.in_process(), "libnftables was not loaded"
result = {}
try:
    nft.run(sys.argv[2])
except OSError as e:
    result["error"] = e.strerror
result["listing"] = json.loads(nft.query("list ruleset") or "{}")
result["forked"] = "subprocess" in sys.modules
print(json.dumps(result))
"""


def in_namespace(how: str, script: str) -> dict:
    require_lab_prerequisites()  # root, for the namespace
    out = subprocess.run(
        ["unshare", "--net", sys.executable, "-I", "-c", IN_NAMESPACE, how, script],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    return json.loads(out.stdout)


def without_metainfo(listing: dict) -> list:
    return [x for x in listing.get("nftables", []) if "metainfo" not in x]


@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_a_guard_loads_the_same_in_process_and_forked(mode: str) -> None:
    script = sourcefilter.guard_script(
        DeviceInfo("lo", 1, mode), ["192.168.3.2/32", "fd00::2/128", "10.9.0.0/24"], []
    )
    library, forked = in_namespace("library", script), in_namespace("forked", script)
    assert "error" not in library and "error" not in forked, (library, forked)
    assert without_metainfo(library["listing"]) == without_metainfo(forked["listing"])
    chains = [x["chain"]["name"] for x in without_metainfo(library["listing"]) if "chain" in x]
    assert chains == ["lo_1"]  # control: the listing shows what was loaded
    assert not library["forked"] and forked["forked"]  # in process: no nft, no subprocess


def test_a_refused_script_is_one_line_either_way_and_changes_nothing() -> None:
    # the second line names a chain that does not exist: the first line's table must
    # not stay either (one transaction)
    script = "add table netdev tunhelper\nadd rule netdev tunhelper nochain drop\n"
    library, forked = in_namespace("library", script), in_namespace("forked", script)
    assert library["error"].startswith("nft: Error:"), library
    assert library["error"] == forked["error"]
    assert "\n" not in library["error"]
    assert without_metainfo(library["listing"]) == without_metainfo(forked["listing"]) == []
