"""The identity of an OpenSSH certificate: its key ID, which outlives renewals.

A site with an SSH CA renews certificates often, so the fingerprint of what
``SSH_USER_AUTH`` shows changes every time and addresses would stop being sticky.
The key ID stays: the CA sets it (``ssh-keygen -s ca -I alice``), sshd logs it with
every login, and it is one value, where a certificate may list several principals
(``alice,admins``) and so name no single client. The client becomes ``cert:KEYID``
(``[client cert:alice]`` in the config file). Only sshd's own record of the
certificate it accepted is read, so the CA's signature was checked already; a key ID
that is not a plain name (1 to 64 of ``A-Z a-z 0-9 . _ @ : + -``) is not used.

The blob is parsed by PROTOCOL.certkeys, bounded: every length is checked against
what is left, and nothing past the key ID is read.
"""

from __future__ import annotations

import re
import struct

PREFIX = "cert:"
_ID = re.compile(r"[A-Za-z0-9._@:+-]{1,64}")
# How many length-prefixed public key fields follow the nonce, by certificate type.
_KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": 1,
    "ssh-rsa-cert-v01@openssh.com": 2,
    "ssh-dss-cert-v01@openssh.com": 4,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": 3,
    "sk-ssh-ed25519-cert-v01@openssh.com": 2,
}
USER_CERT = 1


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError("truncated certificate")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def string(self) -> bytes:
        (n,) = struct.unpack(">I", self.take(4))
        return self.take(n)

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]


def key_id(blob: bytes) -> str | None:
    """The key ID of a user certificate blob, or ``None`` if it is not one we can use."""
    try:
        r = _Reader(blob)
        kind = r.string().decode("ascii")
        fields = _KEY_FIELDS.get(kind)
        if fields is None:
            return None
        r.string()  # nonce
        for _ in range(fields):
            r.string()
        r.take(8)  # serial
        if r.uint32() != USER_CERT:
            return None
        found = r.string().decode("ascii")
    except (ValueError, UnicodeDecodeError, struct.error):
        return None
    return found if _ID.fullmatch(found) else None


def identity(key_type: str, blob: bytes) -> str | None:
    """``cert:KEYID`` for a certificate line of sshd's auth info, else ``None``."""
    if not key_type.endswith("-cert-v01@openssh.com"):
        return None
    found = key_id(blob)
    if found is None or key_type != _type_of(blob):
        return None
    return PREFIX + found


def _type_of(blob: bytes) -> str | None:
    try:
        return _Reader(blob).string().decode("ascii")
    except (ValueError, UnicodeDecodeError, struct.error):
        return None
