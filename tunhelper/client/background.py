"""``connect --background`` and ``disconnect``.

``--background`` forks at the very start, before any thread, lock or ssh exists, so
the detached process inherits nothing locked (an earlier version forked once the link
was up, and the child hung for ever on a lock held by ssh's stderr reader, a thread
that did not survive the fork). The parent waits on a pipe: the child writes one byte,
its exit code (0 once the link is up, or the failure's code once it is blocked under
the kill-switch and stays), then detaches its stdio. If the child ends before that,
the parent exits with the child's status. So when ``connect --background`` returns 0
the link is up and ``disconnect`` works; when it returns non-zero with the
kill-switch, the child still runs, blocked, and ``tunhelper status`` shows why.

The pid file (``--pid-file``, or ``/run/tunhelper/connect-DEVICE.pid`` once the device
is known) holds the pid and its start time; ``disconnect`` signals only a live
``tunhelper connect`` with that start time. Pid files live only in directories no one
but us can write to, are created without following links and read only if they are
our regular files. ``disconnect`` also finds connects by their journals
(:mod:`journal`), so a connect that was blocked before it had a device is found too.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import stat
import time

import psutil

from tunhelper import log, platform
from tunhelper.client import journal
from tunhelper.defaults import RUN_DIR
from tunhelper.errors import TunhelperError

_PREFIX = "connect-"
_child: dict = {}  # in the detached child: "ready" (the pipe's fd), "pid_file"


def default_pid_file(device: str) -> str:
    return os.path.join(RUN_DIR, f"{_PREFIX}{device}.pid")


def start(pid_file: str | None) -> None:
    """Fork; only the child returns. The parent exits with what the child reports."""
    if pid_file is not None:
        _check_dir(pid_file)
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child > 0:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            code = ready.read(1)
        if code:
            os._exit(code[0])
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    os.close(ready_r)
    os.setsid()
    _child.update(ready=ready_w, pid_file=pid_file)


def ready(code: int, device: str | None = None) -> None:
    """In a background child: tell the parent ``code``, write the pid file, detach."""
    fd = _child.pop("ready", None)
    if fd is None:
        return
    pid_file = _child.get("pid_file") or (default_pid_file(device) if device else None)
    if pid_file is not None:
        _write_pid_file(pid_file)
        _child["written"] = pid_file
    null = os.open(os.devnull, os.O_RDWR)
    os.write(fd, bytes([code & 0xFF]))
    os.close(fd)
    for std in (0, 1, 2):
        os.dup2(null, std)
    os.close(null)


def written() -> str | None:
    """The pid file this process wrote, to remove as it ends."""
    return _child.get("written")


def _check_dir(pid_file: str) -> None:
    directory = os.path.dirname(os.path.abspath(pid_file))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    if not _private_dir(directory):
        raise TunhelperError(
            f"{directory} can be written by others, who could point the pid file elsewhere; "
            f"give --pid-file a path in a directory only root can write to (such as {RUN_DIR})"
        )


def _write_pid_file(pid_file: str) -> None:
    _check_dir(pid_file)
    me = psutil.Process()
    tmp = f"{pid_file}.{me.pid}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # our own leftover: pids are unique among live processes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{me.pid} {me.create_time()!r}\n")
    os.replace(tmp, pid_file)  # a link named pid_file is replaced, never followed


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


def _targets(
    device: str | None, pid_file: str | None, stale: list[str]
) -> dict[int, tuple[psutil.Process, str]]:
    """The live connects to end: pid -> (process, what named it); stale pid files
    (their connect is already gone) are removed and added to ``stale``."""
    found: dict[int, tuple[psutil.Process, str]] = {}
    if pid_file is not None or device is not None:
        files = [pid_file or default_pid_file(device)]
    else:
        files = sorted(glob.glob(os.path.join(RUN_DIR, f"{_PREFIX}*.pid")))
    for path in files:
        proc = _read(path)
        if proc is None:
            if os.path.exists(path):
                remove_pid_file(path)  # stale: its connect is already gone
                stale.append(path)
        else:
            found[proc.pid] = (proc, path)
    if pid_file is None:
        for path, data in journal.read_all():
            if device is not None and data.get("status", {}).get("device") != device:
                continue
            if journal.alive(data):
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(int(data["pid"]))
                    if _is_connect(proc.cmdline()):
                        found.setdefault(proc.pid, (proc, path))
    return found


def disconnect(device: str | None, pid_file: str | None, wait: float = 10.0) -> list[str]:
    """End connects (one, or all in this network namespace); return what was handled.

    Each gets SIGTERM and is waited for (a zombie counts as gone: under a subreaper
    nobody may reap it soon). One that does not end in ``wait`` seconds is killed, and
    what its journal recorded is given back here; one that cannot be killed either is
    an error. Finally the journals of dead connects are replayed.
    """
    done: list[str] = []
    stuck: list[str] = []
    targets = _targets(device, pid_file, done)
    for pid, (proc, what) in sorted(targets.items()):
        start = proc.create_time()
        proc.terminate()
        if not _gone(pid, start, wait):
            log.error(f"connect pid {pid} did not end within {wait:g}s of SIGTERM: killing it")
            with contextlib.suppress(psutil.Error):
                proc.kill()
            if not _gone(pid, start, 5.0):
                stuck.append(f"pid {pid}")
                continue
        done.append(what)
        if what.endswith(".pid"):
            remove_pid_file(what)
    done += [p for p in journal.recover() if p not in done]
    if stuck:
        raise TunhelperError(f"could not end connect {', '.join(stuck)}: not even by SIGKILL")
    if not done:
        what = pid_file or (default_pid_file(device) if device else "a running connect")
        raise TunhelperError(f"no connect to end ({what} not found)")
    return done


def _gone(pid: int, start: float, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while platform.same_process(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def disconnect_command(args: argparse.Namespace) -> int:
    """The ``disconnect`` command (tunhelper.commands): one line per connect ended."""
    for path in disconnect(args.device, args.pid_file):
        print(f"ended {path}")
    return 0
