"""Block for the life of the session, without polling.

The session ends when sshd's session process exits, when the device disappears, or
on SIGTERM, SIGHUP or SIGINT. stdin is never read: ``ssh -n`` and ``ssh -f`` close
it at once, and that is not the end of a session.
"""

from __future__ import annotations

import signal

from tunhelper import platform
from tunhelper.platform import SessionDevice

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


def hold(session: SessionDevice) -> tuple[str, str, tuple[int, int] | None]:
    """Return why the session ended: ``(kind, description, counters)``.

    ``kind`` is :data:`platform.PROCESS_ENDED`, :data:`platform.DEVICE_GONE` or
    :data:`SIGNAL`, so callers can map it to an exit code. ``counters`` are the device's
    last ``(rx_bytes, tx_bytes)`` if it was deleted as the session ended (``None``
    otherwise: :func:`platform.link_counters` can still read a device that is there).
    """
    device = session.device
    try:
        kind, counters = platform.wait_for_end(session.holder_pid, session.holder_start, device)
    except Interrupted as e:
        return SIGNAL, f"signal {e}", None
    if kind == platform.DEVICE_GONE:
        return kind, f"device {device.name} disappeared", counters
    return kind, f"process {session.holder_pid} holding {device.name} ended", counters


# -- the slim holding process ------------------------------------------------------
#
# A session is held for hours, and the helper that set it up has imported pyroute2,
# psutil and netaddr (about 30 MB). Once the client has its address, the helper
# re-executes itself as ``python -I -m tunhelper.hold``: same pid (so the lease's
# holder stays valid), a fresh interpreter that imports only what holding needs.
# What the session took travels in a pipe; end signals stay blocked across exec
# (the mask is inherited) until the new process can handle them.


def become_holder(record: dict, label: list[str]) -> None:
    """Replace this process with the slim holder; returns only if that failed."""
    import json
    import os
    import sys

    data = json.dumps(record).encode()
    read_fd, write_fd = os.pipe()
    if len(data) > 60000:  # a pipe buffers 64 KiB; a record is a few hundred bytes
        os.close(read_fd)
        os.close(write_fd)
        return
    os.write(write_fd, data)
    os.close(write_fd)
    os.set_inheritable(read_fd, True)
    argv = [sys.executable, "-I", "-m", "tunhelper.hold", str(read_fd), *label]
    signal.pthread_sigmask(signal.SIG_BLOCK, END_SIGNALS)
    try:
        os.execv(sys.executable, argv)  # noqa: S606 - no shell: the same interpreter
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, END_SIGNALS)
        os.close(read_fd)
        from tunhelper import log

        log.warning(f"could not start the slim holder ({e.strerror}); holding in place")


def _main(argv: list[str]) -> int:
    """``python -I -m tunhelper.hold FD [label...]``: hold, then give everything back."""
    import json
    import os

    catch_end_signals()
    with os.fdopen(int(argv[0]), "rb") as f:
        record = json.loads(f.read())
    s = record["session"]
    session = SessionDevice(platform.DeviceInfo(**s["device"]), s["holder_pid"], s["holder_start"])
    counters = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, END_SIGNALS)  # one may be pending already
        _, reason, counters = hold(session)
    except Interrupted as e:
        reason = f"signal {e}"
    finally:
        ignore_end_signals()
    if counters is not None and record.get("down"):  # the down hook's bytes, once deleted
        record["down"]["counters"] = counters
    from tunhelper.server import session as session_module  # heavier imports only now, at the end

    return session_module.finish(record, reason)


if __name__ == "__main__":
    import sys

    try:
        sys.exit(_main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - never a traceback to the client
        from tunhelper import log

        log.error(f"internal error while holding ({type(e).__name__}: {e}); please report it")
        sys.exit(1)
