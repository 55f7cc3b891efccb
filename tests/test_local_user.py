"""A local user (``nobody``) against the state directory: it can read nothing, lock
nothing, and a lock held too long (by anyone) refuses in one line instead of hanging."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tunhelper import statedir
from tunhelper.errors import TunhelperError
from tunhelper.pool import Pool
from tunhelper.store import Owner, Request, open_store

SYSTEM_PYTHON = "/usr/bin/python3"  # a venv under root's home is not nobody's to run
PROBE = """
import fcntl, sqlite3, sys
state = sys.argv[1]
for name in ("leases.sqlite3", "bridges.lock"):
    try:
        open(f"{state}/{name}", "rb")
    except PermissionError:
        print(f"{name}: denied")
    else:
        print(f"{name}: READ")
try:
    db = sqlite3.connect(f"file:{state}/leases.sqlite3?mode=ro", uri=True)
    db.execute("BEGIN")
    db.execute("SELECT count(*) FROM sqlite_master").fetchall()
    print("sqlite: LOCKED")
except sqlite3.Error:
    print("sqlite: denied")
"""


def _as_nobody() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("runuser") or not os.path.exists(SYSTEM_PYTHON):
        if os.environ.get("CI"):
            pytest.fail("runuser as root is needed for the local-user tests")
        pytest.skip("needs root and runuser")
    return ["runuser", "-u", "nobody", "--"]


def _filled(state: Path) -> None:
    store = open_store(str(state))
    pool = Pool.parse("10.0.0.0/24")
    holder = Owner("h", "b", 1, 1.0, 2, 2.0, "tun0")
    store.allocate(
        Request(pool.name, pool.first, pool.last, set(), "c", holder, pool.address),
        lambda lease: True,
    )
    store.close()
    with statedir.held(str(state), "bridges"):
        pass


def test_a_local_user_can_read_or_lock_nothing(tmp_path: Path) -> None:
    runuser = _as_nobody()
    tmp_path.chmod(0o755)  # nobody may reach the state directory's parent
    state = tmp_path / "state"
    _filled(state)
    out = subprocess.run(
        [*runuser, SYSTEM_PYTHON, "-I", "-c", PROBE, str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split("\n")
    assert out[:3] == ["leases.sqlite3: denied", "bridges.lock: denied", "sqlite: denied"], out


def test_a_state_dir_a_local_user_can_enter_is_refused(tmp_path: Path) -> None:
    runuser = _as_nobody()
    tmp_path.chmod(0o755)
    state = tmp_path / "state"
    _filled(state)
    state.chmod(0o711)  # an admin's mistake: now nobody can open files it knows the name of
    probe = subprocess.run(
        [*runuser, SYSTEM_PYTHON, "-I", "-c", PROBE, str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "leases.sqlite3: denied" in probe.stdout  # the files themselves are 0600
    with pytest.raises(TunhelperError, match="open to others.*chmod 700"):
        open_store(str(state))


def test_a_lock_held_too_long_refuses_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with open(state / "bridges.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        start = time.monotonic()
        with (
            pytest.raises(TunhelperError, match="stayed locked") as e,
            statedir.held(str(state), "bridges", timeout=0.3),
        ):
            pass
        assert 0.3 <= time.monotonic() - start < 3
        assert "\n" not in str(e.value)
    with statedir.held(str(state), "bridges", timeout=0.3):  # free again: taken at once
        pass


def test_a_lock_file_is_never_followed_through_a_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    (state / "bridges.lock").symlink_to(target)
    with pytest.raises(OSError), statedir.held(str(state), "bridges", timeout=0.1):
        pass
    assert not target.exists()
