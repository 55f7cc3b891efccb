"""The end signals: how a helper or a client is asked to stop, at any step.

Shared by the server's session, its keeper and ``tunhelper connect``. The first end
signal becomes :class:`Interrupted`, raised wherever the process is at that moment, so
a signal unwinds through the same cleanup as an error; once cleanup starts, further
signals are ignored so that nothing can cut it short.
"""

from __future__ import annotations

import signal

# Every signal a terminal or a client's ssh can send to end us (SIGQUIT: Ctrl-\).
END_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)


class Interrupted(Exception):
    """A signal asked us to end; raised once, wherever the process is at that moment."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def catch_end_signals() -> None:
    """From the very start, turn the first end signal into :class:`Interrupted`."""
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


def block_end_signals() -> None:
    """Keep end signals pending (across an ``exec``) until :func:`unblock_end_signals`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, END_SIGNALS)


def unblock_end_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, END_SIGNALS)
