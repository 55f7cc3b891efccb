"""The installed .deb's metrics timer: shipped, disabled, and its command works.

Runs with tools/test-deb.sh (``TUNHELPER_TEST_COMMAND=/usr/bin/tunhelper``), on Debian
12 and in CI's Debian 13 tree alike.
"""

from __future__ import annotations

import configparser
import glob
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from tests.test_metrics import samples

pytestmark = pytest.mark.installed

UNITS = ("tunhelper-metrics.service", "tunhelper-metrics.timer")


def unit_path(name: str) -> Path:
    files = subprocess.run(
        ["dpkg", "-L", "tunhelper"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    (path,) = [f for f in files if f.endswith(f"/systemd/system/{name}")]
    return Path(path)


def test_timer_and_service_are_shipped_and_not_enabled() -> None:
    for name in UNITS:
        assert unit_path(name).is_file()
        assert not glob.glob(f"/etc/systemd/system/*.wants/{name}")  # disabled by default
    timer = configparser.ConfigParser(strict=False)
    timer.read(unit_path("tunhelper-metrics.timer"))
    assert timer["Install"]["WantedBy"] == "timers.target"
    examples = "/usr/share/doc/tunhelper/examples/prometheus/tunhelper-alerts.yml"
    assert "tunhelper_pool_free / tunhelper_pool_size" in Path(examples).read_text()


def test_the_services_own_command_writes_parsable_metrics(tmp_path: Path) -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(unit_path("tunhelper-metrics.service"))
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv[0] == "/usr/bin/tunhelper" and argv[-4] == "--output"
    assert argv[-3] == "/var/lib/prometheus/node-exporter/tunhelper.prom"
    assert argv[-2:] == ["--output-group", "prometheus"]  # the collector's user, on Debian
    target = tmp_path / "tunhelper.prom"
    state = tmp_path / "state"
    mine = [*argv[:-3], str(target), "--output-group", "root"]  # no prometheus group here
    subprocess.run([*mine, "--state-dir", str(state)], check=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    found = samples(target.read_text())
    assert found[("tunhelper_refusals_total", (("reason", "no_device"),))] == 0
