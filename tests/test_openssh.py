"""``tunhelper doctor`` and what recent OpenSSH changed for tunnels.

Each setting is judged from the installed sshd's real ``sshd -T`` (a temporary
sshd_config, ``sshd -T -f FILE``) where that sshd knows the keyword, and from output
recorded from Debian 13's OpenSSH 10.0p2 (tests/data/openssh/) where it does not.
Output recorded from Debian sid's OpenSSH 10.6p1 (keywords in mixed case) checks that
it reads and is judged as 10.0's is, on any machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_lab_prerequisites
from tests.lab import SSHD, tunhelper_command, wait_until
from tests.test_doctor import KEY, key_line, levels, texts
from tunhelper.admin import doctor, doctor_sshd, openssh
from tunhelper.errors import TunhelperError

DATA = Path(__file__).parent / "data" / "openssh"
RECORDED = (10, 0, 2)
HELPER = f"{tunhelper_command()} --pool 192.168.3.0/24 --max-leases 2"


def recorded(name: str) -> openssh.SshdConfig:
    return openssh.SshdConfig.parse((DATA / name).read_text())


def installed() -> tuple[openssh.Version, str]:
    require_lab_prerequisites()  # root and an installed sshd
    os.makedirs("/run/sshd", exist_ok=True)  # sshd -T wants it; a fresh machine has none
    version, said = openssh.sshd_version(SSHD)
    assert version is not None, said
    return version, said


def real_sshd_t(
    tmp_path: Path, lines: list[str], connection: str | None = "user=root"
) -> openssh.SshdConfig | None:
    """The installed sshd's effective settings for ``lines``, read as doctor reads them;
    ``None`` if it does not know one of the keywords (then the recorded 10.0 output
    stands in)."""
    require_lab_prerequisites()
    os.makedirs("/run/sshd", exist_ok=True)
    key = tmp_path / "host_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([f"HostKey {key}", *lines]) + "\n")
    try:
        return openssh.read_sshd_config(SSHD, str(config), connection)
    except TunhelperError as e:
        said = str(e).lower()  # sshd's last line: "terminating, 1 bad configuration options"
        assert "bad configuration option" in said or "unsupported" in said, e
        return None


# -- the version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("OpenSSH_10.0p2 Debian-7+deb13u4, OpenSSL 3.5.9 29 Sep 2026", (10, 0, 2)),
        ("OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026", (9, 2, 0)),  # Debian 12's sshd -V
        ("unknown option -- V\nOpenSSH_7.4p1, OpenSSL 1.0.2k-fips", (7, 4, 1)),
        ("OpenSSH_10.5 something", (10, 5, 0)),
        ("OpenSSL 3.0 only", None),
        ("", None),
    ],
)
def test_version_is_parsed_from_what_sshd_prints(text: str, version) -> None:
    assert openssh.parse_version(text) == version


def test_recorded_sshd_v_is_debian_13s_openssh() -> None:
    text = (DATA / "sshd-V-10.0p2-debian13.txt").read_text()
    assert openssh.parse_version(text) == RECORDED


def test_installed_sshd_version_matches_its_package() -> None:
    version, said = installed()
    package = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "openssh-server"], capture_output=True, text=True
    )
    if package.returncode == 0:  # 1:9.2p1-2+deb12u10, 1:10.0p1-7+deb13u4
        upstream = package.stdout.split(":")[-1].split("-")[0]
        assert upstream.startswith(f"{version[0]}.{version[1]}"), (upstream, said)
    found = doctor.findings(None, "/nonexistent", "/nonexistent", sshd=SSHD)
    assert any(f.level == "ok" and openssh.show(version) in f.text for f in found)


# -- DisableForwarding ------------------------------------------------------------------


def test_disable_forwarding_from_the_installed_sshd(tmp_path: Path) -> None:
    version, _ = installed()
    settings = real_sshd_t(tmp_path, ["DisableForwarding yes", "PermitTunnel yes"])
    assert settings is not None  # known since OpenSSH 7.4
    found = [
        f
        for f in doctor_sshd.check_releases(settings, version, "")
        if "DisableForwarding" in f.text
    ]
    want = "error" if version >= openssh.DISABLE_FORWARDING_TUN else "warning"
    assert levels(found) == [want], found
    assert "set DisableForwarding no" in found[0].text
    newer = [
        f
        for f in doctor_sshd.check_releases(settings, (10, 4, 0), "")
        if "DisableForwarding" in f.text
    ]
    assert levels(newer) == ["error"] and "refuses every tunnel" in newer[0].text
    unknown = [
        f for f in doctor_sshd.check_releases(settings, None, "?") if "DisableForwarding" in f.text
    ]
    assert levels(unknown) == ["error"]
    off = real_sshd_t(tmp_path, ["DisableForwarding no"])
    assert off is not None
    assert not [
        f for f in doctor_sshd.check_releases(off, (10, 9, 0), "") if "DisableForwarding" in f.text
    ]


def test_disable_forwarding_recorded_from_openssh_10() -> None:
    settings = recorded("sshd-T-10.0p2-tunnels.txt")
    found = [
        f
        for f in doctor_sshd.check_releases(settings, RECORDED, "")
        if "DisableForwarding" in f.text
    ]
    assert levels(found) == ["warning"] and "10.4 and later refuse them" in found[0].text


# -- restrict -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "level"),
    [((9, 2, 1), "warning"), ((10, 0, 2), "warning"), ((10, 4, 0), "warning"),
     ((10, 5, 0), "error"), ((11, 0, 0), "error"), (None, "error")],
)  # fmt: skip
def test_restrict_is_an_error_only_from_10_5(version, level: str) -> None:
    found, parsed = doctor.check_key_line("keys:1", key_line(HELPER, "restrict"), version)
    assert levels(found) == [level, "ok"], found
    assert openssh.RESTRICTION_LIST in found[0].text
    assert parsed is not None


def test_restrict_against_the_installed_sshd(tmp_path: Path) -> None:
    version, _ = installed()
    keys = tmp_path / "authorized_keys"
    keys.write_text(key_line(HELPER, "restrict") + "\n" + key_line(HELPER) + "\n")
    found, _ = doctor.check_authorized_keys([str(keys)], version)
    flagged = [f for f in found if "'restrict'" in f.text]
    want = "error" if version >= openssh.RESTRICT_BLOCKS_TUN else "warning"
    assert levels(flagged) == [want], found
    assert not [f for f in found if f.text.startswith(f"{keys}:2") and f.level != "ok"]


# -- PerSourcePenalties -----------------------------------------------------------------


def test_per_source_penalties_explained(tmp_path: Path) -> None:
    version, _ = installed()
    real = real_sshd_t(tmp_path, ["PerSourcePenalties authfail:30 max:900"])
    if version >= openssh.PENALTIES:
        assert real is not None
    else:
        assert real is None  # this sshd does not know it: the recorded 10.0 output instead
    settings = real or recorded("sshd-T-10.0p2-tunnels.txt")
    found = [
        f
        for f in doctor_sshd.check_releases(settings, RECORDED, "")
        if "PerSourcePenalties" in f.text
    ]
    assert len(found) == 1, found
    assert "up to 900" in found[0].text and "PerSourcePenaltyExemptList" in found[0].text
    default = recorded("sshd-T-10.0p2-default.txt")
    found = [
        f
        for f in doctor_sshd.check_releases(default, RECORDED, "")
        if "PerSourcePenalties" in f.text
    ]
    assert len(found) == 1 and "up to 600" in found[0].text  # Debian 13's default
    off = default.replaced("PerSourcePenalties", "no")
    assert not [
        f for f in doctor_sshd.check_releases(off, RECORDED, "") if "PerSourcePenalties" in f.text
    ]


# -- ChannelTimeout -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "closes"),
    [
        ("session=5m tun-connection=1h agent-connection=10m", []),  # the manual's names
        ("*=30m", ["the tunnel's channel"]),
        ("tun*=10m", ["the tunnel's channel"]),
        ("session:*=5m", ["the session's own channel"]),
        ("session:command=5m session:shell=6m", ["the session's", "the session's"]),
        ("agent-connection=10m global=1h", ["every channel"]),
        ("session:*=0", []),
    ],
)
def test_channel_timeout_from_the_installed_sshd(tmp_path: Path, value: str, closes) -> None:
    settings = real_sshd_t(tmp_path, [f"ChannelTimeout {value}"])
    assert settings is not None  # known since OpenSSH 9.2
    found = [
        f for f in doctor_sshd.check_releases(settings, RECORDED, "") if "ChannelTimeout" in f.text
    ]
    assert texts(found, "warning") == [f.text for f in found if "sshd closes" in f.text]
    assert len(texts(found, "warning")) == len(closes), found
    for finding, what in zip(texts(found, "warning"), closes):
        assert f"sshd closes {what}" in finding
    if "global" in value:  # 9.7 made global a timeout of all channels together
        older = doctor_sshd.check_releases(settings, (9, 6, 0), "")
        assert not [f for f in older if f.level != "ok" and "ChannelTimeout" in f.text]


def test_channel_timeout_recorded_from_openssh_10() -> None:
    for name in ("sshd-T-10.0p2-tunnels.txt", "sshd-T-10.6p1-tunnels.txt"):
        found = doctor_sshd.check_releases(recorded(name), RECORDED, "")
        said = [f for f in found if "ChannelTimeout" in f.text]
        assert levels(said) == ["ok", "ok"], said  # session=5m, tun-connection=1h: inert
        assert all("closes none of them" in f.text for f in said)
    default = doctor_sshd.check_releases(recorded("sshd-T-10.0p2-default.txt"), RECORDED, "")
    assert not [f for f in default if "ChannelTimeout" in f.text]


# -- PermitTunnel and tap -----------------------------------------------------------------


def test_permit_tunnel_mode_against_the_keys_pools(tmp_path: Path) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_text(
        key_line(HELPER)
        + "\n"
        + key_line(f"{tunhelper_command()} --pool 10.9.0.0/24 --bridge-name brtap")
        + "\n"
    )
    _, lines = doctor.check_authorized_keys([str(keys)])
    assert [line.tap for line in lines] == [False, True]
    for mode, expected in (
        ("yes", []),
        ("point-to-point", [("error", ":2:")]),
        ("ethernet", [("warning", ":1:")]),
    ):
        settings = real_sshd_t(tmp_path, [f"PermitTunnel {mode}"])
        assert settings is not None
        found = doctor.check_tunnel_modes(settings, lines)
        assert [(f.level, f":{f.text.split(':')[1]}:") for f in found] == expected, found
    ptp = doctor.check_tunnel_modes(recorded("sshd-T-10.0p2-tunnels.txt"), lines)
    assert levels(ptp) == ["error"] and "Tunnel=ethernet" in ptp[0].text


def test_doctor_on_recorded_openssh_10_lines_are_one_line_each() -> None:
    for name in ("sshd-T-10.0p2-default.txt", "sshd-T-10.0p2-tunnels.txt"):
        for finding in doctor_sshd.check_releases(recorded(name), RECORDED, "OpenSSH_10.0p2"):
            assert "\n" not in finding.text and finding.level in ("ok", "warning", "error")


def test_key_sample_is_doctor_clean() -> None:
    sample = Path(__file__).parent.parent / "contrib" / "authorized_keys.sample"
    line = next(x for x in sample.read_text().splitlines() if x and not x.startswith("#"))
    options = line.split(",command=")[0].lower().split(",")
    assert options == openssh.RESTRICTION_LIST.lower().split(",")
    found, _ = doctor.check_key_line("sample:1", line, (10, 5, 0))
    assert not [f for f in found if "restrict" in f.text or "no-" in f.text]


# -- sshd -T, read once for every caller -------------------------------------------------


NEWER = (10, 6, 1)  # Debian sid's, December 2026: sshd -T in mixed case


def test_recorded_sshd_v_is_sids_openssh_10_6() -> None:
    text = (DATA / "sshd-V-10.6p1-sid.txt").read_text()
    assert openssh.parse_version(text) == NEWER
    assert openssh.at_least(NEWER, openssh.MIXED_CASE_DUMP)


def test_mixed_case_sshd_t_reads_as_lower_case() -> None:
    """OpenSSH 10.5 and later print `PermitTunnel`, earlier ones `permittunnel`: the same
    settings, looked up in either spelling, give the same values."""
    old, new = recorded("sshd-T-10.0p2-tunnels.txt"), recorded("sshd-T-10.6p1-tunnels.txt")
    raw = (DATA / "sshd-T-10.6p1-tunnels.txt").read_text()
    assert "PermitTunnel point-to-point" in raw and "permittunnel" not in raw
    naive = dict(line.split(" ", 1) for line in raw.splitlines() if " " in line)
    assert "permittunnel" not in naive  # the control: a plain dict misses it
    for keyword in ("PermitTunnel", "permittunnel", "PERMITTUNNEL"):
        assert new.first(keyword) == old.first(keyword) == "point-to-point"
    for keyword in ("DisableForwarding", "ChannelTimeout", "PermitRootLogin", "ExposeAuthInfo"):
        assert new[keyword] == old[keyword.lower()], keyword
    assert sorted(new.words("ChannelTimeout")) == sorted(old.words("channeltimeout"))


def test_doctor_judges_10_6_output_as_it_judges_10_0s() -> None:
    for name in ("tunnels", "default"):
        old = recorded(f"sshd-T-10.0p2-{name}.txt")
        new = recorded(f"sshd-T-10.6p1-{name}.txt")
        assert [f.level for f in doctor_sshd.check_sshd(new)] == levels(doctor_sshd.check_sshd(old))
        found = doctor_sshd.check_releases(new, NEWER, "OpenSSH_10.6p1")
        again = doctor_sshd.check_releases(old, NEWER, "OpenSSH_10.6p1")
        assert [f.text.split(":")[1] for f in found] == [f.text.split(":")[1] for f in again]
    tunnels = [f.text for f in doctor_sshd.check_releases(
        recorded("sshd-T-10.6p1-tunnels.txt"), NEWER, "")]  # fmt: skip
    assert any("DisableForwarding yes refuses every tunnel" in t for t in tunnels)
    assert sum("ChannelTimeout" in t for t in tunnels) == 2
    assert any("refused for up to 900s" in t for t in tunnels)  # 10.3+ prints 900.000000


def test_the_installed_sshd_is_read_without_regard_to_case(tmp_path: Path) -> None:
    version, _ = installed()
    settings = real_sshd_t(tmp_path, ["PermitTunnel ethernet", "ExposeAuthInfo yes"])
    assert settings is not None
    assert settings.first("PermitTunnel") == settings.first("permittunnel") == "ethernet"
    assert settings.first("ExposeAuthInfo") == "yes"
    raw = subprocess.run(
        [SSHD, "-T", "-C", "user=root", "-f", str(tmp_path / "sshd_config")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mixed = "PermitTunnel ethernet" in raw.splitlines()
    assert mixed is openssh.at_least(version, openssh.MIXED_CASE_DUMP), version


def test_an_unreadable_config_is_one_line_naming_the_command(tmp_path: Path) -> None:
    installed()
    with pytest.raises(TunhelperError) as e:
        openssh.read_sshd_config(SSHD, str(tmp_path / "none"))
    assert "sshd -T -C user=root -f" in str(e.value) and "\n" not in str(e.value)


def test_versions_newer_than_doctor_knows_are_a_warning() -> None:
    (known,) = [f for f in doctor_sshd.check_releases(openssh.SshdConfig(), NEWER, "x")
                if "sshd" in f.text]  # fmt: skip
    assert known.level == "ok" and "OpenSSH 10.6p1" in known.text
    later = doctor_sshd.check_releases(openssh.SshdConfig(), (10, 7, 1), "OpenSSH_10.7p1")
    assert later[0].level == "warning" and "newer than the releases doctor knows" in later[0].text


# -- ChannelTimeout in a Match block: in force only from 10.5 ------------------------------


def test_channel_timeout_of_a_match_block_before_and_after_10_5(tmp_path: Path) -> None:
    """Before 10.5 sshd applies the global ChannelTimeout to every session, whatever a
    Match block says (fixed upstream in 10.5): doctor judges the global one there."""
    lines = ["ChannelTimeout session:*=5m", "Match User root", "  ChannelTimeout session:*=0"]
    matched = real_sshd_t(tmp_path, lines)
    unmatched = real_sshd_t(tmp_path, lines, connection=None)
    assert matched is not None and unmatched is not None
    assert matched.words("ChannelTimeout") == ["session:*=0"]
    assert unmatched.words("ChannelTimeout") == ["session:*=5m"]
    old = [f for f in doctor_sshd.check_releases(matched, (10, 4, 0), "", unmatched)
           if "ChannelTimeout" in f.text]  # fmt: skip
    assert levels(old) == ["warning"] and "ignores root's ChannelTimeout session:*=0" in old[0].text
    new = doctor_sshd.check_releases(matched, (10, 5, 0), "", unmatched)
    assert not [f for f in new if "ChannelTimeout" in f.text]
    # the control: without the global settings, 10.4 would look as clean as 10.5
    blind = doctor_sshd.check_releases(matched, (10, 4, 0), "")
    assert not [f for f in blind if "ChannelTimeout" in f.text]


# -- the restriction list: one owner ----------------------------------------------------------


def test_the_line_client_add_writes_is_the_one_doctor_asks_for() -> None:
    line = openssh.key_line(HELPER.split(), *KEY.split())
    found, parsed = doctor.check_key_line("keys:1", line.strip(), openssh.NEWEST)
    assert parsed is not None and levels(found) == ["ok"], found
    for r in openssh.RESTRICTIONS:
        fewer = line.replace(f"{r.option},", "", 1)
        assert fewer != line, r.option
        found, _ = doctor.check_key_line("keys:1", fewer.strip(), openssh.NEWEST)
        warned = [f.text for f in found if f.level == "warning"]
        assert (f"no {r.option}:" in " ".join(warned)) is bool(r.without), (r, warned)


def test_the_sample_line_carries_the_restriction_list() -> None:
    sample = (DATA.parent.parent.parent / "contrib" / "authorized_keys.sample").read_text()
    active = [x for x in sample.splitlines() if x and not x.startswith("#")]
    assert active and all(x.startswith(openssh.RESTRICTION_LIST + ",") for x in active)


def closes_for_inactivity(make_lab, options: dict[str, str]) -> tuple[bool, str]:
    """Does sshd close a channel of an idle tunhelper session (``ssh -w any``, no
    command) for inactivity, as its log says, within 10 s? And what doctor says of its
    ChannelTimeout."""
    lab = make_lab(sshd_options=options)
    session = lab.add_client().connect()
    session.read_address()
    closed = wait_until(lambda: "seconds of inactivity" in lab.sshd_log_text(), 10)
    said = [x for x in lab.doctor().stdout.splitlines() if "ChannelTimeout" in x]
    return closed, "\n".join(said)


def test_channel_timeout_names_as_the_installed_sshd_matches_them(make_lab) -> None:
    """sshd matches ChannelTimeout against session:shell and tun; up to 10.5 not against
    the documented session and tun-connection (10.6 did close a channel for them):
    doctor warns of what closes channels only."""
    version, _ = installed()
    closed, said = closes_for_inactivity(
        make_lab, {"ChannelTimeout": "session=3s tun-connection=3s"}
    )
    acts = openssh.at_least(version, openssh.DOCUMENTED_CHANNEL_NAMES)  # seen on 10.6p1
    assert closed is acts and ("warning" in said) is acts, said
    assert ("closes none of them" in said) is not acts, said
    closed, said = closes_for_inactivity(make_lab, {"ChannelTimeout": "session:*=3s tun=3s"})
    assert closed and said.startswith("warning: ") and said.count("warning: ") == 2, said


def test_a_match_blocks_channel_timeout_is_in_force_only_from_10_5(make_lab) -> None:
    """The sshd in use, end to end: a Match block for root that turns a global
    ChannelTimeout off is obeyed only from 10.5. Doctor must say what happens."""
    version, _ = installed()
    # session:*=0, not none: 9.2's pre-authentication process dies on a Match block's none
    match = {"ChannelTimeout": "session:*=3s", "Match": "User root\n    ChannelTimeout session:*=0"}
    closed, said = closes_for_inactivity(make_lab, match)
    assert closed is not openssh.at_least(version, openssh.MATCH_CHANNEL_TIMEOUT), said
    assert ("warning" in said) is closed, said
