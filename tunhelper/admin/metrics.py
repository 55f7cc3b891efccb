"""Metrics with no daemon: the leases, pools, live sessions and the refusals the forced
command counted (:func:`tunhelper.statedir.count_refusal`, only read here) in Prometheus's text
exposition format (``tunhelper leases --format prometheus``), which a timer can write
for node_exporter's textfile collector.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tunhelper.errors import REASONS
from tunhelper.statedir import read_refusals

__all__ = ["read_refusals", "render", "write_atomically"]

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


def write_atomically(path: str, text: str, group: str | None = None) -> None:
    """Write ``text`` to ``path`` so that a reader (the textfile collector) sees the old
    file or the new one, never half of one.

    The per-session series name clients (key fingerprints, certificate key IDs) with
    their addresses, which local users must not read (docs/security.md): the file is
    0600, or 0640 in ``group`` (node_exporter's textfile collector runs as its own user,
    ``prometheus`` on Debian), never world-readable.
    """
    import grp

    from tunhelper import statedir
    from tunhelper.errors import TunhelperError, UsageError

    gid = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(f"--output-group {group}: no such group") from None
    try:
        statedir.write_atomically(path, text.encode(), 0o600 if gid is None else 0o640, gid)
    except OSError as e:
        raise TunhelperError(f"cannot write {path}: {e.strerror}; check --output") from None
