"""Tell the client its address: the first and only line tunhelper writes on stdout."""

from __future__ import annotations

import os

from tunhelper.errors import TunhelperError


def announce(address: str) -> None:
    """Write ``ADDRESS\\n`` to fd 1 unbuffered, so the client reads it at once."""
    data = f"{address}\n".encode("ascii")
    try:
        while data:
            data = data[os.write(1, data) :]
    except OSError as e:
        raise TunhelperError(f"could not announce the address: {e.strerror}") from None
