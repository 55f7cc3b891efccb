"""The examples admins copy: sshd must read the drop-in as the README says it does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import require_lab_prerequisites
from tests.lab import REPO, SSHD
from tunhelper.admin.openssh import SshdConfig, read_sshd_config

DROP_IN = REPO / "contrib" / "sshd_config.d" / "tunhelper.conf.example"
AUTHORIZED_KEYS = REPO / "contrib" / "authorized_keys.sample"


def effective_sshd_config(drop_in: Path, tmp_path: Path) -> SshdConfig:
    """What ``sshd -T`` makes of a config that includes the drop-in, for a root login
    (read as doctor reads it: keywords without case, as OpenSSH 10.5 and later print
    them in mixed case)."""
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"Include {drop_in}\nHostKey {key}\nPidFile {tmp_path / 'pid'}\n")
    os.makedirs("/run/sshd", exist_ok=True)
    return read_sshd_config(SSHD, str(config), "user=root,host=client,addr=192.0.2.1")


def test_sshd_config_drop_in_sets_what_tunhelper_needs(tmp_path: Path) -> None:
    require_lab_prerequisites()
    effective = effective_sshd_config(DROP_IN, tmp_path)
    assert effective.first("PermitTunnel") == "yes"
    assert effective.first("PermitRootLogin") == "forced-commands-only"
    assert effective.first("ExposeAuthInfo") == "yes"


def test_authorized_keys_sample_line_uses_tunnel_friendly_options() -> None:
    lines = [x for x in AUTHORIZED_KEYS.read_text().splitlines() if x and not x.startswith("#")]
    assert lines, "the sample has no active line"
    for line in lines:
        options, _, key = line.partition(" ssh-")
        assert key, line
        assert "restrict" not in options.split(",")  # it would disable tunnel forwarding
        assert 'command="/usr/bin/tunhelper --pool ' in options  # the package's full path
