"""Certificate key IDs from sshd's auth info: pure parsing, bounded."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tunhelper.server import certificate
from tunhelper.server.identity import fingerprint, parse_auth_info


def make_cert(tmp_path: Path, key_id: str, *extra: str, kind: str = "ed25519") -> tuple[str, bytes]:
    for name in ("ca", "user"):
        if not (tmp_path / name).exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / name)], check=True
            )
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", key_id, *extra,
         str(tmp_path / "user.pub")],
        check=True,
    )  # fmt: skip
    kind_name, b64 = (tmp_path / "user-cert.pub").read_text().split()[:2]
    return kind_name, base64.b64decode(b64)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_key_id_of_a_user_certificate(tmp_path: Path, kind: str) -> None:
    name, blob = make_cert(tmp_path, "alice", "-n", "alice,admins", kind=kind)
    assert certificate.identity(name, blob) == "cert:alice"
    line = f"publickey {name} {base64.b64encode(blob).decode()}\n"
    assert parse_auth_info(line) == "cert:alice"


def test_host_certificates_and_odd_key_ids_fall_back_to_the_fingerprint(tmp_path: Path) -> None:
    name, blob = make_cert(tmp_path, "host1", "-h")
    assert certificate.identity(name, blob) is None
    name, blob = make_cert(tmp_path, "alice smith")
    assert certificate.identity(name, blob) is None
    line = f"publickey {name} {base64.b64encode(blob).decode()}"
    assert parse_auth_info(line) == fingerprint(blob)


def test_truncated_or_mislabelled_blobs_are_refused(tmp_path: Path) -> None:
    name, blob = make_cert(tmp_path, "alice")
    end = 36 + 36 + 36 + 8 + 4 + 4 + len("alice")  # type, nonce, key, serial, kind, key id
    assert [n for n in range(len(blob)) if certificate.key_id(blob[:n]) is not None] == list(
        range(end, len(blob))
    )  # nothing past the key ID is read; anything shorter is refused
    assert certificate.identity("ssh-rsa-cert-v01@openssh.com", blob) is None
    huge = b"\x00\x00\x00\x20ssh-ed25519-cert-v01@openssh.com\xff\xff\xff\xff"
    assert certificate.key_id(huge) is None


def test_plain_keys_keep_their_fingerprint(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")])
    name, b64 = (tmp_path / "k.pub").read_text().split()[:2]
    assert parse_auth_info(f"publickey {name} {b64}") == fingerprint(base64.b64decode(b64))
