"""Metrics with no daemon: refusals counted in the state directory, and the leases, pools
and live sessions in Prometheus's text exposition format (``tunhelper leases --format
prometheus``), which a timer can write for node_exporter's textfile collector.

The refusal counter is the only thing the forced command touches, and only when it
refuses: one small JSON file (``refusals.json``), updated under ``flock`` so concurrent
helpers never lose a count, bounded (a fixed set of reasons, a bounded read, a bounded
wait for the lock) and never able to turn a refusal into a traceback. This module
imports only the standard library at the top: the refusal path stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from typing import Any

from tunhelper import statedir

REFUSALS_FILE = statedir.REFUSALS
# Every reason a refusal is counted under; anything else is "other". Fixed, so the
# file and the label set stay bounded whatever the messages say.
REASONS = (
    "no_device",  # sshd opened no tunnel for the session (ssh without -w, restrict, ...)
    "pool_exhausted",  # every address of the pool held by a live session
    "address_taken",  # the key's reserved --address held by another live session
    "max_leases",  # the client identity holds --max-leases addresses already
    "usage",  # the forced command's arguments are wrong (the admin's line)
    "database",  # the lease database or state directory unusable, locked or full
    "other",
)
_BY_CLASS = {
    "NoDevice": "no_device",
    "PoolExhausted": "pool_exhausted",
    "AddressTaken": "address_taken",
    "UsageError": "usage",
}
_LOCK_WAIT = 2.0  # seconds: a refusal never waits longer than this for the counter
_MAX_READ = 64 * 1024


def reason_of(error: BaseException) -> str:
    """The counted reason of a refusal: by exception class, then by the message's words."""
    for cls in type(error).__mro__:
        if cls.__name__ in _BY_CLASS:
            return _BY_CLASS[cls.__name__]
    text = str(error)
    if "--max-leases" in text:
        return "max_leases"
    if "database" in text or "state directory" in text:
        return "database"
    return "other"


def _parse(data: bytes) -> dict[str, int]:
    try:
        loaded = json.loads(data.decode("utf-8")) if data else {}
    except (ValueError, UnicodeDecodeError):
        return {}  # damaged (a power cut mid-write): the counters start again
    if not isinstance(loaded, dict):
        return {}
    return {r: v for r, v in loaded.items() if r in REASONS and isinstance(v, int) and v >= 0}


def count_refusal(state_dir: str | None, error: BaseException) -> None:
    """Add one to the refusal counter of ``error``'s reason; never raises.

    Called by the forced command where a refusal becomes its one line. A state
    directory that is missing, unwritable or full loses the count, not the refusal.
    """
    if not state_dir:
        return
    try:
        reason = reason_of(error)
        path = os.path.join(state_dir, REFUSALS_FILE)
        with contextlib.suppress(FileExistsError):
            os.mkdir(state_dir, 0o700)  # as the store makes it: a refusal may come first
        with statedir.locked(path, _LOCK_WAIT, flags=os.O_RDWR | os.O_CREAT) as fd:
            counts = _parse(os.read(fd, _MAX_READ))
            counts[reason] = counts.get(reason, 0) + 1
            data = json.dumps(counts, sort_keys=True).encode()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, data)
    except Exception:  # noqa: BLE001, S110 - counting must never change a refusal
        pass


def read_refusals(state_dir: str) -> dict[str, int]:
    """Every reason's count (0 for those never seen)."""
    counts: dict[str, int] = {}
    path = os.path.join(state_dir, REFUSALS_FILE)
    with (
        contextlib.suppress(FileNotFoundError),
        statedir.locked(path, _LOCK_WAIT, shared=True, flags=os.O_RDONLY) as fd,
    ):
        counts = _parse(os.read(fd, _MAX_READ))
    return {r: counts.get(r, 0) for r in REASONS}


# -- the exposition format ------------------------------------------------------------------


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def pool_size(pool: str) -> int | None:
    """Addresses a pool can hand out, its default gateway excluded (``None``: not a CIDR)."""
    from tunhelper.errors import UsageError
    from tunhelper.pool import Pool

    try:
        return Pool.parse(pool).capacity
    except UsageError:
        return None


SESSION_COUNTERS = (
    ("receive_bytes", "bytes_in", "Bytes the gateway received from the client"),
    ("transmit_bytes", "bytes_out", "Bytes the gateway sent to the client"),
    ("receive_packets", "packets_in", "Packets the gateway received from the client"),
    ("transmit_packets", "packets_out", "Packets the gateway sent to the client"),
)


def render(rows: Iterable[dict[str, Any]], refusals: dict[str, int]) -> str:
    """The exposition text: ``rows`` as ``leases.describe`` gives them (a live session
    on this host carries its device's counters), ``refusals`` as ``read_refusals``."""
    from tunhelper.store import ACTIVE, RELEASED

    rows = list(rows)
    states = (ACTIVE, RELEASED, "stale")
    pools = sorted({r["pool"] for r in rows})
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP tunhelper_{name} {text}")
        out.append(f"# TYPE tunhelper_{name} {kind}")

    family("leases", "gauge", "Leases by pool and state (stale: recorded active, session gone)")
    for pool in pools:
        for state in states:
            n = sum(1 for r in rows if r["pool"] == pool and r["state"] == state)
            out.append(f"tunhelper_leases{_labels(pool=pool, state=state)} {n}")
    family("pool_size", "gauge", "Addresses the pool can hand out (its gateway excluded)")
    family_free: list[str] = []
    for pool in pools:
        size = pool_size(pool)
        if size is None:
            continue
        active = sum(1 for r in rows if r["pool"] == pool and r["state"] == ACTIVE)
        out.append(f"tunhelper_pool_size{_labels(pool=pool)} {size}")
        family_free.append(f"tunhelper_pool_free{_labels(pool=pool)} {max(size - active, 0)}")
    family("pool_free", "gauge", "Addresses of the pool not held by a live session")
    out += family_free

    live = [r for r in rows if r["state"] == ACTIVE and r["bytes_in"] is not None]
    for name, field, text in SESSION_COUNTERS:
        family(f"session_{name}_total", "counter", f"{text}, per live session on this host")
        for r in live:
            labels = _labels(pool=r["pool"], address=r["address"], client=r["client"],
                             device=r["device"])  # fmt: skip
            out.append(f"tunhelper_session_{name}_total{labels} {r[field]}")
    family("session_start_time_seconds", "gauge", "When the live session began (Unix time)")
    for r in live:
        labels = _labels(pool=r["pool"], address=r["address"], client=r["client"],
                         device=r["device"])  # fmt: skip
        out.append(f"tunhelper_session_start_time_seconds{labels} {r['since_unix']:.3f}")
    family("refusals_total", "counter", "Sessions the forced command refused, by reason")
    for reason in REASONS:
        out.append(f"tunhelper_refusals_total{_labels(reason=reason)} {refusals.get(reason, 0)}")
    return "\n".join(out) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (the textfile collector) sees the old
    file or the new one, never half of one; 0644, as node_exporter runs as its own user."""
    from tunhelper.admin import atomic
    from tunhelper.errors import TunhelperError

    try:
        atomic.write_atomically(path, text.encode(), 0o644)
    except OSError as e:
        raise TunhelperError(f"cannot write {path}: {e.strerror}; check --output") from None
