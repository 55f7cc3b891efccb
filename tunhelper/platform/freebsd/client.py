"""FreeBSD, client side: no kill-switch, no policy routing, no resolv.conf fallback yet.

Declared in :data:`CAPABILITIES`, so ``connect`` refuses ``--kill-switch`` at start and
installs a full tunnel's two announced halves as plain routes (as an older client
does) instead of discovering a missing function mid-session. The functions exist to
satisfy the contract and refuse in one line if called anyway.
"""

from __future__ import annotations

from tunhelper.platform.clientbase import Capabilities, Passes, Record

CAPABILITIES = Capabilities(firewall=False, full_tunnel=False, resolv_conf=False)


def _unsupported(what: str) -> OSError:
    return OSError(f"{what} is not supported on FreeBSD yet (Linux only)")


def full_tunnel_active() -> list[int]:
    return []


def full_tunnel_plan(device_index: int, families: list[int], peer: str) -> list[Record]:
    raise _unsupported("a full tunnel by policy routing")


def dns_plan(device: str, servers: list[str], full: bool) -> Record | None:
    return None  # the caller says to set them by hand


def firewall(table: str, passes: Passes | None) -> Record:
    raise _unsupported("--kill-switch")


def apply(record: Record) -> None:
    raise _unsupported(f"applying a {record.get('kind')} record")


def undo(record: Record) -> None:
    raise _unsupported(f"undoing a {record.get('kind')} record")


def cpu_has_aes() -> bool:
    return False  # not probed: ssh's own cipher preference stays


def ssh_preexec():
    return None  # procctl(PROC_PDEATHSIG_CTL) not wired yet: ssh is ended by connect


def netns(pid: int | None = None) -> int:
    return 0  # one network stack per host (jails aside): every journal is this one's
