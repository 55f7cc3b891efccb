"""FreeBSD, client side: full tunnel, kill-switch and the resolv.conf fallback are not
implemented; each refuses in one line. Plain split routes (``connect``) still work."""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def _unsupported(what: str) -> OSError:
    return OSError(f"{what} is not supported on FreeBSD yet (Linux only)")


def full_tunnel_active() -> list[int]:
    return []


def full_tunnel(device_index: int, families: list[int], peer: str | None) -> list[Record]:
    raise _unsupported("a full tunnel (a default route through the link)")


def undo(record: Record) -> None:
    raise _unsupported(f"undoing a {record.get('kind')} record")


def cpu_has_aes() -> bool:
    return False  # not probed: ssh's own cipher preference stays


def swap_resolv_conf(servers: list[str], path: str = "/etc/resolv.conf") -> Record:
    raise _unsupported("replacing resolv.conf")


def restore_resolv_conf(record: Record) -> None:
    raise _unsupported("restoring resolv.conf")


def kill_switch(name: str, device: str | None, peers: list[tuple[str, int]]) -> Record:
    raise _unsupported("--kill-switch")
