"""The installed .deb's renew service (a fleet's shared store): shipped, disabled, a loop
that renews every lifetime/3, and its command runs.

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

UNITS = ("tunhelper-renew.service",)


def test_renew_units_are_shipped_and_not_enabled() -> None:
    for name in UNITS:
        assert unit_path(name).is_file()
        assert not glob.glob(f"/etc/systemd/system/*.wants/{name}")  # disabled by default
    listed = subprocess.run(["dpkg", "-L", "tunhelper"], capture_output=True, text=True).stdout
    assert "tunhelper-renew.timer" not in listed  # the loop replaced it
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(unit_path("tunhelper-renew.service"))
    assert service["Install"]["WantedBy"] == "multi-user.target"
    assert service["Service"]["Restart"] == "always"


def test_the_services_command_runs_without_a_shared_store(tmp_path: Path) -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(unit_path("tunhelper-renew.service"))
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv == ["/usr/bin/tunhelper", "renew", "--loop"]
    argv = argv[:-1]  # one round
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
    assert f"{state}: renewed 0 live lease(s)" in result.stdout, result.stdout
