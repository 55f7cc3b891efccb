"""Block for the life of the session, without polling.

The session ends when sshd's session process exits, when the device disappears, or
on SIGTERM, SIGHUP or SIGINT. stdin is never read: ``ssh -n`` and ``ssh -f`` close
it at once, and that is not the end of a session.
"""

from __future__ import annotations

import signal

from tunhelper import platform
from tunhelper.discover import SessionDevice

END_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Interrupted(Exception):
    """A signal asked us to end; raised once, wherever the helper is at that moment."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def catch_end_signals() -> None:
    """From the very start, turn the first end signal into :class:`Interrupted`.

    Installed before anything is taken, so a signal at any step unwinds through the
    same cleanup as an error. Later signals are ignored so that cleanup itself cannot
    be cut short.
    """
    raised = False

    def handler(signum: int, _frame: object) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    for s in END_SIGNALS:
        signal.signal(s, handler)


def ignore_end_signals() -> None:
    """Once cleanup starts, end signals have nothing left to ask for."""
    for s in END_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


SIGNAL = "signal"


def hold(session: SessionDevice) -> tuple[str, str]:
    """Return why the session ended: ``(kind, description)``.

    ``kind`` is :data:`platform.PROCESS_ENDED`, :data:`platform.DEVICE_GONE` or
    :data:`SIGNAL`, so callers can map it to an exit code.
    """
    try:
        kind = platform.wait_for_end(session.holder_pid, session.holder_start, session.device)
    except Interrupted as e:
        return SIGNAL, f"signal {e}"
    if kind == platform.DEVICE_GONE:
        return kind, f"device {session.device.name} disappeared"
    return kind, f"process {session.holder_pid} holding {session.device.name} ended"
