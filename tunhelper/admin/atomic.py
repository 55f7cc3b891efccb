"""Replacing a file the admin or another program reads, never half written.

Standard library only: the metrics writer shares it and must stay cheap to import.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomically(path: str, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` in one step: a temporary file beside it, fsync, rename, then
    the directory fsynced, so a reader sees the old file or the new one, and so does
    whoever looks after a crash.

    ``mode``: the new file's mode (owned by us); ``None`` keeps the old file's mode
    and owner (a new file: ours, 0600). Raises OSError.
    """
    directory = os.path.dirname(os.path.abspath(path))
    uid, gid = os.geteuid(), os.getegid()
    if mode is None:
        try:
            st = os.stat(path)
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        except FileNotFoundError:
            mode = 0o600
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
            os.fchown(f.fileno(), uid, gid)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
