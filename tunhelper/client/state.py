"""What a running ``connect`` changed on this host, on disk, so a SIGKILL loses nothing.

``/run/tunhelper/client-PID.json`` lists the records of what is applied now (policy
rules, routes in tunhelper's table, the kill-switch's nftables table, a replaced
resolv.conf), rewritten atomically at each change. Addresses and routes on the tunnel
device need no record: they vanish with the device when ssh dies. The next
``connect`` and ``disconnect`` replay the files of dead processes (pid and start time
checked, so a reused pid is never mistaken for ours) in reverse, then delete them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Any

import psutil

from tunhelper import log, platform
from tunhelper.client.background import RUN_DIR

_PREFIX = "client-"


class State:
    def __init__(self, run_dir: str = RUN_DIR) -> None:
        me = psutil.Process()
        self.path = os.path.join(run_dir, f"{_PREFIX}{me.pid}.json")
        self.start = me.create_time()
        self.records: list[dict[str, Any]] = []

    def moved(self) -> None:
        """After ``--background`` forked: the records are the child's now. Written under
        the new pid before the old file goes, so no recovery sees them unowned."""
        old = self.path
        me = psutil.Process()
        self.path = os.path.join(os.path.dirname(old), f"{_PREFIX}{me.pid}.json")
        self.start = me.create_time()
        self._write()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)

    def add(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)
        self._write()

    def remove(self, records: list[dict[str, Any]]) -> None:
        """Undo ``records`` (newest first), then forget them; one failing never stops
        the others."""
        for record in reversed(records):
            try:
                _undo(record)
            except Exception as e:  # noqa: BLE001 - cleanup goes on whatever failed
                log.error(f"could not remove {record.get('kind')} {_label(record)}: {e}")
            with contextlib.suppress(ValueError):
                self.records.remove(record)
        self._write()

    def clear(self) -> None:
        self.remove(list(self.records))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _write(self) -> None:
        if not self.records:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "start": self.start, "records": self.records}, f)
        os.replace(tmp, self.path)


def _undo(record: dict[str, Any]) -> None:
    """A ``process`` record is the ssh a killed connect left: its tunnel stays up (and
    keeps the server's lease) until it ends. Everything else is the platform's."""
    if record.get("kind") != "process":
        platform.client.undo(record)
        return
    if _alive(int(record["pid"]), float(record["start"])):
        proc = psutil.Process(int(record["pid"]))
        proc.terminate()
        try:
            proc.wait(5)
        except psutil.TimeoutExpired:
            proc.kill()


def _label(record: dict[str, Any]) -> str:
    what = record.get("table") or record.get("path") or record.get("dst") or record.get("pid")
    return str(what or "")


def _alive(pid: int, start: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - start) <= 1.0
    except psutil.Error:
        return False


def recover(run_dir: str = RUN_DIR) -> list[str]:
    """Replay the state files of connects that died without cleaning up; return them."""
    done = []
    for path in sorted(glob.glob(os.path.join(run_dir, f"{_PREFIX}*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            pid, start, records = int(data["pid"]), float(data["start"]), list(data["records"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error(f"ignoring unreadable state file {path}: {e}")
            continue
        if _alive(pid, start):
            continue
        for record in reversed(records):
            try:
                _undo(record)
            except Exception as e:  # noqa: BLE001 - restore as much as possible
                log.error(f"could not restore {record.get('kind')} {_label(record)}: {e}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        done.append(path)
    return done
