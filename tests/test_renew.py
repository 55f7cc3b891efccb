"""``tunhelper renew``: which stores it renews, and how often (its loop's schedule)."""

from __future__ import annotations

from pathlib import Path

from tunhelper.admin import openssh, renew
from tunhelper.store import MIN_LIFETIME, POSTGRESQL, StoreConfig, renew_period

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEnU3Vb4cOzLWUzCmhD0VHqRjQHVEPOnZy6xTjtJ8U0Q"


def store_file(tmp_path: Path, name: str, lifetime: int) -> str:
    path = tmp_path / name
    path.write_text(
        f"[store]\nbackend = postgresql\nconninfo = host=db-{name}\nlifetime = {lifetime}\n"
    )
    path.chmod(0o600)
    return str(path)


def test_every_store_the_keys_lines_reach_is_renewed(tmp_path) -> None:
    fleet_a = store_file(tmp_path, "a.conf", 30)
    fleet_b = store_file(tmp_path, "b.conf", 600)
    keys = tmp_path / "authorized_keys"
    lines = [
        ["--pool", "10.1.0.0/24", "--config", fleet_a, "--state-dir", str(tmp_path / "sa")],
        ["--pool", "10.2.0.0/24", "--config", fleet_b, "--state-dir", str(tmp_path / "sb")],
        ["--pool", "10.3.0.0/24", "--state-dir", str(tmp_path / "local")],  # SQLite
        ["--pool", "not-a-network"],  # refused by the helper: reaches no store
    ]
    key_type, blob = KEY.split()
    keys.write_bytes(
        b"".join(
            openssh.key_line(["/usr/bin/tunhelper", *args], key_type, blob, f"c{i}").encode()
            for i, args in enumerate(lines)
        )
    )
    given = str(tmp_path / "given")
    found = renew.targets(given, None, str(keys))
    named = {(t.state_dir, t.config.where if t.config else None) for t in found}
    assert named == {
        (given, None),  # --config's (none: the SQLite store of --state-dir), renewed once
        (str(tmp_path / "sa"), fleet_a),
        (str(tmp_path / "sb"), fleet_b),
    }
    assert [renew.wait(t) for t in found if t.shared] == [5.0, 10.0]  # half a period, <= 10 s


def test_the_shortest_lifetime_leaves_two_renewals_of_margin() -> None:
    one = renew.Target("/s", StoreConfig(POSTGRESQL, "host=db", MIN_LIFETIME, "/etc/x.conf"))
    assert renew_period(MIN_LIFETIME) == 5.0 and renew.wait(one) == 2.5
    # two renewals, each waiting its most, still end before the lease expires
    assert 2 * renew_period(MIN_LIFETIME) + renew.wait(one) < MIN_LIFETIME
