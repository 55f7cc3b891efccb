"""The systemd units' hardening, as ``systemd-analyze security --offline`` scores it:
the renew and metrics units below 3.0, ``tunhelper-connect@`` with nothing beyond
CAP_NET_ADMIN and CAP_SYS_PTRACE (docs/security.md says why each exposure stays).
The control: the same analysis of a unit without the hardening lines scores UNSAFE."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIMITS = {"tunhelper-renew.service": 3.0, "tunhelper-metrics.service": 3.0,
          "tunhelper-connect@.service": 3.0}  # fmt: skip


def exposure(unit_dir: Path, name: str) -> float:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (systemd) is not installed")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", name],
        cwd=unit_dir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def copy_units(tmp_path: Path) -> None:
    for name in LIMITS:
        shutil.copy(REPO / "debian" / f"tunhelper.{name}", tmp_path / name)


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_each_unit_is_hardened_below_its_limit(tmp_path: Path, name: str) -> None:
    copy_units(tmp_path)
    assert exposure(tmp_path, name) < LIMITS[name]


def test_the_control_an_unhardened_unit_scores_unsafe(tmp_path: Path) -> None:
    copy_units(tmp_path)
    unit = tmp_path / "tunhelper-renew.service"
    text = unit.read_text().split("# Hardening")[0]
    unit.write_text(text)
    assert exposure(tmp_path, "tunhelper-renew.service") > 9.0


def test_connect_keeps_only_the_capabilities_it_needs() -> None:
    unit = (REPO / "debian" / "tunhelper.tunhelper-connect@.service").read_text()
    lines = set(unit.splitlines())
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_PTRACE" in lines
    assert "DeviceAllow=/dev/net/tun rw" in lines and "DevicePolicy=closed" in lines
    assert "StartLimitIntervalSec=0" in lines  # a killed connect is always replaced
