"""Serialise changes that several helpers could make at once, with a lock file each."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


@contextlib.contextmanager
def held(state_dir: str, name: str) -> Iterator[None]:
    """Hold ``STATE_DIR/NAME.lock`` exclusively; the kernel drops it if we die."""
    with open(os.path.join(state_dir, f"{name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
