"""The installed .deb's renew timer (a fleet's shared store): shipped, disabled, and its
service's command runs.

Runs with tools/test-deb.sh (``TUNHELPER_TEST_COMMAND=/usr/bin/tunhelper``).
"""

from __future__ import annotations

import configparser
import glob
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.test_metrics_package import unit_path

pytestmark = pytest.mark.installed

UNITS = ("tunhelper-renew.service", "tunhelper-renew.timer")


def test_renew_units_are_shipped_and_not_enabled() -> None:
    for name in UNITS:
        assert unit_path(name).is_file()
        assert not glob.glob(f"/etc/systemd/system/*.wants/{name}")  # disabled by default
    timer = configparser.ConfigParser(strict=False)
    timer.read(unit_path("tunhelper-renew.timer"))
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_services_command_runs_without_a_shared_store(tmp_path: Path) -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(unit_path("tunhelper-renew.service"))
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/bin/tunhelper", "renew"]
    state = tmp_path / "state"
    config = tmp_path / "none.conf"
    config.write_text("[store]\nbackend = sqlite\n")
    result = subprocess.run(
        [*argv, "--state-dir", str(state), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("renewed 0 live lease(s)"), result.stdout
