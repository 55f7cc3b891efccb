"""Memory of held sessions: PSS of all tunhelper processes of each session.

Run as root from the repository: ``.venv/bin/python bench/held_session.py``. Starts a
real sshd in a network namespace and N ``ssh -w any`` clients, waits until every
session is held, then sums ``Pss`` from ``/proc/PID/smaps_rollup`` over each
session's helper and its descendants. PSS shares pages among the processes that map
them, so N matters: a gateway holds many sessions at once. Issue target: <= 7 MB
(7168 kB) per session.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab import Lab, missing_prerequisites  # noqa: E402

TARGET_KB = 7 * 1024


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def session_pss(helper_pid: int) -> tuple[int, int]:
    """PSS of the helper and everything it started, and how many processes that is."""
    procs = [psutil.Process(helper_pid), *psutil.Process(helper_pid).children(recursive=True)]
    return sum(pss_kb(p.pid) for p in procs), len(procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10, help="sessions held at once")
    args = parser.parse_args()
    missing = missing_prerequisites()
    if missing:
        print(f"held_session: this machine lacks {', '.join(missing)} (run tools/install.sh)")
        return 1
    with Lab(["--pool", "192.168.3.0/24"]) as lab:
        clients = [lab.add_client() for _ in range(args.sessions)]
        sessions = [c.connect() for c in clients]
        if None in [s.read_address(timeout=60) for s in sessions]:
            raise SystemExit("a session was not served")
        time.sleep(1)  # let every helper settle into holding
        leases = lab.active_leases()
        measured = [session_pss(lease["pid"]) for lease in leases]
        cmdline = " ".join(psutil.Process(leases[0]["pid"]).cmdline()[:4])
    values = [kb for kb, _ in measured]
    print(f"{len(values)} sessions held; processes per session: {measured[0][1]} ({cmdline} ...)")
    print(f"PSS per session: median {statistics.median(values)} kB, max {max(values)} kB")
    verdict = "PASS" if max(values) <= TARGET_KB else "FAIL"
    print(f"target <= {TARGET_KB} kB per session: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
