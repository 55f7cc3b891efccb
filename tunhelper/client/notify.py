"""systemd's notify protocol, written to ``NOTIFY_SOCKET`` directly (no new dependency).

A datagram of ``KEY=VALUE`` lines to an AF_UNIX socket; a name starting with ``@`` is
in the abstract namespace. Without ``NOTIFY_SOCKET`` (not under systemd) it does
nothing. The variable is systemd's to set for the service it started; it carries no
configuration, only where to report.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send ``fields`` (``READY=1``, ``STATUS=...``); whether a manager was told."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not (address.startswith("/") or address.startswith("@")):
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message)
    except OSError:
        return False
    return True
