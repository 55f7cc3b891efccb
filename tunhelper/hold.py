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


def hold(session: SessionDevice) -> tuple[str, str]:
    """Return why the link ended: ``(kind, description)``.

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
