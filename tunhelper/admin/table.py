"""``tunhelper leases`` as a terminal table an admin can read at a glance, also with a
thousand sessions: sorted by pool, state (live sessions first) and address, each
session's age, bytes each way and gateway-side device, and one summary line per pool.
A shared store's leases of several gateways add a ``gateway`` column: the host that
holds each one."""

from __future__ import annotations

import ipaddress
from typing import Any

COLUMNS = ("address", "state", "device", "age", "in", "out", "pid", "client")
FLEET_COLUMNS = ("address", "state", "gateway", "device", "age", "in", "out", "pid", "client")
_STATE_ORDER = {"active": 0, "stale": 1, "released": 2}


def age(seconds: float | None) -> str:
    """``42s``, ``5m12s``, ``2h05m``, ``3d04h``: two units at most, always short."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int | None) -> str:
    """Bytes in at most five characters: ``812``, ``12.3K``, ``4.0G`` (powers of 1024)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}" if not unit else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _sort_key(row: dict[str, Any]) -> tuple:
    try:
        address = ipaddress.ip_address(row["address"])
        where = (address.version, int(address))
    except ValueError:
        where = (9, 0)
    return (row["pool"], _STATE_ORDER.get(row["state"], 3), where)


def render(rows: list[dict[str, Any]], now: float) -> str:
    """The table, one header per pool, then a summary line of the pool."""
    out: list[str] = []
    ordered = sorted(rows, key=_sort_key)
    fleet = len({r.get("host") for r in rows}) > 1
    columns = FLEET_COLUMNS if fleet else COLUMNS
    cells = [
        (
            r["address"],
            r["state"],
            *((r.get("host") or "-",) if fleet else ()),
            r["device"] if r["state"] != "released" else "-",
            age(now - r["since_unix"]) if r["state"] != "released" else "-",
            size(r["bytes_in"]),
            size(r["bytes_out"]),
            str(r["pid"]) if r["state"] != "released" else "-",
            r["client"],
        )
        for r in ordered
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    pools = []
    for r in ordered:
        if not pools or pools[-1] != r["pool"]:
            pools.append(r["pool"])
    for pool in pools:
        mine = [c for r, c in zip(ordered, cells) if r["pool"] == pool]
        counts = {s: sum(1 for c in mine if c[1] == s) for s in ("active", "stale", "released")}
        if out:
            out.append("")
        out.append(
            f"pool {pool}: {counts['active']} active, {counts['stale']} stale, "
            f"{counts['released']} released"
        )
        out.append(line(columns))
        out += [line(c) for c in mine]
    if not out:
        out.append(line(columns))  # no lease yet: the header alone
    return "\n".join(out) + "\n"
