"""tunhelper client add/revoke on a file: atomic, byte for byte, checked (no sshd needed)."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from tunhelper.admin import clients, openssh
from tunhelper.errors import TunhelperError, UsageError

OTHER = (
    b"# root's own notes\r\n"
    b'command="/bin/true" ssh-ed25519 '
    b"AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMeWithTheClientsOwnKey00 x\n"
    b"\n"
)


@pytest.fixture
def key(tmp_path: Path) -> str:
    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (tmp_path / "k.pub").read_text().strip()


def add(path: Path, name: str, key: str, *helper: str) -> int:
    return clients.add(str(path), name, key, list(helper), "/usr/bin/tunhelper")


def test_add_appends_one_checked_line_and_keeps_the_rest(tmp_path: Path, key: str) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_bytes(OTHER)
    os.chmod(keys, 0o640)
    add(keys, "laptop", key, "--pool", "192.168.3.0/24", "--state-dir", str(tmp_path / "s"))
    data = keys.read_bytes()
    assert data.startswith(OTHER) and keys.stat().st_mode & 0o777 == 0o640
    (line,) = data[len(OTHER) :].decode().splitlines()
    kind, blob = key.split()[:2]
    assert line == (
        f'{openssh.RESTRICTION_LIST},command="/usr/bin/tunhelper --pool 192.168.3.0/24 '
        f'--state-dir {tmp_path / "s"}" {kind} {blob} laptop'
    )
    (listed,) = clients.clients(data.splitlines(keepends=True))
    assert listed.name == "laptop" and listed.fingerprint.startswith("SHA256:")
    # no temporary file left; the lock file that serialises edits stays
    assert sorted(os.listdir(tmp_path)) == [
        ".authorized_keys.lock",
        "authorized_keys",
        "k",
        "k.pub",
    ]


@pytest.mark.parametrize(
    "helper, why",
    [
        ([], "after --"),
        (["--pool", "192.168.3.0/33"], "not a network"),
        (["--pool", "192.168.3.0/24", "--route", "0.0.0.0/0"], "--route"),
        (["leases"], "not the command"),
        (["--help"], "--help"),
    ],
)
def test_helper_options_are_checked_by_the_helpers_parsers(
    tmp_path: Path, key: str, helper: list[str], why: str
) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_bytes(OTHER)
    with pytest.raises((UsageError, TunhelperError), match=why):
        add(keys, "laptop", key, *helper)
    assert keys.read_bytes() == OTHER


def test_bad_keys_and_duplicates_are_refused(tmp_path: Path, key: str) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_bytes(OTHER)
    pool = ["--pool", "192.168.3.0/24"]
    with pytest.raises(UsageError, match="ssh-keygen cannot read"):
        add(keys, "a", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBad", *pool)
    with pytest.raises(UsageError, match="public key line"):
        add(keys, "a", "no-pty ssh-ed25519 AAAA", *pool)
    add(keys, "a", key, *pool)
    with pytest.raises(TunhelperError, match="already has this key"):
        add(keys, "b", key, *pool)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k2")])
    other = (tmp_path / "k2.pub").read_text()
    with pytest.raises(TunhelperError, match="already has a client named a"):
        add(keys, "a", other, *pool)


def test_revoke_restores_the_file_byte_for_byte(tmp_path: Path, key: str) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_bytes(OTHER)
    add(keys, "laptop", key, "--pool", "192.168.3.0/24", "--state-dir", str(tmp_path / "s"))
    clients.revoke(str(keys), "laptop")
    assert keys.read_bytes() == OTHER
    with pytest.raises(TunhelperError, match="no client named laptop"):
        clients.revoke(str(keys), "laptop")


def test_concurrent_edits_lose_no_line(tmp_path: Path) -> None:
    """Admins (or scripts) adding at once: each read-modify-write waits its turn."""
    keys = tmp_path / "authorized_keys"
    keys.write_bytes(OTHER)
    public = []
    for i in range(6):
        path = tmp_path / f"k{i}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        public.append((tmp_path / f"k{i}.pub").read_text().strip())
    pool = ["--pool", "192.168.3.0/24", "--state-dir", str(tmp_path / "s")]
    with ThreadPoolExecutor(len(public)) as ex:
        done = list(ex.map(lambda i: add(keys, f"c{i}", public[i], *pool), range(len(public))))
    assert done == [0] * len(public)
    data = keys.read_bytes()
    assert data.startswith(OTHER)
    names = sorted(c.name for c in clients.clients(data.splitlines(keepends=True)))
    assert names == [f"c{i}" for i in range(len(public))]
    clients.revoke(str(keys), "c3")
    names = [c.name for c in clients.clients(keys.read_bytes().splitlines(keepends=True))]
    assert "c3" not in names and len(names) == len(public) - 1


def test_list_finds_leases_where_the_lines_config_file_puts_them(tmp_path: Path, key: str) -> None:
    """A [pool] section's state-dir counts, as it does for the line's helper."""
    from tunhelper.liveness import current
    from tunhelper.pool import Pool
    from tunhelper.store import Request, open_store

    state = tmp_path / "state"
    conf = tmp_path / "tunhelper.conf"
    conf.write_text(f"[pool office]\nnetwork = 192.168.3.0/24\nstate-dir = {state}\n")
    keys = tmp_path / "authorized_keys"
    add(keys, "laptop", key, "--config", str(conf), "--pool", "office")
    (client,) = clients.clients(keys.read_bytes().splitlines(keepends=True))
    pool = Pool.parse("192.168.3.0/24")
    owner = current(os.getpid(), time.time(), "tun0")  # this process: a live session
    request = Request(
        pool.name, pool.first, pool.last, set(), client.fingerprint, owner, pool.address
    )
    store = open_store(str(state))
    lease = store.allocate(request, lambda _: True)
    other = current(os.getpid(), time.time(), "tun1")  # another client's live session
    store.allocate(replace(request, client="SHA256:someone-else", owner=other), lambda _: True)
    store.close()
    settings = clients.line_settings(client)
    assert settings is not None and settings.state_dir == str(state)
    assert [x.address for x in clients.live_leases(client, settings)] == [lease.address]
    authority = replace(client, authority=True)  # its sessions are recorded by key ID
    assert clients.live_leases(authority, settings) == []
