"""``tunhelper status [--json]``: every connect of this host (this network namespace)
on one screen, as ``wg show`` and ``mullvad status`` do.

Read from the connects' journals (:mod:`journal`), which each connect rewrites at every
transition, plus the device's byte counters read now. Per connect: its state
(connecting, connected, reconnecting, blocked, disconnecting), destination, device,
addresses, since when, bytes both ways, reconnect count, the last error and what to
do. A journal whose process is gone shows as ``killed``: what it changed (a
kill-switch table included) is still in place until ``tunhelper disconnect``.

``--json`` prints a list of objects with the keys ``pid``, ``state``, ``destination``,
``device``, ``address``, ``address6``, ``since`` (Unix time), ``received``, ``sent``
(bytes, ``null`` without a device), ``reconnects``, ``kill_switch``, ``error``,
``hint`` and ``journal`` (its path). The exit status is 0 whenever it could read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tunhelper import platform
from tunhelper.client import journal
from tunhelper.client.machine import line

KILLED_HINT = "run 'tunhelper disconnect' to give back what it left (its kill-switch too)"


def collect() -> list[dict[str, Any]]:
    out = []
    for path, data in journal.read_all():
        status = dict(data.get("status", {}))
        entry: dict[str, Any] = {
            "pid": int(data["pid"]),
            "state": status.get("state", "connecting"),
            "destination": status.get("destination"),
            "device": status.get("device"),
            "address": status.get("address") if status.get("device") else None,
            "address6": status.get("address6") if status.get("device") else None,
            "since": status.get("since"),
            "received": None,
            "sent": None,
            "reconnects": status.get("reconnects", 0),
            "kill_switch": bool(status.get("kill_switch")),
            "error": status.get("error"),
            "hint": status.get("hint"),
            "journal": path,
        }
        if not journal.alive(data):
            entry.update(state="killed", error="the connect process is gone", hint=KILLED_HINT)
        elif entry["device"] and status.get("index") is not None:
            device = platform.DeviceInfo(entry["device"], int(status["index"]), "tun")
            counters = platform.link_counters(device)
            if counters is not None:
                entry["received"], entry["sent"] = counters
        out.append(entry)
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ago(since: float | None) -> str:
    if not since:
        return "-"
    seconds = max(0, int(time.time() - since))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    h, rest = divmod(seconds, 3600)
    return (
        f"{stamp} ({h}h {rest // 60}m {rest % 60}s ago)"
        if h
        else (f"{stamp} ({rest // 60}m {rest % 60}s ago)")
    )


def text(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "disconnected: no connect is running\n"
    blocks = []
    for e in entries:
        rows = [f"connect pid {e['pid']}: {line(e) if e['state'] != 'killed' else 'killed'}"]
        rows.append(f"  destination: {e['destination'] or '-'}")
        if e["device"]:
            addresses = " ".join(a for a in (e["address"], e["address6"]) if a)
            rows.append(f"  device: {e['device']}  address: {addresses}")
            rows.append(f"  transfer: {_size(e['received'])} received, {_size(e['sent'])} sent")
        rows.append(f"  since: {_ago(e['since'])}")
        rows.append(f"  reconnects: {e['reconnects']}")
        rows.append(f"  kill-switch: {'on' if e['kill_switch'] else 'off'}")
        if e["error"]:
            rows.append(f"  last error: {e['error']}")
            if e["hint"]:
                rows.append(f"  what to do: {e['hint']}")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks) + "\n"


def status_command(args) -> int:  # noqa: ANN001 - argparse's Namespace
    """The ``status`` command (tunhelper.commands)."""
    return run(args.json)


def run(as_json: bool) -> int:
    entries = collect()
    print(json.dumps(entries) if as_json else text(entries), end="" if not as_json else "\n")
    return 0
