"""Find the tun/tap device that *this* session's sshd opened.

Walk up our own ancestors to the nearest process holding tun/tap fds: that is the
sshd session process, whatever its name or depth (``sshd: root@notty``,
``sshd-session``, a privilege-separation monitor). Never look sideways: a device
outside our ancestry belongs to someone else. ``SSH_TUNNEL`` is only a cross-check,
because it can be stale (never removed when a tunnel closes) or absent (old sshd).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from tunhelper import log, platform
from tunhelper.errors import TunhelperError
from tunhelper.platform import DeviceInfo

POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class SessionDevice:
    """The device and the process that holds it (whose exit ends the session)."""

    device: DeviceInfo
    holder_pid: int
    holder_start: float


class NoDevice(TunhelperError):
    pass


def _nearest_holder(ancestors: list[psutil.Process]) -> tuple[psutil.Process, list[str]] | None:
    for proc in ancestors:
        names = platform.held_devices(proc.pid)
        if names:
            return proc, names
    return None


def find_holder() -> tuple[int, float] | None:
    """The nearest ancestor holding a tunnel, right now, without waiting (or ``None``)."""
    found = _nearest_holder(psutil.Process().parents())
    if found is None:
        return None
    proc, _ = found
    return proc.pid, proc.create_time()


def find_device(wait: float, environ: Mapping[str, str]) -> SessionDevice:
    """Poll (bounded by ``wait`` seconds) until our session's device appears.

    The client normally asks for the tunnel before the session, so the first look
    usually succeeds; with multiplexed connections the device may come a little later.
    """
    ancestors = psutil.Process().parents()
    deadline = time.monotonic() + wait
    while True:
        found = _nearest_holder(ancestors)
        if found is not None:
            break
        if time.monotonic() >= deadline:
            raise NoDevice(
                f"no tunnel device found for this session after {wait:g}s: connect with "
                "'ssh -w any' (or 'tunhelper connect'); the server needs 'PermitTunnel yes' "
                "and the key's authorized_keys line must not use 'restrict'"
            )
        time.sleep(POLL_INTERVAL)
    proc, names = found
    if len(names) > 1:
        raise TunhelperError(
            f"this ssh connection carries several tunnels ({', '.join(names)}); tunhelper "
            "serves one per connection: use one -w and no connection multiplexing"
        )
    info = platform.device_info(names[0])
    if info is None:
        raise TunhelperError(f"tunnel device {names[0]} vanished as it was found; reconnect")
    hint = environ.get("SSH_TUNNEL")
    if hint is not None and info.name not in hint.split(","):
        log.warning(
            f"SSH_TUNNEL={hint!r} disagrees with the device sshd holds ({info.name}); "
            "using the device"
        )
    return SessionDevice(info, proc.pid, proc.create_time())
