"""Messages: errors to stderr (the client's stderr) and everything to syslog.

stdout is reserved for the announcement, so nothing here ever writes to it. The
stdlib ``syslog`` module is used rather than ``logging``: it is cheaper to import and
silently does nothing when no syslog daemon listens.
"""

from __future__ import annotations

import contextlib
import os
import syslog

IDENT = "tunhelper"
_opened = False


def one_line(text: str) -> str:
    """``text`` with every unprintable character escaped: line breaks (\\n, \\x85,
    \\u2028...) in a value someone typed must not split a message into several lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _syslog(priority: int, message: str) -> None:
    global _opened
    if not _opened:
        syslog.openlog(IDENT, syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        _opened = True
    syslog.syslog(priority, one_line(message))


def _stderr(message: str) -> None:
    """Write one line; a client that already left must not turn into a crash."""
    with contextlib.suppress(OSError):
        os.write(2, f"{IDENT}: {one_line(message)}\n".encode(errors="replace"))


def info(message: str) -> None:
    """For the admin only (syslog): the client's stderr stays quiet on success."""
    _syslog(syslog.LOG_INFO, message)


def warning(message: str) -> None:
    """For the admin only (syslog): a cross-check failed but the session goes on."""
    _syslog(syslog.LOG_WARNING, message)


def error(message: str) -> None:
    """For both: the client sees why it was refused, the admin sees it in syslog."""
    _syslog(syslog.LOG_ERR, message)
    _stderr(message)


def quietly(what: str, step, *args) -> None:  # noqa: ANN001 - any cleanup step
    """Run one cleanup step; a failure is reported but never stops the others."""
    try:
        step(*args)
    except Exception as e:  # noqa: BLE001 - cleanup must go on whatever failed
        error(f"could not {what}: {e}")
