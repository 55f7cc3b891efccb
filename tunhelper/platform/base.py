"""Plain data shared by every platform module.

Named tuples rather than dataclasses: the slim holding process imports this module,
and ``dataclasses`` alone would add more than a megabyte to every held session.
"""

from __future__ import annotations

import errno
from collections import namedtuple

# Why ``wait_for_end`` returned.
PROCESS_ENDED = "process"  # the process holding the device exited
DEVICE_GONE = "device"  # the device was deleted

DeviceInfo = namedtuple("DeviceInfo", ["name", "index", "mode", "persistent"], defaults=[False])
DeviceInfo.__doc__ = """A tun/tap device as the kernel reports it now.

``index`` is kept because names are reused: when a session's tun0 goes away the next
session may get a new tun0, and only the index tells them apart. ``mode`` is "tun"
(layer 3) or "tap" (layer 2). ``persistent``: the device outlives its file descriptors,
so someone made it before sshd attached to it (a client can ask for its unit with
``-w any:N``): it is never a session's own.
"""

SessionDevice = namedtuple("SessionDevice", ["device", "session_pid", "session_start"])
SessionDevice.__doc__ = """A session's device and the process holding it.

The session process's exit ends the session; its start time guards against a reused pid.
"""

# A process is "the same" if its start time is within this of the one recorded: start
# times come from the boot time, which the kernel reports to the second and may shift
# by one after a clock step. A reused pid in the same second is not a realistic risk.
START_TOLERANCE = 1.0


def same_start(started: float | None, recorded: float) -> bool:
    """The one rule of "the same process": it runs now (``started`` is its start time,
    ``None`` if it is gone or a zombie) and started when ``recorded`` says, so a reused
    pid is not taken for it. Each backend reads ``started`` its own way."""
    return started is not None and abs(started - recorded) <= START_TOLERANCE


def terminate(pid: int, start: float, same_process) -> bool:
    """SIGTERM ``pid`` if it is still the process that started at ``start``
    (``same_process`` is the backend's); whether the signal was sent."""
    import os
    import signal

    if not same_process(pid, start):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:  # gone since, or not ours to signal
        return False
    return True


class PlatformError(OSError):
    """Whatever went wrong in the operating system, as the one error the platform raises.

    ``errno`` is the kernel's number where there is one (``None`` for a command that
    failed); ``strerror`` and ``str()`` are one line that says what failed. Callers catch
    this (or ``OSError``), never a backend's own exceptions.
    """

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, " ".join(str(message).split()))

    def __str__(self) -> str:
        return self.strerror

    @classmethod
    def of(cls, error: BaseException) -> PlatformError:
        """The same failure as a :class:`PlatformError` (what the boundary raises)."""
        if isinstance(error, PlatformError):
            return error
        if isinstance(error, OSError):
            code = error.errno
            message = error.strerror or str(error)
            if error.filename is not None:
                message = f"{error.filename}: {message}"
        else:
            code = getattr(error, "code", None)  # pyroute2's NetlinkError carries it here
            if not isinstance(code, int):
                code = errno.EINVAL if isinstance(error, ValueError) else None
            message = str(error) or type(error).__name__
        return cls(code, message)
