"""Why a session ended when a newer one took its place: told to its own client.

With ``--max-sessions`` a new session ends the oldest of its key by signalling that
session's helper, whose client would otherwise see only its tunnel vanish. Before
signalling, the new session leaves a note in the state directory keyed by the old
lease's token; the old helper (or its keeper) reads it as it gives back and writes the
reason to its client's stderr. Slim on purpose: the keeper imports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

from tunhelper import statedir

DIRECTORY = statedir.REPLACED
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_NOTE = 512
_KEEP = 300.0  # a note nobody read (its helper was already gone) is removed after this


def _path(state_dir: str, token: str) -> str | None:
    if not _TOKEN.fullmatch(token):
        return None
    return os.path.join(state_dir, DIRECTORY, token)


def leave_note(state_dir: str, token: str, reason: str) -> None:
    """Tell the session holding ``token`` why it is about to be ended."""
    path = _path(state_dir, token)
    if path is None:
        return
    directory = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _prune(directory)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, reason.encode()[:_MAX_NOTE])
        finally:
            os.close(fd)


def take_note(state_dir: str, token: str) -> str | None:
    """The reason left for the session holding ``token``, removed once read."""
    path = _path(state_dir, token)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, _MAX_NOTE).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return text or None


def _prune(directory: str) -> None:
    now = time.time()
    for name in os.listdir(directory):
        with contextlib.suppress(OSError):
            path = os.path.join(directory, name)
            if now - os.lstat(path).st_mtime > _KEEP:
                os.unlink(path)
