"""The command line: bad input is one clear line, the environment configures nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunhelper import __version__, cli
from tunhelper.errors import UsageError
from tunhelper.pool import Pool


def tunhelper(*args: str, env: dict | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunhelper", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tunhelper: ")
    return lines[0]


def test_version_and_help() -> None:
    assert tunhelper("--version").stdout.strip() == f"tunhelper {__version__}"
    text = tunhelper("--help").stdout
    for option in (
        "--pool",
        "--gateway",
        "--mtu",
        "--wait",
        "--db-timeout",
        "--max-leases",
        "--client",
        "--state-dir",
    ):
        assert option in text
    assert "tunhelper leases" in text and "tunhelper release" in text


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        ([], "--pool"),
        (["--pool"], "--pool"),
        (["--pool", "192.168.3.0/24", "--mtu", "99999"], "--mtu"),
        (["--pool", "192.168.3.0/24", "--mtu", "1e3"], "--mtu"),
        (["--pool", "192.168.3.0/24", "--wait", "-1"], "--wait"),
        (["--pool", "192.168.3.0/24", "--wait", "nan"], "--wait"),
        (["--pool", "192.168.3.0/24", "--db-timeout", "-0.5"], "--db-timeout"),
        (["--pool", "192.168.3.0/24", "--db-timeout", "inf"], "--db-timeout"),
        (["--pool", "192.168.3.0/24", "--max-leases", "0"], "--max-leases"),
        (["--pool", "192.168.3.0/24", "--max-leases", "-1"], "--max-leases"),
        (["--pool", "192.168.3.0/24", "--max-leases", "1.5"], "--max-leases"),
        (["--pool", "192.168.3.0/24", "--client", "a b"], "--client"),
        (["--pool", "192.168.3.0/24", "--client", "x" * 65], "--client"),
        (["--pool", "192.168.3.0/24", "--state-dir", "relative"], "--state-dir"),
        (["--pool", "192.168.3.0/24", "--frobnicate"], "--frobnicate"),
        (["--pool", "192.168.3.7/24"], "192.168.3.0/24"),
        (["--pool", "192.168.3.0/24", "--gateway", "10.0.0.1"], "--gateway"),
        (["leases", "--state-dir", "nope"], "--state-dir"),
        (["release"], "ADDRESS"),
    ],
)
def test_bad_arguments_are_one_line_with_exit_2(args, expect) -> None:
    result = tunhelper(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert expect in one_line(result)


def test_environment_variables_named_like_options_change_nothing() -> None:
    env = {
        "TUNHELPER_POOL": "10.0.0.0/24",
        "POOL": "10.0.0.0/24",
        "TUNHELPER_ARGS": "--pool 10/8",
        "TUNHELPER_STATE_DIR": "/tmp",
        "STATE_DIR": "/tmp",
    }
    result = tunhelper(env=env)
    assert result.returncode == 2
    assert "required: --pool" in one_line(result)


def test_python_variables_from_a_client_are_ignored(tmp_path: Path) -> None:
    """PYTHONINSPECT would give whoever writes to stdin a root REPL once we exit."""
    marker = tmp_path / "pwned"
    result = tunhelper(
        "--version",
        env={"PYTHONINSPECT": "1", "PYTHONWARNINGS": "error", "PYTHONDEBUG": "1"},
        stdin=f"open({str(marker)!r}, 'w').write('x')\n",
    )
    assert result.stdout.strip() == f"tunhelper {__version__}"
    assert result.stderr == ""
    assert not marker.exists()


def test_admin_commands_on_an_empty_state_dir(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    assert tunhelper("leases", "--json", "--state-dir", state).stdout.strip() == "[]"
    result = tunhelper("release", "192.168.3.9", "--state-dir", state)
    assert result.returncode == 1
    assert "no active lease for 192.168.3.9" in one_line(result)


def parse_serve(argv: list[str]) -> None:
    args = cli.serve_parser().parse_args(argv)
    Pool.parse(args.pool, args.gateway)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=6))
def test_any_argv_is_parsed_or_refused_in_one_line(argv: list[str]) -> None:
    try:
        parse_serve(argv)
    except UsageError as e:
        assert "\n" not in str(e) and str(e)
    except SystemExit as e:  # only --help / --version exit, and they exit 0
        assert e.code == 0


@settings(max_examples=300, deadline=None)
@given(pool=st.text(max_size=40), gateway=st.one_of(st.none(), st.text(max_size=40)))
def test_any_pool_and_gateway_text_is_accepted_or_one_line(pool: str, gateway) -> None:
    try:
        parsed = Pool.parse(pool, gateway)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert parsed.first <= parsed.last and parsed.gateway in parsed.network


def imported_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; {code}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


HEAVY = {"pyroute2", "psutil", "netaddr", "sqlite3", "dataclasses", "asyncio"}


def test_the_slim_holder_imports_nothing_heavy() -> None:
    """A held session is one process for hours: it must not carry the setup's libraries."""
    assert imported_by("import tunhelper.hold") & HEAVY == set()


def test_help_and_admin_paths_do_not_import_the_network_stack() -> None:
    assert imported_by("import tunhelper.cli") & HEAVY == set()
    assert "pyroute2" not in imported_by("import tunhelper.admin")
    assert "pyroute2" not in imported_by("import tunhelper.session")  # only when configuring
