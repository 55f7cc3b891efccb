"""The one record of a running ``connect``: what it changed on this host and where it
stands, on disk, written BEFORE each change so that a SIGKILL at any instant leaves
only what the next ``connect`` or ``disconnect`` finds and removes.

``/run/tunhelper/client-PID.json`` (0600, replaced atomically at each write)::

    {"pid": 123, "start": 1764780000.12, "netns": 4026531840,
     "changes": [{"kind": "nft", "table": "tunhelper_client"}, {"kind": "process", ...},
                 {"kind": "rule", ...}, {"kind": "dns", ...}],
     "status": {"state": "connected", "destination": "gw", "device": "tun0", ...}}

``changes`` is the ONLY list of what to give back, used both by this process as it
ends and by a later one after a kill (like the server's ``Taken``): nothing is kept
in pairs. Addresses and routes on the tunnel device need no entry: they vanish with
the device when ssh ends. ``status`` is what ``tunhelper status`` shows.

A file is someone else's business unless its process is gone (pid AND start time:
a reused pid is never mistaken for it) and it was written in this network namespace
(``ip netns exec`` shares /run: a connect in one namespace must not replay another
namespace's rules).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable
from typing import Any

from tunhelper import log, platform, statedir
from tunhelper.defaults import RUN_DIR

PREFIX = "client-"
Record = dict[str, Any]


def netns() -> int:
    """This process's network namespace, as the platform numbers it."""
    return platform.client.netns()


def _me() -> tuple[int, float]:
    pid = os.getpid()
    return pid, platform.process_start(pid) or 0.0


class Journal:
    def __init__(self, run_dir: str = RUN_DIR) -> None:
        self.pid, self.start = _me()
        self.path = os.path.join(run_dir, f"{PREFIX}{self.pid}.json")
        self.changes: list[Record] = []
        self.status: dict[str, Any] = {}

    def change(self, record: Record, apply: Callable[[Record], object] | None = None) -> None:
        """Record ``record`` on disk, then (only then) make the change."""
        self.changes.append(record)
        self.write()
        if apply is not None:
            apply(record)

    def has(self, record: Record) -> bool:
        return record in self.changes

    def give_back(self, keep: Callable[[Record], bool] = lambda r: False) -> None:
        """Undo every change not kept, newest first; one failing never stops the others.
        Each is forgotten only after it was undone (or found gone)."""
        for record in reversed(list(self.changes)):
            if keep(record):
                continue
            log.quietly(f"remove {record.get('kind')} {label(record)}", undo, record)
            self.changes.remove(record)
            self.write()

    def update(self, **status: Any) -> None:
        self.status.update(status)
        self.write()

    def close(self) -> None:
        """Once everything is given back: no record left to find."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def write(self) -> None:
        data = {
            "pid": self.pid,
            "start": self.start,
            "netns": netns(),
            "changes": self.changes,
            "status": self.status,
        }
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        statedir.write_atomically(self.path, json.dumps(data).encode(), 0o600)


def undo(record: Record) -> None:
    """A ``process`` record is an ssh a killed connect left (ssh normally dies with its
    connect: PR_SET_PDEATHSIG): its tunnel keeps the server's lease until it ends.
    Everything else is the platform's."""
    if record.get("kind") != "process":
        platform.client.undo(record)
        return
    pid, start = int(record["pid"]), float(record["start"])
    if platform.same_process(pid, start):
        import psutil

        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(5)
        except psutil.TimeoutExpired:
            proc.kill()


def label(record: Record) -> str:
    what = record.get("table") or record.get("path") or record.get("dst") or record.get("pid")
    return str(what or record.get("device") or "")


def read_all(run_dir: str = RUN_DIR) -> list[tuple[str, dict[str, Any]]]:
    """Every journal of this network namespace: (path, content), oldest pid first."""
    found = []
    here = netns()
    for path in sorted(glob.glob(os.path.join(run_dir, f"{PREFIX}*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if "changes" not in data:  # written by an earlier version
                data["changes"] = data.get("records", [])
            int(data["pid"]), float(data["start"]), list(data["changes"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error(f"ignoring unreadable connect record {path}: {e}")
            continue
        if _netns_of(data, here) == here:
            found.append((path, data))
    return found


def _netns_of(data: dict[str, Any], here: int) -> int:
    """The namespace a journal was written in. An earlier version did not say: then
    the live process's own, and for a dead one this namespace (its records are
    replayed here, as that version did)."""
    if "netns" in data:
        return data["netns"]
    return platform.client.netns(int(data["pid"])) or here


def alive(data: dict[str, Any]) -> bool:
    return platform.same_process(int(data["pid"]), float(data["start"]))


def recover(run_dir: str = RUN_DIR, keep: Callable[[Record], bool] = lambda r: False) -> list[str]:
    """Give back what connects that died without cleaning up left; return their files.

    ``keep``: changes to leave (a new connect that already took the kill-switch's
    table over keeps it: removing it would open the host).
    """
    done = []
    for path, data in read_all(run_dir):
        if alive(data):
            continue
        for record in reversed(data["changes"]):
            if not keep(record):
                log.quietly(f"restore {record.get('kind')} {label(record)}", undo, record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        done.append(path)
    return done


def resolved(run_dir: str = RUN_DIR) -> dict[str, list[tuple[str, int]]]:
    """The gateways' addresses earlier connects of this namespace resolved (their
    journals' ``resolved``; where two disagree, the one read last)."""
    known: dict[str, list[tuple[str, int]]] = {}
    for _, data in read_all(run_dir):
        for destination, addresses in dict(data.get("status", {}).get("resolved", {})).items():
            with contextlib.suppress(TypeError, ValueError):
                known[destination] = [(str(a), int(p)) for a, p in addresses]
    return known
