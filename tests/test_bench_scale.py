"""bench/scale.py works (CI runs it only at a small N: it is a benchmark, not a timed test).

What is checked is what the benchmark itself must get right at any N: every client of
both kinds served, the figures reported, and nothing left behind on the server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_lab_prerequisites

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_the_scale_benchmark_runs_at_a_small_n() -> None:
    require_lab_prerequisites()
    result = subprocess.run(
        [sys.executable, "bench/scale.py", "--sessions", "4", "--rounds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "storm: tunhelper" in out and "(4/4 served)" in out, out
    assert "PSS per session: tunhelper's own" in out, out
    assert "every client served: PASS" in out, out
    assert "nothing left behind: PASS" in out, out
