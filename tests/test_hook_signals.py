"""Hooks run with default signal dispositions and an empty mask, whatever the helper's.

A down hook runs once the helper (or keeper) ignores and blocks its end signals, as
:func:`tunhelper.signals.ignore_end_signals` does; ignored signals survive exec. Real
processes here: ``timeout`` and ``kill`` inside the hook must work.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from tunhelper.server import hooks
from tunhelper.signals import END_SIGNALS

SCRIPT = """#!/bin/sh
timeout 1 sleep 30; echo "timeout $?" > {out}
sleep 30 & kill $!; wait $!; echo "kill $?" >> {out}
"""


@pytest.fixture
def helper_in_cleanup():
    """This process as the helper is while it gives back: end signals ignored, blocked."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (*END_SIGNALS, signal.SIGPIPE)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, END_SIGNALS)
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_timeout_and_kill_work_inside_a_down_hook(tmp_path: Path, helper_in_cleanup) -> None:
    if shutil.which("timeout") is None:
        pytest.skip("coreutils timeout is missing")
    out = tmp_path / "out"
    script = tmp_path / "down.sh"
    script.write_text(SCRIPT.format(out=out))
    script.chmod(0o755)
    start = time.monotonic()
    hooks.run("down", [str(script)], hooks.environment({"event": "down"}), 20)
    assert time.monotonic() - start < 10  # not the 30 s an ignored SIGTERM would take
    assert out.read_text().split("\n")[:2] == ["timeout 124", "kill 143"]


def test_the_hook_sees_an_empty_mask_and_default_dispositions(
    tmp_path: Path, helper_in_cleanup
) -> None:
    out = tmp_path / "status"
    script = tmp_path / "show.sh"
    script.write_text(f"#!/bin/sh\ngrep -E '^Sig(Blk|Ign)' /proc/self/status > {out}\n")
    script.chmod(0o755)
    hooks.run("down", [str(script)], hooks.environment({"event": "down"}), 10)
    fields = dict(line.split(":\t") for line in out.read_text().splitlines())
    assert int(fields["SigBlk"], 16) == 0
    ignored = int(fields["SigIgn"], 16)
    for s in (*END_SIGNALS, signal.SIGPIPE):
        assert not ignored & (1 << (s - 1)), s
