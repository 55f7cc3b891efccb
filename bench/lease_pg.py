"""The lease engine on PostgreSQL: ``bench/lease_engine.py --postgresql`` (as root).

A throwaway PostgreSQL server on this machine (tests/pg.py), then:

(a) Throughput: ``--procs`` processes (default 150) standing for 3 gateways (hosts
    gw0, gw1, gw2 in turn) share one pool; each repeats allocate (a new client every
    time), O_EXCL marker file named after the address, unmark, release, for
    ``--seconds``; on an empty /24 and on a /16 that is 90% held (by leases of the
    three gateways, with markers). Then the same processes against one SQLite store:
    the single-gateway figure of the same run. Target: >= 1000 cycles/s on
    PostgreSQL, zero duplicates, none of the cycles' leases left active.
(b) Cost of one allocation for a new client (median of ``--samples``, a connection
    already open, each followed by its release) in the /16 at 90% against the empty
    /24, interleaved. Target: ratio <= 1.5.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pg import PostgresServer, missing  # noqa: E402
from tunhelper.pool import Pool  # noqa: E402
from tunhelper.store import ACTIVE, POSTGRESQL, Owner, Request, StoreConfig, open_store  # noqa: E402

GATEWAYS = 3
PRELOADED = "held-"


def request(pool: Pool, client: str, host: str) -> Request:
    return Request(
        pool=pool.name,
        first=pool.first,
        last=pool.last,
        excluded=pool.excluded([]),
        client=client,
        owner=Owner(host, "boot", os.getpid(), 1.0, os.getpid(), 1.0, "tun0"),
        address_of=pool.address,
    )


def alive(_lease) -> bool:
    return True


def preload(server: PostgresServer, pool: Pool, fraction: float) -> int:
    """Hold the lowest ``fraction`` of the pool by live leases of the three gateways."""
    held = int((pool.last - pool.first + 1) * fraction)
    if held == 0:
        return 0
    top = pool.first + held - 1
    network = pool.name.split("/")[0]
    server.sql(
        f"INSERT INTO leases SELECT '{pool.name}', s, host('{network}'::inet + s), "  # noqa: S608
        f"'{PRELOADED}' || s, "
        "'active', 'tok' || s, s, NULL, 'gw' || (s % 3), 'boot', 1, 1.0, 1, 1.0, 'tun0', 1e12 "
        f"FROM generate_series({pool.first}, {top}) s",
        db="tunhelper",
    )
    server.sql(
        f"INSERT INTO pools VALUES ('{pool.name}', {top}) "
        f"ON CONFLICT (pool) DO UPDATE SET high_water = {top}",
        db="tunhelper",
    )
    return held


def _cycles(cfg, state, pool_name, marks, index, seconds, barrier, out) -> None:
    pool = Pool.parse(pool_name)
    store = open_store(state, 60, cfg)
    host = f"gw{index % GATEWAYS}"
    done, errors = 0, []
    try:
        store.leases_of(["nobody"], [pool.name])  # connect before the start, as a helper has
    except Exception as e:  # noqa: BLE001
        errors.append(str(e))
    barrier.wait()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and not errors:
            lease = store.allocate(request(pool, f"p{index}-c{done}", host), alive)
            mark = os.path.join(marks, lease.address)
            try:
                os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                errors.append(f"{lease.address} handed out while held")
                break
            os.unlink(mark)
            if not store.release(lease):
                errors.append(f"{lease.address} could not be released by its holder")
            done += 1
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the run
        errors.append(f"{type(e).__name__}: {e}")
    store.close()
    out.put((index, done, errors))


def throughput(cfg, pool: Pool, procs: int, seconds: float, tmp: Path, label: str) -> dict:
    state, marks = tmp / f"state-{label}", tmp / f"marks-{label}"
    marks.mkdir()
    store = open_store(str(state), 10, cfg)
    for lease in store.all_leases():
        if lease.state == ACTIVE:
            (marks / lease.address).touch()
    store.close()
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    workers = [
        ctx.Process(
            target=_cycles, args=(cfg, str(state), pool.name, str(marks), i, seconds, barrier, out)
        )
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=seconds + 300) for _ in workers]
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join(30)
    store = open_store(str(state), 10, cfg)
    left = [
        x for x in store.all_leases() if x.state == ACTIVE and not x.client.startswith(PRELOADED)
    ]
    store.close()
    cycles = sum(r[1] for r in results)
    return {
        "rate": cycles / elapsed,
        "cycles": cycles,
        "errors": [e for r in results for e in r[2]],
        "left": len(left),
    }


def cost(cfg, server, samples: int, tmp: Path) -> tuple[float, float]:
    """Median seconds of one allocate (then release) in an empty /24 and a 90% /16."""
    small, large = Pool.parse("10.50.0.0/24"), Pool.parse("10.60.0.0/16")
    preload(server, large, 0.9)
    store = open_store(str(tmp / "state-cost"), 10, cfg)
    times: dict[str, list[float]] = {small.name: [], large.name: []}
    for i in range(samples + 1):
        for pool in (small, large):
            t0 = time.perf_counter()
            lease = store.allocate(request(pool, f"cost-{i}", "gw0"), alive)
            took = time.perf_counter() - t0
            store.release(lease)
            if i:  # the first of each builds caches: not measured
                times[pool.name].append(took)
    store.close()
    return statistics.median(times[small.name]), statistics.median(times[large.name])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run(procs: int, seconds: float, samples: int) -> int:
    why = missing()
    if why is not None or os.geteuid() != 0:
        print(f"lease_engine --postgresql: needs root and {why or 'nothing else'}")
        return 1
    ok = True
    server = PostgresServer().start()
    try:
        cfg = StoreConfig(POSTGRESQL, server.conninfo())
        with tempfile.TemporaryDirectory(prefix="tunhelper-bench-") as t:
            tmp = Path(t)
            open_store(str(tmp), 10, cfg).close()  # the schema
            # A freshly started server first builds its shared caches; one untimed
            # round on a pool of its own keeps that out of the first case.
            throughput(cfg, Pool.parse("10.9.0.0/24"), procs, 1.0, tmp, "warm-up")
            print(f"(a) throughput, {procs} processes as {GATEWAYS} gateways, {seconds:g} s each")
            for name, pool, fraction in (
                ("empty /24", Pool.parse("10.1.0.0/24"), 0.0),
                ("/16 at 90%", Pool.parse("10.2.0.0/16"), 0.9),
            ):
                preload(server, pool, fraction)
                r = throughput(cfg, pool, procs, seconds, tmp, f"pg-{pool.first}-{fraction}")
                good = r["rate"] >= 1000 and not r["errors"] and not r["left"]
                ok &= good
                print(
                    f"  PostgreSQL {name:10} {r['rate']:7.0f} allocate+release/s  "
                    f"duplicates/errors {len(r['errors'])}  left active {r['left']}  "
                    f"{verdict(good)}"
                )
                for e in r["errors"][:3]:
                    print(f"    {e}")
            r = throughput(None, Pool.parse("10.3.0.0/24"), procs, seconds, tmp, "sqlite")
            print(
                f"  SQLite     empty /24  {r['rate']:7.0f} allocate+release/s  "
                f"duplicates/errors {len(r['errors'])}  left active {r['left']}  "
                "(one gateway, for comparison)"
            )
            small, large = cost(cfg, server, samples, tmp)
            ratio = large / small
            ok &= ratio <= 1.5
            print(
                f"(b) one allocation, median of {samples}: empty /24 {small * 1000:.2f} ms, "
                f"/16 at 90% {large * 1000:.2f} ms, ratio {ratio:.2f} (<= 1.5: "
                f"{verdict(ratio <= 1.5)})"
            )
    finally:
        server.stop()
    return 0 if ok else 1
