"""Which client is this? The answer keys sticky addresses, so it must not be forgeable.

In order: the SHA256 fingerprint of the key sshd says was used (``ExposeAuthInfo
yes`` puts it in the file named by ``SSH_USER_AUTH``), else ``--client NAME`` from
the authorized_keys line, else the login name. ``SSH_USER_AUTH`` is an environment
variable a client can send itself (``AcceptEnv``, when sshd does not set it), so the
file it names is trusted only if this session's sshd wrote it:

- it is looked at without being opened (``O_PATH|O_NOFOLLOW``, then ``fstat``): a
  device node (``/dev/watchdog`` reboots a host when opened and closed) or a FIFO is
  never opened; only then is it reopened through ``/proc/self/fd``, and checked to
  be the same file;
- a regular file owned by us, readable by nobody else, with a size (the kernel's
  pseudo-files, ``/proc/self/environ``, report size 0 and hold text a client wrote);
- written after this session's sshd process started: another live or stale
  session's file (``/tmp/sshauth.*`` names are visible to every local user) is older.

A variable that names anything else refuses the session in one line: the identity
is unknown. With no variable at all (ExposeAuthInfo off, or sshd could not write the
file, as on a full /tmp) the identity is ``--client`` from the key's line, else the
login name: a *fallback* that may be shared by every key, so such a session never
ends another session to make room (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import pwd
import stat
from collections.abc import Mapping

from tunhelper import log, platform
from tunhelper.errors import TunhelperError
from tunhelper.server import certificate

_MAX_AUTH_INFO = 64 * 1024
# process start times are computed from whole-second boot times, so they are early
# by up to a second, never late: a genuine file is never before start - this
START_TOLERANCE = 0.05


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


def read_auth_info(path: str, not_before: float | None = None) -> str | None:
    """Read sshd's auth info file, refusing anything sshd would not have written.

    ``not_before``: the session process's start time; a file older than it was written
    for another session.
    """
    if not os.path.isabs(path):
        return None
    refused: list[str] = []

    def sound(st: os.stat_result) -> bool:
        if _sound(st, not_before):
            return True
        refused.append(path)
        return False

    fd = platform.open_regular(path, sound)
    if fd is None:
        if refused:
            log.warning(f"ignoring SSH_USER_AUTH={path}: not this session's sshd's file")
        return None
    try:
        if not _sound(os.fstat(fd), not_before):
            return None
        data = os.read(fd, _MAX_AUTH_INFO)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_auth_info(data.decode("ascii", errors="replace"))


def _sound(st: os.stat_result, not_before: float | None) -> bool:
    """A private regular file of ours, with a size, written no earlier than ``not_before``."""
    if (
        not stat.S_ISREG(st.st_mode)
        or st.st_uid != os.geteuid()
        or st.st_mode & 0o077
        or not 0 < st.st_size <= _MAX_AUTH_INFO
    ):
        return False
    if not_before is None:
        return True
    return min(st.st_mtime, st.st_ctime) >= not_before - START_TOLERANCE


def client_identity(
    configured: str | None, environ: Mapping[str, str], session_start: float | None = None
) -> tuple[str, bool]:
    """``(identity, fallback)``: fallback is True when no key vouches for it.

    ``SSH_USER_AUTH`` naming anything but this session's auth file refuses in one line.
    """
    path = environ.get("SSH_USER_AUTH")
    if path:
        key = read_auth_info(path, session_start)
        if key:
            return key, False
        raise TunhelperError(
            "SSH_USER_AUTH does not name the auth file sshd wrote for this session, so "
            "the client is unknown; the admin must set ExposeAuthInfo yes in sshd_config "
            "(and not let SSH_USER_AUTH through AcceptEnv)"
        )
    if configured:  # the admin's name for this key line
        return configured, False
    return pwd.getpwuid(os.getuid()).pw_name, True
