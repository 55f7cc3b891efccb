"""Which client is this? The answer keys sticky addresses, so it must not be forgeable.

In order: the SHA256 fingerprint of the key sshd says was used (``ExposeAuthInfo
yes`` puts it in the file named by ``SSH_USER_AUTH``), else ``--client NAME`` from
the authorized_keys line, else the login name. ``SSH_USER_AUTH`` is an environment
variable, so the file it names is trusted only if it looks like sshd wrote it: a
regular file (not a link), owned by us, readable by nobody else, and with a size: the
kernel's pseudo-files (``/proc/self/environ``) pass every other test, report size 0,
and hold text a client wrote.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import pwd
import stat
from collections.abc import Mapping

from tunhelper import log
from tunhelper.server import certificate

_MAX_AUTH_INFO = 64 * 1024


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key blob."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_auth_info(text: str) -> str | None:
    """The identity of the first ``publickey TYPE BASE64`` line, if any: a certificate's
    ``cert:KEYID`` (:mod:`certificate`: it survives renewals), else the fingerprint."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "publickey":
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except (binascii.Error, ValueError):
                return None
            return certificate.identity(parts[1], blob) or fingerprint(blob)
    return None


def read_auth_info(path: str) -> str | None:
    """Read sshd's auth info file, refusing anything sshd would not have written."""
    if not os.path.isabs(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or st.st_mode & 0o077
            or not 0 < st.st_size <= _MAX_AUTH_INFO
        ):
            log.warning(f"ignoring SSH_USER_AUTH={path}: not a private file sshd wrote")
            return None
        data = os.read(fd, _MAX_AUTH_INFO)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_auth_info(data.decode("ascii", errors="replace"))


def client_identity(configured: str | None, environ: Mapping[str, str]) -> str:
    path = environ.get("SSH_USER_AUTH")
    if path:
        key = read_auth_info(path)
        if key:
            return key
    if configured:
        return configured
    return pwd.getpwuid(os.getuid()).pw_name
