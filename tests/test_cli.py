"""The command line: bad input is one clear line, the environment configures nothing."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lab import installed_command, tunhelper_command
from tunhelper import __version__, cli, options
from tunhelper import settings as settings_module
from tunhelper.errors import UsageError
from tunhelper.pool import Pool


def tunhelper(*args: str, env: dict | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """Run the command under test: the venv's, or the installed package's launcher."""
    return subprocess.run(
        [tunhelper_command(), *args],
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
        (["--pool", "192.168.3.0/24", "--pool", "10.0.0.0/8"], "twice for IPv4"),
        (["--pool", "fd00:3::/112", "--pool", "fd00:4::/112"], "twice for IPv6"),
        (["--pool", "fd00:3::/48"], "use a /64 or longer IPv6 pool"),
        (["--pool", "192.168.3.0/24", "--gateway", "fd00:3::1"], "no --pool is IPv6"),
        (["--pool", "fd00:3::/112", "--gateway", "192.168.3.1"], "no --pool is IPv4"),
        (["--pool", "fd00:3::/112", "--address", "192.168.3.9"], "no --pool is IPv4"),
        (["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112", "--gateway", "gw"], "--gateway"),
        (
            ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]
            + ["--gateway", "fd00:3::1", "--gateway", "fd00:3::2"],
            "--gateway given twice for IPv6",
        ),
        (["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112", "--address", "fd00:4::9"], "fd00"),
        (
            ["--pool", "192.168.3.0/24", "--dns", "fd00:3::53"],
            "--dns fd00:3::53 is an IPv6 address",
        ),
        (["--pool", "office", "--pool", "fd00:3::/112"], "give it alone"),
        (["--pool", "192.168.3.0/24", "--route", "0.0.0.0/0"], "0.0.0.0/1"),
        (["--pool", "192.168.3.0/24", "--route", "10.0.0.1/8"], "did you mean 10.0.0.0/8"),
        (["--pool", "192.168.3.0/24", "--client-net", "192.168.3.128/25"], "overlaps --pool"),
        (["--pool", "192.168.3.0/24", "--client-net", "nowhere"], "--client-net"),
        (["--pool", "192.168.3.0/24", "--dns", "dns.example"], "--dns"),
        (["--pool", "192.168.3.0/24", "--dns", "fe80::53%eth0"], "--dns"),
        (["--pool", "192.168.3.0/24", "--route", "fd00:9::/64"], "add an IPv6 --pool"),
        (["--pool", "192.168.3.0/24", "--route", "::/0"], "use 'default' (or ::/1 and 8000::/1)"),
        (["--pool", "fd00:3::/112", "--route", "fd00:9::1/64"], "did you mean fd00:9::/64"),
        (["--pool", "fd00:3::/112", "--route", "fd00:9::/129"], "--route"),
        (["--pool", "fd00:3::/112", "--client-net", "10.9.0.0/24"], "add an IPv4 --pool"),
        (["--pool", "192.168.3.0/24", "--client-net", "fd00:8::/64"], "add an IPv6 --pool"),
        (["--pool", "fd00:3::/112", "--client-net", "fd00:3::80/124"], "overlaps --pool fd00:3"),
        (
            ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]
            + ["--client-net", "fd00:3::80/124"],
            "--client-net fd00:3::80/124 overlaps --pool fd00:3::/112",
        ),
        (["--pool", "192.168.3.0/24", "--up", "hook.sh"], "absolute path"),
        (["--pool", "192.168.3.0/24", "--down", "'/bin/x"], "--down"),
        (["--pool", "192.168.3.0/24", "--hook-timeout", "0"], "--hook-timeout"),
        (["--pool", "192.168.3.0/24", "--bridge", "lan0", "--bridge-name", "x"], "one of them"),
        (["--pool", "192.168.3.0/24", "--bridge", "no/slash"], "--bridge"),
        (["leases", "--state-dir", "nope"], "--state-dir"),
        (["release"], "ADDRESS"),
    ],
)
def test_bad_arguments_are_one_line_with_exit_2(args, expect) -> None:
    result = tunhelper(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert expect in one_line(result)


@pytest.mark.parametrize(
    ("option", "value", "line"),
    [
        (
            "--route",
            "fd00:9::/64",
            "tunhelper: --route fd00:9::/64 is an IPv6 network but no --pool is IPv6: "
            "add an IPv6 --pool (e.g. --pool fd00:3::/112) or drop it",
        ),
        (
            "--client-net",
            "fd00:8::/64",
            "tunhelper: --client-net fd00:8::/64 is an IPv6 network but no --pool is IPv6: "
            "add an IPv6 --pool (e.g. --pool fd00:3::/112) or drop it",
        ),
        (
            "--dns",
            "fd00:3::53",
            "tunhelper: --dns fd00:3::53 is an IPv6 address but no --pool is IPv6: "
            "add an IPv6 --pool (e.g. --pool fd00:3::/112) or drop it",
        ),
    ],
)
def test_a_family_without_a_pool_is_refused_before_anything_is_leased(
    tmp_path: Path, option: str, value: str, line: str
) -> None:
    state = tmp_path / "state"
    result = tunhelper("--pool", "192.168.3.0/24", option, value, "--state-dir", str(state))
    assert (result.returncode, result.stdout) == (2, "")
    assert one_line(result) == line
    assert not state.exists()  # no lease database was even opened


def test_ipv6_routes_client_networks_and_dns_with_an_ipv6_pool() -> None:
    settings = settings_module.serve_settings(
        ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]
        + ["--route", "FD00:9:0::/64", "--route", "10.77.0.0/16", "--route", "::/1"]
        + ["--client-net", "fd00:8::/64", "--client-net", "10.88.0.0/24"]
        + ["--dns", "fd00:3:0::53", "--dns", "192.168.3.53"]
    )
    assert settings.routes == ["fd00:9::/64", "10.77.0.0/16", "::/1"]  # compact, as ip shows
    assert settings.client_nets == ["fd00:8::/64", "10.88.0.0/24"]
    assert settings.dns == ["fd00:3::53", "192.168.3.53"]
    only6 = settings_module.serve_settings(["--pool", "fd00:3::/112", "--route", "fd00:9::/64"])
    assert only6.routes == ["fd00:9::/64"]


def test_networks_of_two_families_never_overlap() -> None:
    from tunhelper.pool import overlap

    # the same integers: 10.0.0.0/8 is 0x0a000000-0x0affffff, and so is ::a00:0/104
    assert not overlap("10.0.0.0/8", "::a00:0/104")
    assert not overlap("::a00:0/104", "10.0.0.0/8")
    assert overlap("10.0.0.0/8", "10.1.0.0/16") and overlap("fd00:8::/64", "fd00:8::80/121")
    assert not overlap("fd00:8::/64", "fd00:9::/64")


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
    args = options.serve_parser().parse_args(argv)
    settings_module.resolve_pools(args.pool, args.gateway)


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


def test_dual_stack_pools_and_their_gateways_are_matched_by_family() -> None:
    pool, pool6 = settings_module.resolve_pools(["fd00:3::/112", "192.168.3.0/24"], ["fd00:3::ff"])
    assert (pool.name, str(pool.gateway)) == ("192.168.3.0/24", "192.168.3.1")  # IPv4 first
    assert pool6 is not None and (pool6.name, str(pool6.gateway)) == ("fd00:3::/112", "fd00:3::ff")
    only6, none = settings_module.resolve_pools(["fd00:3::/112"], [])
    assert (only6.version, none) == (6, None)


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
    assert imported_by("import tunhelper.server.keeper") & HEAVY == set()


def test_help_and_admin_paths_do_not_import_the_network_stack() -> None:
    assert imported_by("import tunhelper.cli") & HEAVY == set()
    assert "pyroute2" not in imported_by("import tunhelper.admin.leases")
    assert "pyroute2" not in imported_by("import tunhelper.server.session")  # only when configuring


# -- every parser a client or admin feeds, property-based ------------------------------

PARSERS = {
    "serve": options.serve_parser,
    "leases": options.leases_parser,
    "release": options.release_parser,
    "connect": options.connect_parser,
    "disconnect": options.disconnect_parser,
    "doctor": options.doctor_parser,
}
OPTION_WORDS = [
    "--pool",
    "--gateway",
    "--mtu",
    "--wait",
    "--db-timeout",
    "--max-leases",
    "--bridge",
    "--bridge-name",
    "--client",
    "--state-dir",
    "--json",
    "--force",
    "--tap",
    "--background",
    "--pid-file",
    "-e",
    "--ssh-cmd",
    "--sshd-config",
    "--authorized-keys",
    "--",
    "-",
]
VALUE_WORDS = [
    "192.168.3.0/24",
    "192.168.3.1",
    "10.0.0.0/8",
    "0",
    "-1",
    "1e9",
    "nan",
    "inf",
    "16380",
    "/var/lib/tunhelper",
    "relative",
    "br0",
    "a b",
    "x" * 70,
    "'unclosed",
    "root@gw",
    "\x00",
    "é",
]
argv_strategy = st.lists(
    st.one_of(st.sampled_from(OPTION_WORDS), st.sampled_from(VALUE_WORDS), st.text(max_size=20)),
    max_size=8,
)


def _parse(name: str, argv: list[str]) -> None:
    if name == "serve":
        settings_module.serve_settings(
            argv
        )  # argparse and every further check of the forced command
    else:
        PARSERS[name]().parse_args(argv)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), argv_strategy)
def test_every_subcommands_argv_is_parsed_or_refused_in_one_line(name: str, argv) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _parse(name, argv)
    except UsageError as e:
        assert str(e) and "\n" not in str(e)
        assert e.exit_code == 2
    except SystemExit as e:  # only --help / --version exit, and they exit 0
        assert e.code == 0


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(sorted(set(PARSERS) - {"serve"})), argv=argv_strategy)
def test_bad_subcommand_argv_through_main_is_one_line_and_exit_2(name, argv, capfd) -> None:
    """The real entry point, in-process, only for argv its parser refuses (nothing runs)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _parse(name, argv)
        return  # valid: it would act (create a state dir, run ssh); not here
    except SystemExit:
        return
    except UsageError:
        pass
    capfd.readouterr()
    with mock.patch.dict(os.environ):  # PYTHON* here would make main re-execute pytest
        for key in [k for k in os.environ if k.startswith("PYTHON")]:
            del os.environ[key]
        assert cli.main([name, *argv]) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("tunhelper: "), err


no_nul = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
exec_argv = st.lists(
    st.one_of(
        st.sampled_from(OPTION_WORDS),
        st.sampled_from([v for v in VALUE_WORDS if "\x00" not in v]),
        no_nul.filter(lambda t: len(t) <= 20),
    ),
    max_size=8,
)  # what sshd can pass: C strings, no NUL


@settings(max_examples=150, deadline=None)
@given(exec_argv)
def test_any_forced_command_argv_in_a_real_process_is_one_line(argv: list[str]) -> None:
    """``python -m tunhelper ARGV --wait 0`` outside any session: one line, never a traceback.

    Valid arguments get the real session's first refusal (no tunnel device), which takes
    nothing: discovery comes before any lease or state directory.
    """
    result = tunhelper(*argv, "--wait", "0")
    assert "Traceback" not in result.stderr
    if result.returncode == 0:  # --help or --version
        assert result.stderr == "" and result.stdout
        return
    assert result.stdout == ""
    line = one_line(result)
    assert result.returncode == 2 or "no tunnel device" in line, line


OPTION_NAMES = [
    "POOL",
    "GATEWAY",
    "MTU",
    "WAIT",
    "DB_TIMEOUT",
    "MAX_LEASES",
    "BRIDGE",
    "BRIDGE_NAME",
    "CLIENT",
    "STATE_DIR",
    "ARGS",
    "OPTS",
    "OPTIONS",
    "CONFIG",
    "JSON",
]
option_env_name = st.one_of(
    st.builds(
        lambda prefix, name, lower: (prefix + name).lower() if lower else prefix + name,
        st.sampled_from(["", "TUNHELPER_", "TUNHELPER", "TH_"]),
        st.sampled_from(OPTION_NAMES),
        st.booleans(),
    ),
    st.sampled_from(["LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSH_TUNNEL", "SSH_ORIGINAL_COMMAND"]),
)
python_env_name = st.sampled_from(
    ["PYTHONWARNINGS", "PYTHONINSPECT", "PYTHONOPTIMIZE", "PYTHONUTF8", "PYTHONDEBUG"]
)
env_value = st.one_of(
    st.sampled_from(["10.99.0.0/24", "--pool 10.99.0.0/16", "/tmp", "1", "0", "error", "C"]),
    no_nul.filter(lambda t: len(t) <= 20),
)
ENV_RUNS = [
    ("--pool", "192.168.3.0/24", "--wait", "0", "--state-dir", "{state}"),
    ("leases", "--json", "--state-dir", "{state}"),
    ("--pool", "192.168.3.0/33"),
]


def _outcomes(env: dict[str, str] | None, state: str) -> list[tuple[int, str, str]]:
    results = [tunhelper(*(a.format(state=state) for a in argv), env=env) for argv in ENV_RUNS]
    return [(r.returncode, r.stdout, r.stderr) for r in results]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(option_env_name, env_value, min_size=1, max_size=6))
def test_environment_variables_named_like_options_change_nothing_property(tmp_path_factory, env):
    """Whatever a client's AcceptEnv lets through: the same output, byte for byte."""
    state = str(tmp_path_factory.mktemp("state") / "s")
    assert _outcomes(env, state) == _outcomes(None, state), env


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(python_env_name, env_value, min_size=1, max_size=3))
def test_python_variables_change_no_outcome(tmp_path_factory, env) -> None:
    """PYTHON* variables: tunhelper does the same, or Python refuses to start at all.

    The interpreter reads some of them before tunhelper runs: an invalid PYTHONWARNINGS
    adds a warning line, an invalid PYTHONUTF8 stops it with a fatal error. That harms
    only the sender's own session and takes nothing; what tunhelper does, once it runs,
    is the same (isolated re-execution). AcceptEnv must still not pass PYTHON* (doctor).
    """
    state = str(tmp_path_factory.mktemp("state") / "s")
    baseline = _outcomes(None, state)
    for (code, out, err), (code0, out0, err0) in zip(_outcomes(env, state), baseline):
        ours = [x for x in err.splitlines() if x.startswith("tunhelper:")]
        if "Fatal Python error" in err:  # Python refused before tunhelper could run
            assert code != 0 and out == "" and not ours, (env, err)
            continue
        assert (code, out, ours) == (
            code0,
            out0,
            [x for x in err0.splitlines() if x.startswith("tunhelper:")],
        ), env


@pytest.mark.installation  # pip's launcher and Debian's differ here
def test_pythonpath_acts_before_tunhelper_can_defend_so_doctor_flags_it(tmp_path: Path) -> None:
    """Why AcceptEnv must not pass PYTHON*: the interpreter reads PYTHONPATH at startup.

    tunhelper's isolated re-execution stops what acts later (PYTHONINSPECT at exit), but
    a sitecustomize on PYTHONPATH runs before any of tunhelper's code: docs/security.md.
    """
    (tmp_path / "sitecustomize.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    tunhelper("--version", env={"PYTHONPATH": str(tmp_path)})
    # pip's script (the venv's) cannot stop it; the Debian package's launcher runs
    # python3 -I and so ignores PYTHONPATH before anything is imported.
    assert (tmp_path / "ran").exists() is (installed_command() is None)
    from tunhelper.admin import doctor_sshd

    assert doctor_sshd.accept_env_risks(["PYTHON*"]) != []
