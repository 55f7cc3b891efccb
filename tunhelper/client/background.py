"""``connect --background`` and ``disconnect``: a detached client and its pid file.

The pid file holds the pid and its start time, so ``disconnect`` never signals a
process that merely reused the pid; it must also still be a ``tunhelper connect``.
Pid files live only in directories no one but us can write to, are created without
following links (``O_NOFOLLOW|O_EXCL``) and read only if they are our regular files.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import stat
import time

import psutil

from tunhelper import platform
from tunhelper.defaults import RUN_DIR
from tunhelper.errors import TunhelperError

_PREFIX = "connect-"


def default_pid_file(device: str) -> str:
    return os.path.join(RUN_DIR, f"{_PREFIX}{device}.pid")


def detach(pid_file: str, in_child=None) -> None:
    """Fork: the child carries on alone; the parent exits once the pid file is written.

    So that when ``connect --background`` returns, ``disconnect`` already works.
    """
    directory = os.path.dirname(os.path.abspath(pid_file))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    if not _private_dir(directory):
        raise TunhelperError(
            f"{directory} can be written by others, who could point the pid file elsewhere; "
            f"give --pid-file a path in a directory only root can write to (such as {RUN_DIR})"
        )
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
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # our own leftover: pids are unique among live processes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{me.pid} {me.create_time()!r}\n")
    os.replace(tmp, pid_file)  # a link named pid_file is replaced, never followed
    if in_child is not None:
        in_child()  # before the parent returns: e.g. the state file under our pid
    os.close(ready_w)


def remove_pid_file(pid_file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file)


def _private_dir(directory: str) -> bool:
    """Owned by us and writable by nobody else: no one can swap a pid file in it."""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _read(pid_file: str) -> psutil.Process | None:
    """The live ``tunhelper connect`` a pid file names, or ``None`` if it is stale."""
    if not _private_dir(os.path.dirname(os.path.abspath(pid_file))):
        raise TunhelperError(
            f"{pid_file} is in a directory others can write to; not trusting it (end that "
            "connect with kill, or keep pid files in a directory only root can write to)"
        )
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, encoding="ascii") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                return None
            pid_text, start_text = f.read(100).split()
        pid = int(pid_text)
        if platform.same_process(pid, float(start_text)):
            proc = psutil.Process(pid)
            if _is_connect(proc.cmdline()):
                return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _is_connect(argv: list[str]) -> bool:
    """A ``tunhelper ... connect`` command line (any launcher, any interpreter)."""
    names = [os.path.basename(a) for a in argv]
    for i, name in enumerate(names):
        if name.startswith("tunhelper") and "connect" in argv[i + 1 :]:
            return True
    return False


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


def disconnect_command(args: argparse.Namespace) -> int:
    """The ``disconnect`` command (tunhelper.commands): one line per connect ended."""
    for path in disconnect(args.device, args.pid_file):
        print(f"ended {path}")
    return 0
