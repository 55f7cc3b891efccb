"""``tunhelper doctor``: each check alone (pure logic), then against a real lab sshd."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_lab_prerequisites
from tests.lab import SSHD, Lab, run, tunhelper_command
from tunhelper import settings as settings_module
from tunhelper.admin import doctor, doctor_sshd, doctor_store, openssh
from tunhelper.errors import UsageError
from tunhelper.pool import Pool
from tunhelper.store import Owner, Request, open_store

OPTIONS = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMeWithTheClientsOwnKey00 laptop"
HELPER = tunhelper_command()


def key_line(command: str, options: str = OPTIONS) -> str:
    quoted = command.replace('"', '\\"')
    return f'{options},command="{quoted}" {KEY}' if options else f'command="{quoted}" {KEY}'


def levels(findings) -> list[str]:
    return [f.level for f in findings]


def texts(findings, level: str) -> list[str]:
    return [f.text for f in findings if f.level == level]


# -- authorized_keys syntax ------------------------------------------------------------


def test_options_with_quoted_commas_and_escaped_quotes() -> None:
    line = r'no-pty,from="10.0.0.0/8,192.168.0.0/16",command="tunhelper --client \"a b\", x" ' + KEY
    options, rest = openssh.split_key_line(line) or ("", "")
    assert rest == KEY
    assert openssh.parse_options(options) == [
        ("no-pty", None),
        ("from", "10.0.0.0/8,192.168.0.0/16"),
        ("command", 'tunhelper --client "a b", x'),
    ]


def test_lines_without_options_comments_and_blanks() -> None:
    assert openssh.split_key_line(KEY) == ("", KEY)
    assert openssh.split_key_line('# command="tunhelper"') is None
    assert openssh.split_key_line("   ") is None
    assert openssh.split_key_line("NO-PTY " + KEY) == ("NO-PTY", KEY)
    assert openssh.parse_options('NO-PTY,Command="x"') == [("no-pty", None), ("command", "x")]


@pytest.mark.parametrize("options", ['command="unclosed', "command=unquoted", "a,,b", 'a="x"b'])
def test_malformed_options_are_one_error_line(options: str) -> None:
    findings, parsed = doctor.check_key_line("keys:1", f"{options} {KEY}")
    assert parsed is None
    assert levels(findings) == ["error"] and "cannot read the line" in findings[0].text


option_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\\"),
    max_size=40,
)
option_name = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(option_name, st.one_of(st.none(), option_value)), max_size=6))
def test_options_written_as_sshd_reads_them_parse_back(options) -> None:
    """Any option list, quoted the way sshd dequotes it (only \\" is special), round-trips."""
    text = ",".join(
        name if value is None else f'{name}="{value.replace(chr(34), chr(92) + chr(34))}"'
        for name, value in options
    )
    if not text:
        assert openssh.split_key_line(KEY) == ("", KEY)
        return
    split = openssh.split_key_line(f"{text} {KEY}")
    assert split == (text, KEY)
    assert openssh.parse_options(split[0]) == options


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=200))
def test_any_authorized_keys_line_gives_findings_never_a_traceback(line: str) -> None:
    findings, _ = doctor.check_key_line("keys:1", line)
    for f in findings:
        assert f.level in ("ok", "warning", "error") and "\n" not in f.text


# -- tunhelper lines: the helper's own parsers decide -----------------------------------


def test_a_sound_line_has_no_warning() -> None:
    findings, parsed = doctor.check_key_line(
        "keys:1", key_line(f"{HELPER} --pool 192.168.3.0/24 --max-leases 2")
    )
    assert levels(findings) == ["ok"], findings
    assert parsed is not None and parsed.pool.name == "192.168.3.0/24"


def test_restrict_is_an_error_and_missing_restrictions_are_warnings() -> None:
    findings, _ = doctor.check_key_line(
        "keys:1", key_line(f"{HELPER} --pool 192.168.3.0/24 --max-leases 2", "restrict")
    )  # an unknown OpenSSH is judged as the newest: from 10.5, restrict blocks tunnels
    assert any("'restrict' blocks tunnel forwarding" in t for t in texts(findings, "error"))
    findings, _ = doctor.check_key_line(
        "keys:1", key_line(f"{HELPER} --pool 192.168.3.0/24 --max-leases 2", "no-agent-forwarding")
    )
    warned = " ".join(texts(findings, "warning"))
    for missing in ("no-pty", "no-port-forwarding", "no-X11-forwarding"):
        assert f"no {missing}" in warned
    assert "no-agent-forwarding:" not in warned


@pytest.mark.parametrize(
    "args",
    [
        "--pool 192.168.3.0/33",
        "--pool 192.168.3.7/24",
        "--pool 192.168.3.0/24 --gateway 10.0.0.1",
        "--pool 192.168.3.0/24 --mtu 99999",
        "--pool 192.168.3.0/24 --bridge br0 --bridge-name br1",
        "--pool 192.168.3.0/24 --frobnicate",
        "",
    ],
)
def test_bad_arguments_get_the_helpers_own_message(args: str) -> None:
    findings, parsed = doctor.check_key_line("keys:7", key_line(f"{HELPER} {args}"))
    assert parsed is None
    with pytest.raises(UsageError) as helper_says:
        settings_module.serve_settings(shlex.split(args))
    assert f"keys:7: {helper_says.value}" in texts(findings, "error")


def test_help_version_subcommands_relative_paths_and_no_limit() -> None:
    def errors_of(command: str) -> list[str]:
        return texts(doctor.check_key_line("k:1", key_line(command))[0], "error")

    assert any("--help or --version" in t for t in errors_of(f"{HELPER} --help"))
    assert any("--help or --version" in t for t in errors_of(f"{HELPER} --vers"))
    assert any("runs 'tunhelper leases'" in t for t in errors_of(f"{HELPER} leases"))
    assert any(
        "not an executable" in t for t in errors_of("/nonexistent/tunhelper --pool 10.0.0.0/24")
    )
    findings, _ = doctor.check_key_line("k:1", key_line("tunhelper --pool 10.0.0.0/24"))
    assert any("not an absolute path" in t for t in texts(findings, "warning"))
    findings, parsed = doctor.check_key_line(
        "k:1", key_line(f"exec {sys.executable} -m tunhelper --pool 10.0.0.0/24 --max-leases 1")
    )
    assert levels(findings) == ["ok"] and parsed is not None


def test_lines_that_do_not_run_tunhelper_are_not_judged() -> None:
    for line in (KEY, key_line("/usr/bin/rsync --server"), "restrict " + KEY):
        assert doctor.check_key_line("k:1", line) == ([], None)


def test_overlapping_pools_and_split_state() -> None:
    def line(n: int, args: str) -> doctor.KeyLine:
        _, parsed = doctor.check_key_line(f"k:{n}", key_line(f"{HELPER} {args} --max-leases 1"))
        assert parsed is not None
        return parsed

    same = [line(1, "--pool 10.0.0.0/24"), line(2, "--pool 10.0.0.0/24")]
    assert doctor.check_pools(same) == []
    nested = [line(1, "--pool 10.0.0.0/24"), line(2, "--pool 10.0.0.128/25")]
    assert "overlap" in texts(doctor.check_pools(nested), "error")[0]
    split = [line(1, "--pool 10.0.0.0/24"), line(2, "--pool 10.0.0.0/24 --state-dir /srv/th")]
    assert "two state directories" in texts(doctor.check_pools(split), "error")[0]
    gateways = [line(1, "--pool 10.0.0.0/24"), line(2, "--pool 10.0.0.0/24 --gateway 10.0.0.254")]
    assert "two gateways" in texts(doctor.check_pools(gateways), "warning")[0]
    apart = [line(1, "--pool 10.0.0.0/24"), line(2, "--pool 10.0.1.0/24")]
    assert doctor.check_pools(apart) == []
    # the IPv6 pool of a dual-stack line counts as much as its IPv4 one
    dual = "--pool 10.0.0.0/24 --pool fd00:3::/112"
    v6 = [line(1, dual), line(2, "--pool 10.0.1.0/24 --pool fd00:3::80/121")]
    (found,) = texts(doctor.check_pools(v6), "error")
    assert "fd00:3::/112" in found and "overlap" in found
    v6_split = [line(1, dual), line(2, "--pool fd00:3::/112 --state-dir /srv/th")]
    assert "two state directories" in texts(doctor.check_pools(v6_split), "error")[0]
    assert (
        doctor.check_pools([line(1, dual), line(2, "--pool 10.0.1.0/24 --pool fd00:4::/112")]) == []
    )


# -- sshd settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "flagged"),
    [
        (["LANG", "LC_*"], []),
        (["*"], list(doctor_sshd.DANGEROUS_ENV)),
        (["LD_*"], ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"]),
        (["L?_PRELOAD"], ["LD_PRELOAD"]),
        (["PYTHON*"], ["PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT"]),
        (["BASH_*"], ["BASH_ENV", "BASH_FUNC_tunhelper%%"]),
        (["SSH_*"], ["SSH_USER_AUTH"]),
        (["[L]D_PRELOAD"], []),  # sshd has no character classes: a literal "["
        (["ld_preload"], []),  # sshd compares names with case
    ],
)
def test_accept_env_patterns(patterns: list[str], flagged: list[str]) -> None:
    found = [name for _, names in doctor_sshd.accept_env_risks(patterns) for name in names]
    assert sorted(found) == sorted(flagged)


SSHD_T_GOOD = """\
permittunnel yes
permitrootlogin forced-commands-only
exposeauthinfo yes
maxstartups 100:30:200
acceptenv LANG
acceptenv LC_*
clientaliveinterval 15
clientalivecountmax 3
authorizedkeysfile .ssh/authorized_keys /etc/ssh/keys/%u %h/.ssh/k%%
"""


def test_a_sound_sshd_configuration_is_all_ok() -> None:
    found = doctor_sshd.check_sshd(openssh.SshdConfig.parse(SSHD_T_GOOD))
    assert levels(found) == ["ok"] * len(found)


@pytest.mark.parametrize(
    ("line", "level", "words"),
    [
        ("permittunnel no", "error", "PermitTunnel no"),
        ("permitrootlogin no", "error", "cannot run as root"),
        ("permitrootlogin yes", "warning", "without a forced command"),
        ("exposeauthinfo no", "warning", "ExposeAuthInfo no"),
        ("maxstartups 3:30:10", "warning", "MaxStartups 3:30:10"),
        ("acceptenv PYTHON*", "error", "PYTHONPATH"),
        ("clientaliveinterval 0", "warning", "ClientAliveInterval 0"),
    ],
)
def test_each_sshd_problem_is_one_finding(line: str, level: str, words: str) -> None:
    key = line.split()[0]
    text = "\n".join(x for x in SSHD_T_GOOD.splitlines() if not x.startswith(key)) + f"\n{line}\n"
    found = doctor_sshd.check_sshd(openssh.SshdConfig.parse(text))
    bad = [f for f in found if f.level != "ok"]
    assert len(bad) == 1 and bad[0].level == level and words in bad[0].text, found


def test_authorized_keys_file_expanded_as_sshd_does() -> None:
    home = os.path.expanduser("~root")
    paths = openssh.authorized_keys_paths(openssh.SshdConfig.parse(SSHD_T_GOOD))
    assert paths == [f"{home}/.ssh/authorized_keys", "/etc/ssh/keys/root", f"{home}/.ssh/k%"]


# -- the host ------------------------------------------------------------------------


def test_tun_device_and_persistent_devices(tmp_path: Path, monkeypatch) -> None:
    from tunhelper.platform.linux import checks, proc

    monkeypatch.setattr(checks, "TUN_NODE", str(tmp_path / "none"))
    assert levels(doctor.check_tun()) == ["error"]
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(checks, "TUN_NODE", str(tmp_path / "file"))
    assert levels(doctor.check_tun()) == ["error"]
    sysfs = tmp_path / "net"
    for name, flags in (("tun0", "0x1001"), ("tun5", "0x1801"), ("vpn0", "0x1801"), ("eth0", "")):
        (sysfs / name).mkdir(parents=True)
        if flags:
            (sysfs / name / "tun_flags").write_text(flags + "\n")
    monkeypatch.setattr(proc, "SYSFS_NET", str(sysfs))
    (found,) = doctor.check_persistent_devices()
    assert found.level == "error" and "tun5" in found.text and "-w any:5" in found.text
    assert "ip link set tun5 name vpn0" in found.text


def test_loose_reverse_path_filtering_is_a_warning(tmp_path: Path, monkeypatch) -> None:
    from tunhelper.platform.linux import checks

    conf = tmp_path / "rp_filter"
    monkeypatch.setattr(checks, "ALL_RP_FILTER", str(conf))
    for value, level in (("0", "ok"), ("1", "ok"), ("2", "warning")):
        conf.write_text(value + "\n")
        assert levels(doctor.check_source_filter()) == [level]
    monkeypatch.setattr(checks, "ALL_RP_FILTER", str(tmp_path / "none"))
    assert levels(doctor.check_source_filter()) == ["warning"]


def test_state_directory_permissions(tmp_path: Path) -> None:
    assert levels(doctor.check_state_dir(str(tmp_path / "missing"))) == ["ok"]
    d = tmp_path / "state"
    d.mkdir()
    for mode, level in ((0o700, "ok"), (0o711, "error"), (0o755, "error"), (0o777, "error")):
        d.chmod(mode)
        assert levels(doctor.check_state_dir(str(d))) == [level], oct(mode)
    (tmp_path / "file").write_text("")
    assert levels(doctor.check_state_dir(str(tmp_path / "file"))) == ["error"]


def _filled_store(state: str, rows: int = 200) -> str:
    pool = Pool.parse("10.0.0.0/16")
    store = open_store(state)
    holder = Owner("h", "b", 1, 1.0, 2, 2.0, "tun0")
    for i in range(rows):
        store.allocate(
            Request(pool.name, pool.first, pool.last, set(), f"c{i}", holder, pool.address),
            lambda lease: True,
        )
    store.close()
    return os.path.join(state, "leases.sqlite3")


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_sound_database_is_ok_and_read_only(tmp_path: Path) -> None:
    path = _filled_store(str(tmp_path / "state"))
    before = digest(path)
    (found,) = doctor_store.check_local(str(tmp_path / "state"), [])
    assert found.level == "ok" and "200 addresses known, 200 recorded active" in found.text
    assert digest(path) == before


def test_a_shared_store_gateway_is_not_told_a_session_creates_the_database(tmp_path) -> None:
    """With PostgreSQL no session ever creates the SQLite file: doctor says where the
    leases are and what the directory keeps instead."""
    from types import SimpleNamespace

    from tunhelper.store import POSTGRESQL, SQLITE, StoreConfig

    state = str(tmp_path / "state")
    os.makedirs(state, mode=0o700)
    (Path(state) / "pending-releases").write_text('{"pool": "p", "slot": 1, "token": "t"}\n')
    shared = StoreConfig(POSTGRESQL, "host=db", 600.0, "/etc/tunhelper/fleet.conf")
    line = SimpleNamespace(state_dir=state, store=shared)
    (found,) = doctor_store.check_local(state, [line])
    assert found.level == "ok" and "first session" not in found.text
    assert found.text == (
        f"{state}: leases are kept in the shared store of /etc/tunhelper/fleet.conf; this "
        "directory keeps only the releases the database missed (1 waiting)"
    )
    local = SimpleNamespace(state_dir=state, store=StoreConfig(SQLITE))  # one SQLite line too
    (found,) = doctor_store.check_local(state, [line, local])
    assert "no lease database yet; the first session creates it" in found.text


@pytest.mark.parametrize("damage", ["garbage", "pages", "truncated", "other-db"])
def test_damaged_database_says_what_to_do_and_is_left_untouched(tmp_path: Path, damage) -> None:
    state = str(tmp_path / "state")
    path = _filled_store(state)
    data = bytearray(Path(path).read_bytes())
    if damage == "garbage":
        data = bytearray(b"this is not a database" * 200)
    elif damage == "pages":
        for offset in range(4096, len(data), 4096):  # every page but the header's
            data[offset + 8 : offset + 200] = os.urandom(192)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    Path(path).write_bytes(bytes(data))
    if damage == "other-db":
        os.unlink(path)
        import sqlite3

        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
    before = digest(path)
    (found,) = doctor_store.check_local(state, [])
    assert found.level == "error", found
    assert f"mv {path} {path}.broken" in found.text and "sticky" in found.text
    assert digest(path) == before


# -- the command, against a real sshd configuration -------------------------------------


def doctor_cmd(lab: Lab, *extra: str) -> subprocess.CompletedProcess:
    return lab.doctor(*extra)


def one_finding_per_line(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines and all(line.split(":")[0] in ("ok", "warning", "error") for line in lines)
    return lines


def test_doctor_on_the_lab_gateway(make_lab) -> None:
    lab = make_lab(
        ["--pool", "192.168.3.0/24", "--max-leases", "4"],
        sshd_options={"ClientAliveInterval": "5"},
    )
    client = lab.add_client()
    session = client.connect()
    assert session.read_address() is not None
    result = doctor_cmd(lab)
    lines = one_finding_per_line(result)
    assert result.returncode == 0, result.stdout
    assert [x for x in lines if not x.startswith("ok:")] == [], result.stdout
    assert any(f"{lab.state_dir}/leases.sqlite3: intact" in x for x in lines)


def test_doctor_finds_what_is_wrong_and_exits_1(make_lab) -> None:
    lab = make_lab(
        ["--pool", "192.168.3.0/24"],
        sshd_options={"AcceptEnv": "LANG LC_* LD_*", "ExposeAuthInfo": "no"},
        key_options="restrict",
    )
    lab.add_client()
    lab.authorize(lab.clients[0].public_key, ["--pool", "192.168.3.128/25"])
    run("ip", "tuntap", "add", "tun7", "mode", "tun", ns=lab.server_ns)
    os.makedirs(lab.state_dir, mode=0o700)
    Path(lab.state_dir, "leases.sqlite3").write_bytes(b"garbage" * 1000)
    result = doctor_cmd(lab)
    lines = one_finding_per_line(result)
    assert result.returncode == 1
    errors = [x for x in lines if x.startswith("error:")]
    expected = ("AcceptEnv LD_*", "overlap", "tun7", "mv ")
    for words in expected:
        assert sum(words in x for x in errors) >= 1, (words, result.stdout)
    version, _ = openssh.sshd_version(SSHD)  # restrict blocks tunnels from OpenSSH 10.5
    level = "error:" if (version or openssh.NEWEST) >= openssh.RESTRICT_BLOCKS_TUN else "warning:"
    flagged = [x.split(":")[0] for x in lines if "'restrict'" in x]
    assert flagged and flagged == [level[:-1]] * len(flagged), result.stdout
    assert any("ExposeAuthInfo no" in x for x in lines if x.startswith("warning:"))


def test_doctor_when_sshd_cannot_read_its_configuration(tmp_path: Path) -> None:
    require_lab_prerequisites()  # sshd installed, root
    result = run(
        tunhelper_command(), "doctor", "--sshd-config", str(tmp_path / "none"), check=False
    )
    lines = one_finding_per_line(result)
    assert result.returncode == 1
    assert "sshd -T" in lines[0] and lines[0].startswith("error:")


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=400))
def test_any_sshd_t_output_gives_one_line_findings(text: str) -> None:
    settings_ = openssh.SshdConfig.parse(text)
    for finding in doctor_sshd.check_sshd(settings_):
        assert finding.level in ("ok", "warning", "error") and "\n" not in finding.text
    for path in openssh.authorized_keys_paths(settings_):
        assert os.path.isabs(path)
