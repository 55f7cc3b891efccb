"""Block for the life of a link, without polling: the server's session and the client.

A link ends when the process holding its device exits (sshd's session process on the
server, our ssh child on the client), when the device disappears, or on an end signal
(:mod:`tunhelper.signals`). stdin is never read: ``ssh -n`` and ``ssh -f`` close it at
once, and that is not the end of a session. Cheap to import: the server's keeper
process (:mod:`tunhelper.server.keeper`) holds with it for hours.
"""

from __future__ import annotations

from tunhelper import platform
from tunhelper.platform import SessionDevice
from tunhelper.signals import Interrupted

SIGNAL = "signal"


def hold(session: SessionDevice) -> tuple[str, str, tuple[int, int] | None]:
    """Return why the link ended: ``(kind, description, counters)``.

    ``kind`` is :data:`platform.PROCESS_ENDED`, :data:`platform.DEVICE_GONE` or
    :data:`SIGNAL`, so callers can map it to an exit code. ``counters`` are the device's
    last ``(rx_bytes, tx_bytes)`` if it was deleted as the link ended (``None``
    otherwise: :func:`platform.link_counters` can still read a device that is there).
    """
    device = session.device
    try:
        kind, counters = platform.wait_for_end(session.session_pid, session.session_start, device)
    except Interrupted as e:
        return SIGNAL, f"signal {e}", None
    if kind == platform.DEVICE_GONE:
        return kind, f"device {device.name} disappeared", counters
    return kind, f"process {session.session_pid} holding {device.name} ended", counters
