"""Client identity: the key fingerprint sshd exposes, trusted only from a file sshd wrote."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tunhelper.errors import TunhelperError
from tunhelper.server.identity import client_identity, parse_auth_info, read_auth_info


@pytest.fixture
def key(tmp_path: Path) -> tuple[str, str]:
    """A real ed25519 public key line and ssh-keygen's own fingerprint of it."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    public = (tmp_path / "k.pub").read_text().split()
    listing = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "k.pub")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return f"{public[0]} {public[1]}", listing.split()[1]


def auth_file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "sshauth.test"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_fingerprint_matches_ssh_keygen(key) -> None:
    line, expected = key
    assert parse_auth_info(f"publickey {line}\n") == expected


def test_first_publickey_line_wins(key) -> None:
    line, expected = key
    assert parse_auth_info(f"password\npublickey {line}\npublickey ssh-rsa AAAA\n") == expected


def test_no_publickey_or_garbage_gives_nothing() -> None:
    assert parse_auth_info("password\nkeyboard-interactive\n") is None
    assert parse_auth_info("publickey ssh-ed25519 !!!not-base64!!!\n") is None


def test_private_file_written_by_us_is_trusted(tmp_path, key) -> None:
    line, expected = key
    assert read_auth_info(auth_file(tmp_path, f"publickey {line}\n")) == expected


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_file_others_can_read_is_not_trusted(tmp_path, key, mode) -> None:
    assert read_auth_info(auth_file(tmp_path, f"publickey {key[0]}\n", mode)) is None


def test_symlink_and_relative_path_are_not_trusted(tmp_path, key) -> None:
    real = auth_file(tmp_path, f"publickey {key[0]}\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert read_auth_info(str(link)) is None
    os.chdir(tmp_path)
    assert read_auth_info("sshauth.test") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file away")
def test_file_owned_by_someone_else_is_not_trusted(tmp_path, key) -> None:
    path = auth_file(tmp_path, f"publickey {key[0]}\n")
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    assert read_auth_info(path) is None


def test_identity_order(tmp_path, key) -> None:
    line, expected = key
    path = auth_file(tmp_path, f"publickey {line}\n")
    assert client_identity("laptop", {"SSH_USER_AUTH": path}) == (expected, False)
    with pytest.raises(TunhelperError, match="SSH_USER_AUTH"):
        client_identity("laptop", {"SSH_USER_AUTH": "/nonexistent"})
    assert client_identity("laptop", {}) == ("laptop", False)
    assert client_identity(None, {}) == (pwd.getpwuid(os.getuid()).pw_name, True)


def test_a_pseudo_file_whose_text_a_client_controls_is_not_trusted(key) -> None:
    """/proc/PID/environ is a private root-owned regular file, and a client writes it.

    With ExposeAuthInfo off and AcceptEnv letting SSH_USER_AUTH through, a client can
    send SSH_USER_AUTH=/proc/self/environ and a variable holding another client's
    public key on a line of its own: that must not make it that client.
    """
    line, _ = key
    forged = f"\x0bpublickey {line} "  # \v starts a line for str.splitlines()
    proc = subprocess.Popen(
        ["sleep", "30"], env={"X": forged}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        environ = Path(f"/proc/{proc.pid}/environ")
        deadline = time.monotonic() + 10
        while b"publickey" not in environ.read_bytes():  # until sleep has been executed
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert read_auth_info(str(environ)) is None
        with pytest.raises(TunhelperError):
            client_identity("laptop", {"SSH_USER_AUTH": f"/proc/{proc.pid}/environ"})
    finally:
        proc.kill()
        proc.wait()


def test_a_file_older_than_the_session_is_not_trusted(tmp_path, key) -> None:
    """Another (live or stale) session's auth file was written before this one began."""
    path = auth_file(tmp_path, f"publickey {key[0]}\n")
    written = os.stat(path).st_mtime
    assert read_auth_info(path, written - 1) == key[1]  # written after the session began
    assert read_auth_info(path, written + 1) is None  # before: another session's


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_files_are_never_opened(tmp_path, kind) -> None:
    """A FIFO would block (or be opened by its writer's timing); a device acts on open."""
    path = str(tmp_path / kind)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to make a device node")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null node
    opened = []
    real_open = os.open

    def spy(p, flags, *a):
        if str(p) == path and not flags & os.O_PATH:
            opened.append(p)
        return real_open(p, flags, *a)

    import unittest.mock

    with unittest.mock.patch("os.open", spy):
        assert read_auth_info(path) is None
    assert opened == []


# -- property-based: the auth info text (sshd writes it; a client may point at others) --

import base64 as _base64  # noqa: E402
import hashlib as _hashlib  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=300))
def test_any_auth_info_text_gives_a_fingerprint_or_nothing(text: str) -> None:
    found = parse_auth_info(text)
    assert found is None or (found.startswith("SHA256:") and len(found) == 50)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.sampled_from(["password", "keyboard-interactive", "publickey", "x y z"])),
    st.binary(min_size=1, max_size=600),
    st.sampled_from(["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "anything"]),
)
def test_the_first_publickey_line_is_the_fingerprint_of_its_blob(before, blob, kind) -> None:
    lines = [b for b in before if b != "publickey"]
    text = "\n".join([*lines, f"publickey {kind} {_base64.b64encode(blob).decode()}", ""])
    digest = _base64.b64encode(_hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert parse_auth_info(text) == f"SHA256:{digest}"
