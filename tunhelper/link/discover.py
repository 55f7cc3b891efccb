"""Find the tun/tap device that *this* session's sshd opened.

Walk up our own ancestors to the nearest process holding tun/tap fds: that is the
sshd session process, whatever its name or depth (``sshd: root@notty``,
``sshd-session``, a privilege-separation monitor). Never look sideways: a device
outside our ancestry belongs to someone else. ``SSH_TUNNEL`` is only a cross-check,
because it can be stale (never removed when a tunnel closes) or absent (old sshd).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import psutil

from tunhelper import log, platform
from tunhelper.errors import TunhelperError
from tunhelper.platform import SessionDevice

POLL_INTERVAL = 0.05


class NoDevice(TunhelperError):
    pass


def _nearest_session_process(
    ancestors: list[psutil.Process],
) -> tuple[psutil.Process, list[str]] | None:
    for proc in ancestors:
        names = platform.held_devices(proc.pid)
        if names:
            return proc, names
    return None


def find_session_process() -> tuple[int, float] | None:
    """The nearest ancestor holding a tunnel, right now, without waiting (or ``None``)."""
    found = _nearest_session_process(psutil.Process().parents())
    if found is None:
        return None
    proc, _ = found
    return proc.pid, proc.create_time()


def _await_session_process(
    candidates: Callable[[], list[psutil.Process]], wait: float
) -> tuple[psutil.Process, list[str]] | None:
    """Poll the candidates, bounded by ``wait`` seconds, until one holds a device."""
    deadline = time.monotonic() + wait
    while True:
        found = _nearest_session_process(candidates())
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(POLL_INTERVAL)


def _one_device(proc: psutil.Process, names: list[str]) -> SessionDevice:
    if len(names) > 1:
        raise TunhelperError(
            f"this ssh connection carries several tunnels ({', '.join(names)}); tunhelper "
            "serves one per connection: use one -w and no connection multiplexing"
        )
    info = platform.device_info(names[0])
    if info is None:
        raise TunhelperError(f"tunnel device {names[0]} vanished as it was found; reconnect")
    if info.persistent:
        # sshd attaches to an existing tunN/tapN when the client asks for unit N: an
        # admin's device (a VPN's, a VM's), never to be configured or set down by us.
        raise TunhelperError(
            f"tunnel device {info.name} is a persistent device that existed before this "
            "session (asked for by number, -w any:N?): refused; connect with '-w any'"
        )
    return SessionDevice(info, proc.pid, proc.create_time())


def find_device(wait: float, environ: Mapping[str, str]) -> SessionDevice:
    """The server side: the device sshd opened for the session that runs us.

    The client normally asks for the tunnel before the session, so the first look
    usually succeeds; with multiplexed connections the device may come a little later.
    """
    ancestors = psutil.Process().parents()
    found = _await_session_process(lambda: ancestors, wait)
    if found is None:
        raise NoDevice(
            f"no tunnel device found for this session after {wait:g}s: connect with "
            "'ssh -w any' (or 'tunhelper connect'); the server needs 'PermitTunnel yes' "
            "and, from OpenSSH 10.5, the key's authorized_keys line must not use 'restrict'"
        )
    session = _one_device(*found)
    hint = environ.get("SSH_TUNNEL")
    if hint is not None and session.device.name not in hint.split(","):
        log.warning(
            f"SSH_TUNNEL={hint!r} disagrees with the device sshd holds "
            f"({session.device.name}); using the device"
        )
    return session


def find_device_of(proc: psutil.Process, wait: float) -> SessionDevice | None:
    """The client side: the device our own ssh child opened (``None`` if none in time).

    The child itself comes first, then its descendants, for an ``--ssh-cmd`` that wraps
    ssh in another program.
    """

    def family() -> list[psutil.Process]:
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    found = _await_session_process(family, wait)
    return None if found is None else _one_device(*found)
