"""Time to announce: ``ssh -w any`` until the client reads its address.

Run as root from the repository: ``.venv/bin/python bench/announce.py``. One real sshd
in a network namespace; one client whose key's forced command is tunhelper, another
whose forced command is the guide's method made dynamic (the baseline):

    ip addr add GW peer ADDR dev "$SSH_TUNNEL"; ip link set "$SSH_TUNNEL" up; echo ADDR

The two are run alternately, each connection closed (and, for tunhelper, its lease
released) before the next; medians are compared. Issue target: ratio <= 1.5.

``--postgresql`` (issue 16) adds a third client whose helper's store is a throwaway
PostgreSQL on this machine (tests/pg.py, over its Unix socket), run in the same
rotation, and prints its ratio to the SQLite helper's time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab import Lab, missing_prerequisites, wait_until  # noqa: E402

BASELINE = (
    'ip addr add 192.168.3.1 peer 192.168.3.2 dev "$SSH_TUNNEL"; '
    'ip link set "$SSH_TUNNEL" up; echo 192.168.3.2'
)


def one(client, lab: Lab | None, settled=None) -> float:
    start = time.perf_counter()
    session = client.connect()
    address = session.read_address(timeout=30)
    took = time.perf_counter() - start
    if address is None:
        raise SystemExit(f"no address from {client.name}: {session.stderr()}")
    session.close()
    if settled is not None:  # let the helper finish before the next round
        wait_until(settled, 10)
    elif lab is not None:
        wait_until(lambda: not lab.active_leases(), 10)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="connections of each (default 20)")
    parser.add_argument("--postgresql", action="store_true", help="also the PostgreSQL store")
    args = parser.parse_args()
    if args.postgresql:
        return with_postgresql(args.rounds)
    missing = missing_prerequisites()
    if missing:
        print(f"announce: this machine lacks {', '.join(missing)} (run tools/install.sh as root)")
        return 1
    with Lab(["--pool", "192.168.3.0/24"]) as lab:
        helper = lab.add_client("helper")
        guide = lab.add_client("guide", command=BASELINE)
        one(helper, lab), one(guide, None)  # warm caches: the first of each is not measured
        times: dict[str, list[float]] = {"tunhelper": [], "baseline": []}
        for _ in range(args.rounds):
            times["tunhelper"].append(one(helper, lab))
            times["baseline"].append(one(guide, None))
    for name, values in times.items():
        print(
            f"{name:10} median {statistics.median(values) * 1000:6.0f} ms  "
            f"min {min(values) * 1000:6.0f}  max {max(values) * 1000:6.0f}  (n={len(values)})"
        )
    ratio = statistics.median(times["tunhelper"]) / statistics.median(times["baseline"])
    print(
        f"ratio tunhelper / baseline: {ratio:.2f} (target <= 1.5: "
        f"{'PASS' if ratio <= 1.5 else 'FAIL'})"
    )
    return 0


def with_postgresql(rounds: int) -> int:
    import os

    from tests.pg import PostgresServer, missing

    why = missing_prerequisites() or ([missing()] if missing() else [])
    if why:
        print(f"announce: this machine lacks {', '.join(why)}")
        return 1
    server = PostgresServer().start()
    try:
        with Lab(["--pool", "192.168.3.0/24"]) as lab:
            conf = lab.dir / "pg.conf"
            conf.write_text(f"[store]\nbackend = postgresql\nconninfo = {server.conninfo()}\n")
            os.chmod(conf, 0o600)
            sqlite = lab.add_client("sqlite")
            pg = lab.add_client(
                "pg", helper_args=["--pool", "192.168.4.0/24", "--config", str(conf)]
            )
            guide = lab.add_client("guide", command=BASELINE)

            def pg_settled() -> bool:
                rows = server.sql(
                    "SELECT count(*) FROM leases WHERE state = 'active'", db="tunhelper"
                )
                return rows[0][0] == 0

            one(sqlite, lab), one(pg, None, pg_settled), one(guide, None)  # warm caches
            times: dict[str, list[float]] = {"sqlite": [], "postgresql": [], "baseline": []}
            for _ in range(rounds):
                times["sqlite"].append(one(sqlite, lab))
                times["postgresql"].append(one(pg, None, pg_settled))
                times["baseline"].append(one(guide, None))
    finally:
        server.stop()
    for name, values in times.items():
        print(
            f"{name:10} median {statistics.median(values) * 1000:6.0f} ms  "
            f"min {min(values) * 1000:6.0f}  max {max(values) * 1000:6.0f}  (n={len(values)})"
        )
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"ratio postgresql / sqlite: {med['postgresql'] / med['sqlite']:.2f}")
    print(f"ratio sqlite / baseline: {med['sqlite'] / med['baseline']:.2f}")
    print(f"ratio postgresql / baseline: {med['postgresql'] / med['baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
