"""Waiting for the end of a session: kqueue on the session process, procstat on the device.

kqueue is looked up when used, so the module imports (and is tested) on Linux too.
"""

from __future__ import annotations

import select
import time

from tunhelper.platform.base import DEVICE_GONE, PROCESS_ENDED, DeviceInfo
from tunhelper.platform.freebsd import links
from tunhelper.platform.freebsd.proc import held_devices, same_process

# The exit of the session process wakes kqueue at once; whether the device is still
# there and still held costs a procstat run, so that is looked at only this often.
DEVICE_CHECK_INTERVAL = 5.0
PROCESS_POLL_INTERVAL = 0.5  # only where there is no kqueue (Linux, in the tests)


class _ProcessExit:
    """The end of one process: kqueue ``EVFILT_PROC``/``NOTE_EXIT``, else a modest poll."""

    def __init__(self, pid: int, start_time: float) -> None:
        self.pid, self.start_time = pid, start_time
        self.ended = False
        self._kq = None
        kqueue = getattr(select, "kqueue", None)
        if kqueue is not None:
            kq = kqueue()
            change = select.kevent(
                pid, select.KQ_FILTER_PROC, select.KQ_EV_ADD, select.KQ_NOTE_EXIT
            )
            try:
                kq.control([change], 0, 0)
            except ProcessLookupError:
                kq.close()
                self.ended = True
            else:
                self._kq = kq
        # Subscribed first, checked second: an exit (or a reused pid) from before we
        # listened is seen here, a later one arrives as an event.
        if not self.ended and not same_process(pid, start_time):
            self.ended = True

    def wait(self, timeout: float) -> bool:
        """True once the process has ended; else returns after ``timeout`` seconds."""
        if self.ended:
            return True
        if self._kq is not None:
            self.ended = bool(self._kq.control(None, 1, timeout))
            return self.ended
        deadline = time.monotonic() + timeout
        while same_process(self.pid, self.start_time):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(PROCESS_POLL_INTERVAL, remaining))
        self.ended = True
        return True

    def close(self) -> None:
        if self._kq is not None:
            self._kq.close()


def wait_for_end(
    pid: int, start_time: float, device: DeviceInfo
) -> tuple[str, tuple[int, int] | None]:
    """Sleep in kevent(2) until the session process exits; every DEVICE_CHECK_INTERVAL
    seconds, also check that the device still exists and the process ``pid`` still
    holds it.

    On FreeBSD a closed device stays as an interface, so "gone" means destroyed, or no
    longer held by ``pid``. The counters are always ``None``: the interface and its
    counters persist, for :func:`link_counters`. Signals interrupt kevent(2); their
    handler raises, and the kqueue is closed on the way out.
    """
    ended = _ProcessExit(pid, start_time)
    try:
        timeout = 0.0
        while not ended.wait(timeout):
            if links.if_index(device.name) != device.index:
                return DEVICE_GONE, None
            if device.name not in held_devices(pid):
                if ended.wait(0.0):
                    break
                return DEVICE_GONE, None  # closed by the session: the interface persists
            timeout = DEVICE_CHECK_INTERVAL
        return PROCESS_ENDED, None
    finally:
        ended.close()
