"""The IP version of an address or network, decided one way everywhere.

Values reaching the session, the config file checks and the platform have already been
validated by :mod:`tunhelper.options` (or came from the kernel), so their version is
told by the colon alone; :func:`parse` is for text nobody has checked yet.
"""

from __future__ import annotations


def of(text: str) -> int:
    """4 or 6, for an address or network that is known to be valid."""
    return 6 if ":" in text else 4


def parse(text: str) -> int | None:
    """4 or 6 for a valid IPv4 (dotted quad) or IPv6 address, else ``None``."""
    import socket

    for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return version
    return None
