"""``tunhelper doctor`` and what recent OpenSSH changed for tunnels.

Each setting is judged from the installed sshd's real ``sshd -T`` (a temporary
sshd_config, ``sshd -T -f FILE``) where that sshd knows the keyword, and from output
recorded from Debian 13's OpenSSH 10.0p2 (tests/data/openssh/) where it does not.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_lab_prerequisites
from tests.lab import SSHD, tunhelper_command
from tests.test_doctor import key_line, levels, texts
from tunhelper.admin import doctor, openssh

DATA = Path(__file__).parent / "data" / "openssh"
RECORDED = (10, 0, 2)
HELPER = f"{tunhelper_command()} --pool 192.168.3.0/24 --max-leases 2"


def recorded(name: str) -> dict[str, list[str]]:
    return doctor.parse_sshd_t((DATA / name).read_text())


def installed() -> tuple[openssh.Version, str]:
    require_lab_prerequisites()  # root and an installed sshd
    os.makedirs("/run/sshd", exist_ok=True)  # sshd -T wants it; a fresh machine has none
    version, said = openssh.sshd_version(SSHD)
    assert version is not None, said
    return version, said


def real_sshd_t(tmp_path: Path, lines: list[str]) -> dict[str, list[str]] | None:
    """The installed sshd's effective settings for ``lines``; ``None`` if it does not
    know one of the keywords (then the recorded 10.0 output stands in)."""
    require_lab_prerequisites()
    os.makedirs("/run/sshd", exist_ok=True)
    key = tmp_path / "host_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([f"HostKey {key}", *lines]) + "\n")
    result = subprocess.run(
        [SSHD, "-T", "-C", "user=root", "-f", str(config)], capture_output=True, text=True
    )
    if result.returncode != 0:
        assert "Bad configuration option" in result.stderr or "Unsupported" in result.stderr, (
            result.stderr
        )
        return None
    return doctor.parse_sshd_t(result.stdout)


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
    found = [f for f in openssh.check(settings, version, "") if "DisableForwarding" in f.text]
    want = "error" if version >= openssh.DISABLE_FORWARDING_TUN else "warning"
    assert levels(found) == [want], found
    assert "set DisableForwarding no" in found[0].text
    newer = [f for f in openssh.check(settings, (10, 4, 0), "") if "DisableForwarding" in f.text]
    assert levels(newer) == ["error"] and "refuses every tunnel" in newer[0].text
    unknown = [f for f in openssh.check(settings, None, "?") if "DisableForwarding" in f.text]
    assert levels(unknown) == ["error"]
    off = real_sshd_t(tmp_path, ["DisableForwarding no"])
    assert off is not None
    assert not [f for f in openssh.check(off, (10, 9, 0), "") if "DisableForwarding" in f.text]


def test_disable_forwarding_recorded_from_openssh_10() -> None:
    settings = recorded("sshd-T-10.0p2-tunnels.txt")
    found = [f for f in openssh.check(settings, RECORDED, "") if "DisableForwarding" in f.text]
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
    assert openssh.EXPLICIT_OPTIONS in found[0].text
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
    found = [f for f in openssh.check(settings, RECORDED, "") if "PerSourcePenalties" in f.text]
    assert len(found) == 1, found
    assert "up to 900" in found[0].text and "PerSourcePenaltyExemptList" in found[0].text
    default = recorded("sshd-T-10.0p2-default.txt")
    found = [f for f in openssh.check(default, RECORDED, "") if "PerSourcePenalties" in f.text]
    assert len(found) == 1 and "up to 600" in found[0].text  # Debian 13's default
    off = dict(default, persourcepenalties=["no"])
    assert not [f for f in openssh.check(off, RECORDED, "") if "PerSourcePenalties" in f.text]


# -- ChannelTimeout -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "closes"),
    [
        ("session=5m tun-connection=1h agent-connection=10m", ["session", "tun-connection"]),
        ("*=30m", ["session and tun-connection"]),
        ("tun-*=10m", ["tun-connection"]),
        ("agent-connection=10m global=1h", []),
        ("session=0", []),
    ],
)
def test_channel_timeout_from_the_installed_sshd(tmp_path: Path, value: str, closes) -> None:
    settings = real_sshd_t(tmp_path, [f"ChannelTimeout {value}"])
    assert settings is not None  # known since OpenSSH 9.2
    found = [f for f in openssh.check(settings, RECORDED, "") if "ChannelTimeout" in f.text]
    assert levels(found) == ["warning"] * len(closes), found
    for finding, what in zip(found, closes):
        assert f"sshd closes {what} channels" in finding.text


def test_channel_timeout_recorded_from_openssh_10() -> None:
    found = openssh.check(recorded("sshd-T-10.0p2-tunnels.txt"), RECORDED, "")
    timeouts = texts(found, "warning")
    assert sum("ChannelTimeout session=5m" in t for t in timeouts) == 1
    assert sum("ChannelTimeout tun-connection=1h" in t for t in timeouts) == 1
    default = openssh.check(recorded("sshd-T-10.0p2-default.txt"), RECORDED, "")
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
        found = openssh.check_tunnel_modes(settings, lines)
        assert [(f.level, f":{f.text.split(':')[1]}:") for f in found] == expected, found
    ptp = openssh.check_tunnel_modes(recorded("sshd-T-10.0p2-tunnels.txt"), lines)
    assert levels(ptp) == ["error"] and "Tunnel=ethernet" in ptp[0].text


def test_doctor_on_recorded_openssh_10_lines_are_one_line_each() -> None:
    for name in ("sshd-T-10.0p2-default.txt", "sshd-T-10.0p2-tunnels.txt"):
        for finding in openssh.check(recorded(name), RECORDED, "OpenSSH_10.0p2"):
            assert "\n" not in finding.text and finding.level in ("ok", "warning", "error")


def test_key_sample_is_doctor_clean() -> None:
    sample = Path(__file__).parent.parent / "contrib" / "authorized_keys.sample"
    line = next(x for x in sample.read_text().splitlines() if x and not x.startswith("#"))
    options = line.split(",command=")[0].lower().split(",")
    assert options == openssh.EXPLICIT_OPTIONS.lower().split(",")
    found, _ = doctor.check_key_line("sample:1", line, (10, 5, 0))
    assert not [f for f in found if "restrict" in f.text or "no-" in f.text]
