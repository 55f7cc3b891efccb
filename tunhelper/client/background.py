"""``connect --background`` and ``disconnect``: a detached client and its pid file.

The pid file holds the pid and its start time, so ``disconnect`` never signals a
process that merely reused the pid.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time

import psutil

from tunhelper import platform
from tunhelper.errors import TunhelperError

RUN_DIR = "/run/tunhelper"
_PREFIX = "connect-"


def default_pid_file(device: str) -> str:
    return os.path.join(RUN_DIR, f"{_PREFIX}{device}.pid")


def detach(pid_file: str, in_child=None) -> None:
    """Fork: the child carries on alone; the parent exits once the pid file is written.

    So that when ``connect --background`` returns, ``disconnect`` already works.
    """
    os.makedirs(os.path.dirname(pid_file) or ".", mode=0o755, exist_ok=True)
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            ready.read()  # EOF once the child wrote the pid file (or died)
        os._exit(0)  # the caller already printed the status line
    os.close(ready_r)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    me = psutil.Process()
    tmp = f"{pid_file}.{me.pid}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{me.pid} {me.create_time()!r}\n")
    os.replace(tmp, pid_file)
    if in_child is not None:
        in_child()  # before the parent returns: e.g. the state file under our pid
    os.close(ready_w)


def remove_pid_file(pid_file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file)


def _read(pid_file: str) -> psutil.Process | None:
    """The live process a pid file names, or ``None`` if it is stale."""
    try:
        with open(pid_file, encoding="ascii") as f:
            pid_text, start_text = f.read().split()
        pid = int(pid_text)
        if platform.same_process(pid, float(start_text)):
            return psutil.Process(pid)
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def disconnect(device: str | None, pid_file: str | None, wait: float = 10.0) -> list[str]:
    """End background connects (one, or all); return the pid files handled.

    First, whatever a killed connect left (its state file: rules, kill-switch, DNS,
    its ssh) is restored; those state files count as handled too.
    """
    from tunhelper.client.state import recover

    recovered = recover()
    if pid_file is not None:
        files = [pid_file]
    elif device is not None:
        files = [default_pid_file(device)]
    else:
        files = sorted(glob.glob(os.path.join(RUN_DIR, f"{_PREFIX}*.pid")))
    if not files or (len(files) == 1 and not os.path.exists(files[0])):
        if recovered and pid_file is None and device is None:
            return recovered
        what = files[0] if files else f"{RUN_DIR}/{_PREFIX}*.pid"
        raise TunhelperError(f"no background connect to end ({what} not found)")
    done = recovered
    for path in files:
        proc = _read(path)
        if proc is None:
            remove_pid_file(path)  # stale: its connect is already gone
        else:
            proc.terminate()
            with contextlib.suppress(psutil.TimeoutExpired):
                proc.wait(wait)
            deadline = time.monotonic() + 1.0
            while os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.02)  # the connect removes its own pid file as it ends
        done.append(path)
    return done
