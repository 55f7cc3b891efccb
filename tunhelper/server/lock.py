"""Serialise changes that several helpers could make at once, with a lock file each.

Every wait is bounded: a lock file lives in the root-only state directory, but a
helper that hangs (or a local root mistake) must never stall every later session.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator

from tunhelper import defaults
from tunhelper.errors import TunhelperError


@contextlib.contextmanager
def held(state_dir: str, name: str, timeout: float = defaults.LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``STATE_DIR/NAME.lock`` exclusively; the kernel drops it if we die.

    Created 0600 (never through a link); refuses in one line after ``timeout`` seconds.
    """
    path = os.path.join(state_dir, f"{name}.lock")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise TunhelperError(
                        f"{path} stayed locked by another process for {timeout:g}s; try "
                        "again, and if it lasts, see which process holds it (fuser)"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
