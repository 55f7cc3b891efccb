"""The state directory: the one owner of its files, its permission rule, its locks and
its atomic writes.

Every file tunhelper keeps between processes lives here (``/var/lib/tunhelper`` by
default, ``--state-dir``): the SQLite lease database, the marker of each bridge
tunhelper created, the notes left for replaced sessions, the refusal counts and the
releases a PostgreSQL store missed. Whoever writes one of them names it from this
module, takes its locks with :func:`held` or :func:`locked` and replaces whole files
with :func:`write_atomically`; the session, the store, doctor and the admin commands
all apply the same permission rule (:func:`problem`). Standard library only: the
refusal path and the admin commands import it, and must stay cheap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator

from tunhelper import defaults
from tunhelper.errors import TunhelperError

# The files and folders of the state directory, each owned by the module named.
LEASES_DB = "leases.sqlite3"  # store/sqlite.py: the lease database
BRIDGES = "bridges"  # link/bridge.py: one empty file per bridge tunhelper created
REPLACED = "replaced"  # server/replaced.py: one note per session ended by a newer one
REFUSALS = "refusals.json"  # admin/metrics.py: refusal counts by reason
PENDING_RELEASES = "pending-releases"  # store/postgres.py: releases the database missed


class LockTimeout(TunhelperError):
    """A lock stayed held past its bound: another process hangs, or a local mistake."""


def path(state_dir: str, name: str) -> str:
    """The path of one of the state directory's files (a name defined above)."""
    return os.path.join(state_dir, name)


def problem(state_dir: str, st: os.stat_result) -> str | None:
    """What is wrong with a state directory of this ``stat``, as one line, or None.

    A directory others could write would let them forge leases; one they could enter
    would let them read every lease or hold SQLite's locks, stalling every session.
    So it must be a directory, ours, and closed to group and others (0700).
    """
    if not stat.S_ISDIR(st.st_mode):
        return f"state directory {state_dir} is not a directory; move it aside or check --state-dir"
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return (
            f"state directory {state_dir} is writable by others (they could forge leases); "
            f"run: chown root {state_dir} && chmod 700 {state_dir}"
        )
    if st.st_mode & 0o077:
        return (
            f"state directory {state_dir} is open to others (they could read every lease or "
            f"lock the database, and sessions refuse it); run: chmod 700 {state_dir}"
        )
    return None


def _read_only(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _make_private(state_dir: str) -> None:
    """Files an older version created 0644 in the directory become 0600."""
    with contextlib.suppress(OSError), os.scandir(state_dir) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                os.chmod(entry.path, 0o600)


def prepare(state_dir: str) -> None:
    """Create (0700) or check the state directory before anything is written into it.

    Refuses in one line a directory :func:`problem` finds wrong or one we cannot
    write; sets the umask so every file made in it (database, WAL, locks, markers) is
    0600.
    """
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        st = os.stat(state_dir)  # a link to a sound directory is fine
    except OSError as e:
        raise TunhelperError(
            f"cannot create state directory {state_dir} ({e.strerror}); check --state-dir"
        ) from None
    wrong = problem(state_dir, st)
    if wrong is not None:
        raise TunhelperError(wrong)
    os.umask(0o077)
    _make_private(state_dir)
    if not os.access(state_dir, os.W_OK):
        # Else SQLite says only "unable to open database file", which reads like damage.
        why = "read-only file system" if _read_only(state_dir) else "permission denied"
        raise TunhelperError(
            f"cannot write to state directory {state_dir} ({why}); check its mount and --state-dir"
        )


@contextlib.contextmanager
def locked(
    path: str,
    timeout: float = defaults.LOCK_TIMEOUT,
    shared: bool = False,
    flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND,
) -> Iterator[int]:
    """Open ``path`` (0600, never through a link) and hold a flock on it; yields the fd.

    Every wait is bounded: a process that hangs (or a local root mistake) must never
    stall every later session. After ``timeout`` seconds: :class:`LockTimeout`, one
    line. The kernel drops the lock if we die.
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path} stayed locked by another process for {timeout:g}s; try "
                        "again, and if it lasts, see which process holds it (fuser)"
                    ) from None
                time.sleep(0.002)
        yield fd
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def held(state_dir: str, name: str, timeout: float = defaults.LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``STATE_DIR/NAME.lock`` exclusively: changes several processes could make
    at once (bridges, routes) are serialised on it."""
    with locked(os.path.join(state_dir, f"{name}.lock"), timeout):
        yield


def write_atomically(path: str, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` in one step: a temporary file beside it, fsync, rename, then
    the directory fsynced, so a reader sees the old file or the new one, and so does
    whoever looks after a crash.

    ``mode``: the new file's mode (owned by us); ``None`` keeps the old file's mode
    and owner (a new file: ours, 0600). Raises OSError.
    """
    directory = os.path.dirname(os.path.abspath(path))
    uid, gid = os.geteuid(), os.getegid()
    if mode is None:
        try:
            st = os.stat(path)
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        except FileNotFoundError:
            mode = 0o600
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
            os.fchown(f.fileno(), uid, gid)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
