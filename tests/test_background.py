"""``connect --background`` pid files: never written through a link or in a directory
others can write to, and ``disconnect`` signals only a live ``tunhelper connect``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.lab import wait_until
from tunhelper.client import background
from tunhelper.errors import TunhelperError


def pid_line(proc: subprocess.Popen) -> str:
    return f"{proc.pid} {psutil.Process(proc.pid).create_time()!r}\n"


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_disconnect_never_signals_a_process_that_is_not_a_connect(tmp_path: Path, sleeper) -> None:
    tmp_path.chmod(0o755)
    pid_file = tmp_path / "connect.pid"
    pid_file.write_text(pid_line(sleeper))  # the right pid and start time, the wrong program
    background.disconnect(None, str(pid_file), wait=0.5)
    assert sleeper.poll() is None


def test_disconnect_signals_a_connect_it_names(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    # a stand-in whose command line reads as a connect's
    proc = subprocess.Popen(
        ["python3", "-c", "import time; time.sleep(60)", "tunhelper", "connect"],
    )
    try:  # until the child has exec'd python3, its command line may be empty
        assert wait_until(lambda: background._is_connect(psutil.Process(proc.pid).cmdline()), 5)
        pid_file = tmp_path / "connect.pid"
        pid_file.write_text(pid_line(proc))
        background.disconnect(None, str(pid_file), wait=5)
        assert proc.wait(5) is not None
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_file_that_is_a_link_is_not_followed(tmp_path: Path, sleeper) -> None:
    tmp_path.chmod(0o755)
    real = tmp_path / "real"
    real.write_text(pid_line(sleeper))
    link = tmp_path / "connect.pid"
    link.symlink_to(real)
    assert background._read(str(link)) is None


def test_a_directory_others_can_write_is_refused(tmp_path: Path, sleeper) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(TunhelperError, match="others"):
        background.start(str(shared / "connect.pid"))  # refused before any fork
    (shared / "connect.pid").write_text(pid_line(sleeper))
    with pytest.raises(TunhelperError, match="others"):
        background.disconnect(None, str(shared / "connect.pid"))
    assert sleeper.poll() is None


def test_the_pid_file_is_written_without_following_a_planted_link(tmp_path: Path) -> None:
    """The child writes its pid file; a link already at the name is replaced, not followed."""
    tmp_path.chmod(0o755)
    target = tmp_path / "victim"
    target.write_text("precious\n")
    pid_file = tmp_path / "connect.pid"
    pid_file.symlink_to(target)
    script = (
        "import os, sys, time\n"
        "from tunhelper.client import background\n"
        "background.start(sys.argv[1])\n"
        "background.ready(0)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(pid_file)], check=True, timeout=20)
    assert target.read_text() == "precious\n"
    assert not pid_file.is_symlink()
    pid = int(pid_file.read_text().split()[0])
    assert pid > 0
