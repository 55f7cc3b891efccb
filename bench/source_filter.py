"""The per-packet cost of source validation: one session, filter on and off in turn.

Run as root from the repository: ``.venv/bin/python bench/source_filter.py [--tap]``.
A real sshd and ``tunhelper connect`` at the default MTU, as ``bench/throughput.py``;
iperf3 client -> gateway, alternating runs with the session's nftables chain in place
and removed as its teardown removes it (then loaded again with the session's own
sources). Pairing the runs in one session keeps a busy machine's noise out of the
comparison, which two separate before/after runs of ``throughput.py`` cannot: the
verdict is the median of the pairs' ratios. Issue target: at most 5% drop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import iperf  # noqa: E402
from tests.lab import Lab, missing_prerequisites, run  # noqa: E402

GUARD = """
import sys
from tunhelper import platform
device = platform.device_info(sys.argv[1])
platform.guard_link(device, sys.argv[3:], sys.argv[2] or None)
"""
# Off as the session's own teardown does it: chain, sets and the tap port's pins.
UNGUARD = """
import sys
from tunhelper import platform
platform.unguard_link(platform.device_info(sys.argv[1]))
"""


def chains(lab: Lab) -> list[str]:
    out = run("nft", "-j", "list", "table", "netdev", "tunhelper", ns=lab.server_ns).stdout
    return [x["chain"]["name"] for x in json.loads(out)["nftables"] if "chain" in x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="iperf3 run length (default 4)")
    parser.add_argument("--pairs", type=int, default=4, help="on/off pairs (default 4)")
    parser.add_argument("--tap", action="store_true", help="measure a tap link instead of tun")
    args = parser.parse_args()
    missing = missing_prerequisites() + [t for t in ("iperf3", "nft") if not shutil.which(t)]
    if missing:
        print(f"source_filter: this machine lacks {', '.join(missing)}")
        return 1
    with Lab(["--pool", "192.168.3.0/24"]) as lab:
        client = lab.add_client()
        conn = client.tunhelper_connect("--json", *(["--tap"] if args.tap else []))
        status = json.loads(conn.status() or "{}")
        if not status:
            raise SystemExit(f"connect failed: {conn.stderr()}")
        (lease,) = lab.active_leases()
        device = lease["device"]
        bridge = ""
        if args.tap:
            (link,) = json.loads(run("ip", "-j", "link", "show", device, ns=lab.server_ns).stdout)
            bridge = link["master"]
        (chain,) = chains(lab)
        on, off = [], []
        for _ in range(args.pairs):
            on.append(iperf(lab, client, args.seconds))
            python = sys.executable
            run(python, "-c", UNGUARD, device, ns=lab.server_ns)
            assert chain not in chains(lab)
            off.append(iperf(lab, client, args.seconds))
            run(python, "-c", GUARD, device, bridge, f"{status['address']}/32", ns=lab.server_ns)
        mode = "tap" if args.tap else "tun"
        print(f"{mode} MTU {status['mtu']}: filter on  {' '.join(f'{x:.0f}' for x in on)} Mbit/s")
        print(f"{mode} MTU {status['mtu']}: filter off {' '.join(f'{x:.0f}' for x in off)} Mbit/s")
        paired = statistics.median(a / b for a, b in zip(on, off))
        print(
            f"ratio of the medians, on / off: {statistics.median(on) / statistics.median(off):.3f}"
        )
        verdict = "PASS" if paired >= 0.95 else "FAIL"
        print(f"median of the pairs' on / off: {paired:.3f} (target >= 0.95: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
