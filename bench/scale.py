"""Many held sessions on one sshd: memory, announce, release and a connect storm.

Run as root from the repository: ``.venv/bin/python bench/scale.py [--sessions 100 300 1000]``.
One real sshd in a network namespace (tests/lab.py, ``MaxStartups`` raised to the
storm's size), two sets of N keys: one whose forced command is tunhelper, one whose
forced command is the guide's static command, each key with its own peer address
(``ip addr add GW peer ADDR dev "$SSH_TUNNEL"; ip link set "$SSH_TUNNEL" up; echo ADDR``).
For each N, in one run, each side in turn:

- **storm**: N ``ssh -w any`` started at once; the time until the last address arrives,
  and how many were served;
- **memory**: with the N held, PSS (``/proc/PID/smaps_rollup``) of every process in
  the server's namespace, split into sshd's (its listener and session processes) and
  everything else, which is tunhelper's (none for the static command, whose shell has
  exited); each divided by N;
- **announce one more** (with N tunhelper sessions held): an extra tunhelper key and an
  extra static key connect in turn, ``--rounds`` times each; median time until the
  address is read;
- **release**: after each of those, the time from closing the client until the server
  has given everything back (tunhelper: the lease released and the device gone; static:
  the device gone);
- **left behind**: after all N leave, no active lease, no tun device, no process but
  sshd's listener in the server's namespace, no nftables chain.

Every figure is also given as a ratio to the static command's in the same run, since
the machine may be shared. Issue 26's targets: tunhelper's own PSS at most 1.0 MB per
session at N = 1,000; announce at most 1.2x; storm at most 1.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab import Lab, Session, missing_prerequisites, run, wait_until  # noqa: E402

POOL = "10.64.0.0/16"
STATIC_NET = "10.65"  # the static keys' peers: 10.65.X.Y, gateway 10.65.0.1
TARGETS = {"pss_kb": 1024, "announce": 1.2, "storm": 1.3}
# Waits in the server's namespace (its /sys shows its devices), timed on CLOCK_MONOTONIC,
# which is the same clock in every namespace.
GONE = """
import os, sys, time
while os.path.exists(f"/sys/class/net/{sys.argv[1]}"):
    time.sleep(0.005)
print(time.monotonic())
"""


def static_command(index: int) -> str:
    peer = f"{STATIC_NET}.{1 + index // 250}.{1 + index % 250}"
    return (
        f'ip addr add {STATIC_NET}.0.1 peer {peer} dev "$SSH_TUNNEL"; '
        f'ip link set "$SSH_TUNNEL" up; echo {peer}'
    )


class Keys:
    """N keys of one kind, authorized on the lab's server, used from one client namespace."""

    def __init__(self, lab: Lab, kind: str, count: int) -> None:
        self.lab, self.kind = lab, kind
        self.client = lab.clients[0]
        self.paths = [lab.dir / f"key-{kind}-{i}" for i in range(count)]
        for start in range(0, count, 50):  # ssh-keygen 50 at a time: a busy machine is slow
            batch = [
                subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(p)])
                for p in self.paths[start : start + 50]
            ]
            if any(k.wait() != 0 for k in batch):
                raise SystemExit("ssh-keygen failed")
        for i, path in enumerate(self.paths):
            public = Path(f"{path}.pub").read_text().strip()
            lab.authorize(public, command=static_command(i) if kind == "static" else None)

    def connect(self, i: int) -> Session:
        argv = self.client.ssh_argv()
        argv[argv.index("-i") + 1] = str(self.paths[i])
        session = Session(self.client, argv)
        self.client.sessions.append(session)
        return session


def active_leases(lab: Lab) -> list[tuple[str, str]]:
    """(address, device) of the active leases, read from the store directly (read-only)."""
    path = os.path.join(lab.state_dir, "leases.sqlite3")
    if not os.path.exists(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT address, device FROM leases WHERE state = 'active'").fetchall()
    finally:
        db.close()
    return rows


def storm(keys: Keys, count: int) -> tuple[float, list[Session], int]:
    """All at once; the time until the last address was read, and how many were served."""
    start = time.monotonic()
    sessions = [keys.connect(i) for i in range(count)]
    served = 0
    for s in sessions:
        remaining = max(0.1, start + 60 + count * 1.0 - time.monotonic())
        served += s.read_address(timeout=remaining) is not None
    return time.monotonic() - start, sessions, served


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0  # gone, or a zombie


def server_processes(lab: Lab) -> dict[str, list[int]]:
    """Pids in the server's namespace: sshd's (by executable) and everything else."""
    found: dict[str, list[int]] = {"sshd": [], "other": []}
    for pid in lab.server_pids():
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            continue
        found["sshd" if exe.startswith("sshd") else "other"].append(pid)
    return found


def memory(lab: Lab, count: int) -> dict[str, float]:
    procs = server_processes(lab)
    return {
        "sshd_kb": sum(pss_kb(p) for p in procs["sshd"]) / count,
        "tunhelper_kb": sum(pss_kb(p) for p in procs["other"]) / count,
        "other_processes": len(procs["other"]),
    }


def device_of(lab: Lab, address: str) -> str | None:
    for name, infos in lab.server_addresses().items():
        if any(a.get("address") == address for a in infos):
            return name
    return None


def one_more(lab: Lab, keys: Keys, index: int) -> tuple[float, float]:
    """Announce time of one extra session, then its release time (to everything given back)."""
    start = time.monotonic()
    session = keys.connect(index)
    address = session.read_address(timeout=60)
    took = time.monotonic() - start
    if address is None:
        raise SystemExit(f"{keys.kind}: the extra session was not served: {session.stderr()}")
    device = device_of(lab, address)
    waiter = subprocess.Popen(
        ["ip", "netns", "exec", lab.server_ns, sys.executable, "-c", GONE, str(device)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # the waiter is running
    closed = time.monotonic()
    session.close()
    gone = float(waiter.communicate(timeout=60)[0])
    if keys.kind == "tunhelper":
        if not wait_until(lambda: address not in dict(active_leases(lab)), 60, 0.005):
            raise SystemExit(f"the extra session's lease {address} was not released")
        gone = max(gone, time.monotonic())
    return took, gone - closed


def leave(lab: Lab, sessions: list[Session]) -> float:
    """Close every client; the time until the server holds nothing of theirs."""
    start = time.monotonic()
    for s in sessions:
        s.close()
    # what is still there at the end is reported with the figures, not instead of them
    wait_until(lambda: not left_behind(lab), 120 + len(sessions) * 0.2, 0.2)
    return time.monotonic() - start


def left_behind(lab: Lab) -> list[str]:
    found = [f"lease {a}" for a, _ in active_leases(lab)]
    found += [f"device {d}" for d in lab.server_tun_devices()]
    procs = server_processes(lab)
    found += [f"process {p}" for p in procs["other"] if pss_kb(p)]  # a zombie is gone
    found += [f"sshd {p}" for p in procs["sshd"] if p != lab.sshd.pid and pss_kb(p)]
    nft = run("nft", "-j", "list", "chains", "netdev", ns=lab.server_ns, check=False).stdout
    if nft.strip():
        found += [
            f"chain {x['chain']['name']}" for x in json.loads(nft)["nftables"] if "chain" in x
        ]
    return found


def side(lab: Lab, keys: Keys, count: int, extra: list[Keys], rounds: int) -> dict:
    """One kind's storm of ``count``, its memory held, extra rounds, and its leaving."""
    took, sessions, served = storm(keys, count)
    progress(f"{keys.kind}: storm of {count}: {served} served in {took:.1f} s")
    if served < count:
        failed = next(s for s in sessions if s.address is None)
        progress(f"  first one not served said: {failed.stderr().strip()[-300:]!r}")
    held = (
        (lambda: len(lab.server_tun_devices()) >= served)
        if keys.kind == "static"
        else (lambda: len(active_leases(lab)) >= served)
    )
    if not wait_until(held, 60, 0.2):
        raise SystemExit(f"{keys.kind}: the held sessions did not settle")
    time.sleep(2)  # every helper has become what holds its session
    found = {"storm_s": took, "served": served, **memory(lab, count)}
    found["rounds"] = {k.kind: [] for k in extra}
    for _ in range(rounds):
        for k in extra:
            found["rounds"][k.kind].append(one_more(lab, k, count))
    progress(f"{keys.kind}: {json.dumps(found)}")
    found["leave_s"] = leave(lab, sessions)
    found["left_behind"] = left_behind(lab)
    progress(f"{keys.kind}: all left in {found['leave_s']:.1f} s; left: {found['left_behind']}")
    return found


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def measure(count: int, rounds: int) -> dict:
    """One lab: the static command's side first, then tunhelper's, with N held each."""
    sshd = {"MaxStartups": str(count + 100), "MaxSessions": "10"}
    with Lab(["--pool", POOL], sshd_options=sshd) as lab:
        lab.add_client("scale")
        static, helper = Keys(lab, "static", count + 1), Keys(lab, "tunhelper", count + 1)
        progress(f"N = {count}: {2 * count + 2} keys authorized")
        result = {
            "sessions": count,
            "static": side(lab, static, count, [], 0),
            "tunhelper": side(lab, helper, count, [helper, static], rounds),
        }
        result["left_behind"] = result["static"]["left_behind"] + result["tunhelper"]["left_behind"]
    return result


def report(r: dict) -> list[str]:
    """Lines for one N, and whether every target is met (the targets are for N >= 1000)."""
    n, st, th = r["sessions"], r["static"], r["tunhelper"]
    ann = {k: statistics.median(t for t, _ in v) for k, v in th["rounds"].items()}
    rel = {k: statistics.median(x for _, x in v) for k, v in th["rounds"].items()}
    lines = [
        f"N = {n}",
        f"  storm: tunhelper {th['storm_s']:.1f} s ({th['served']}/{n} served), "
        f"static {st['storm_s']:.1f} s ({st['served']}/{n}): "
        f"ratio {th['storm_s'] / st['storm_s']:.2f}",
        f"  PSS per session: tunhelper's own {th['tunhelper_kb']:.0f} kB "
        f"({th['other_processes']} processes), sshd's {th['sshd_kb']:.0f} kB; "
        f"static: sshd's {st['sshd_kb']:.0f} kB, other {st['tunhelper_kb']:.0f} kB",
        f"  announce one more: tunhelper {ann['tunhelper'] * 1000:.0f} ms, static "
        f"{ann['static'] * 1000:.0f} ms: ratio {ann['tunhelper'] / ann['static']:.2f} "
        f"(medians of {len(th['rounds']['static'])})",
        f"  release: tunhelper {rel['tunhelper'] * 1000:.0f} ms, static "
        f"{rel['static'] * 1000:.0f} ms: ratio {rel['tunhelper'] / rel['static']:.2f}",
        f"  all leave: tunhelper {th['leave_s']:.1f} s, static {st['leave_s']:.1f} s; "
        f"left behind: {r['left_behind'] or 'nothing'}",
    ]
    return lines


def verdict(r: dict) -> list[str]:
    th, st = r["tunhelper"], r["static"]
    ann = {k: statistics.median(t for t, _ in v) for k, v in th["rounds"].items()}
    checks = {
        "tunhelper's PSS per session <= 1.0 MB": th["tunhelper_kb"] <= TARGETS["pss_kb"],
        "announce <= 1.2x": ann["tunhelper"] / ann["static"] <= TARGETS["announce"],
        "storm <= 1.3x": th["storm_s"] / st["storm_s"] <= TARGETS["storm"],
        "every client served": th["served"] == st["served"] == r["sessions"],
        "nothing left behind": not r["left_behind"],
    }
    return [f"  {name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--rounds", type=int, default=5, help="extra sessions of each kind")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    missing = missing_prerequisites()
    if missing:
        print(f"scale: this machine lacks {', '.join(missing)} (run tools/install.sh)")
        return 1
    # ended from a background job: unwind, so the lab is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("scale: terminated"))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # sshd inherits this: each unauthenticated connection costs its listener descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    results = []
    for count in args.sessions:
        load = os.getloadavg()[0]
        r = measure(count, args.rounds)
        r["load_before"] = load
        results.append(r)
        print(f"(load average before: {load:.1f})")
        print("\n".join(report(r) + verdict(r)), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
