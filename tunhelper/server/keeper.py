"""The keeper: the slim process that holds a session for its life, then gives it back.

A session is held for hours, and the helper that set it up has imported pyroute2,
psutil and netaddr (about 30 MB). Once the client has its address, the helper
re-executes itself as ``python -I -m tunhelper.server.keeper``: the same pid (so its
lease's owner stays valid), a fresh interpreter that imports only what holding needs.
What the session took (:class:`tunhelper.server.teardown.Taken`) travels in a pipe
as JSON; end signals stay blocked across ``exec`` (the mask is inherited) until the
new process can handle them. Whatever ends the hold, even a failure of the hold itself,
everything is given back and the ssh connection ended.
"""

from __future__ import annotations

import json
import os
import sys

from tunhelper import signals
from tunhelper.link.hold import hold
from tunhelper.platform import DeviceInfo, SessionDevice

_MAX_RECORD = 60000  # a pipe buffers 64 KiB; a record is a few hundred bytes


def become_keeper(record: dict, label: list[str]) -> None:
    """Replace this process with the keeper; returns only if that failed.

    ``label`` goes on the keeper's command line, so ``ps`` shows which session it is.
    """
    data = json.dumps(record).encode()
    if len(data) > _MAX_RECORD:
        return
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    os.set_inheritable(read_fd, True)
    argv = [sys.executable, "-I", "-m", "tunhelper.server.keeper", str(read_fd), *label]
    signals.block_end_signals()
    try:
        os.execv(sys.executable, argv)  # noqa: S606 - no shell: the same interpreter
    except OSError as e:
        signals.unblock_end_signals()
        os.close(read_fd)
        from tunhelper import log

        log.warning(f"could not start the slim keeper ({e.strerror}); holding in place")


def session_of(record: dict) -> SessionDevice:
    s = record["session"]
    return SessionDevice(DeviceInfo(**s["device"]), s["session_pid"], s["session_start"])


def _main(argv: list[str]) -> int:
    """``python -I -m tunhelper.server.keeper FD [label...]``: hold, then give back."""
    signals.catch_end_signals()
    with os.fdopen(int(argv[0]), "rb") as f:
        record = json.loads(f.read())
    found = session_of(record)
    reason, counters = "the keeper failed", None
    try:
        signals.unblock_end_signals()  # one may be pending already
        _, reason, counters = hold(found)
    except signals.Interrupted as e:
        reason = f"signal {e}"
    except Exception as e:  # noqa: BLE001 - whatever failed, everything is given back
        reason = f"the keeper failed ({type(e).__name__}: {e})"
    finally:
        signals.ignore_end_signals()
        from tunhelper.server import teardown  # the heavier imports only now, at the end

        status = teardown.finish(record, found, reason, counters)
    return status


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - never a traceback to the client
        from tunhelper import log

        log.error(f"internal error while holding ({type(e).__name__}: {e}); please report it")
        sys.exit(1)
