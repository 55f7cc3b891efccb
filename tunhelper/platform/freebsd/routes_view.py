"""FreeBSD, client side: reading the host's own networks is not implemented yet."""

from __future__ import annotations

from collections.abc import Collection


def local_networks(exclude: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """Refuses in one line (an OSError), as the FreeBSD client's other missing parts do."""
    raise OSError(
        "checking a gateway's routes against this host's networks is not supported on "
        "FreeBSD yet (Linux only)"
    )
