"""diagnose.explain: ssh's stderr and exit status -> one line naming the likely cause."""

from __future__ import annotations

import pytest

from tunhelper.client import diagnose

TUNNEL = (
    "channel 0: open failed: administratively prohibited: open failed\nTunnel forwarding failed\n"
)


def test_refused_tunnel_names_every_likely_cause() -> None:
    line = diagnose.explain(TUNNEL, 255)
    assert line is not None and "\n" not in line
    for cause in ("PermitTunnel", "DisableForwarding", "restrict", "10.5", "no-port-forwarding"):
        assert cause in line
    assert "point-to-point (tun)" in line
    assert "ethernet (tap)" in (diagnose.explain(TUNNEL, 255, tap=True) or "")


@pytest.mark.parametrize(
    "stderr, status",
    [
        ("bash: line 1: /usr/local/bin/tunhelper: No such file or directory\n", None),
        ("sh: 1: /opt/tunhelper/bin/tunhelper: not found\n", None),
        ("bash: /usr/bin/tunhelper: Permission denied\n", None),
        ("", 127),
    ],
)
def test_missing_program_is_named(stderr: str, status: int | None) -> None:
    line = diagnose.explain(stderr, status)
    assert line is not None and "command=" in line and "/usr/bin/tunhelper" in line


def test_the_servers_own_line_needs_no_guess() -> None:
    assert diagnose.explain("tunhelper: pool 192.168.3.0/24 is exhausted\n", 1) is None
    assert diagnose.explain("", 1) is None
    assert "authorized_keys" in (
        diagnose.explain("root@gw: Permission denied (publickey).", 255) or ""
    )
