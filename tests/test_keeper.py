"""The keeper, on the real exec path: every kind of thing a session takes goes into its
one record, survives ``exec`` into the keeper, and is given back when the session ends.

Runs in a network namespace of its own: a real tun (point-to-point addresses, a client
network route, the source filter), a real tap joined to a bridge tunhelper creates, a
real lease in a real SQLite store, and a down hook. A stand-in for sshd's session
process is a ``sleep``; ending it must make the keeper give everything back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.conftest import require_lab_prerequisites
from tests.lab import run, wait_until
from tunhelper.store import RELEASED, open_store

pytestmark = pytest.mark.e2e

SETUP = textwrap.dedent(
    """
    import json, subprocess, sys
    from tunhelper import platform
    from tunhelper.link import configure
    from tunhelper.pool import Pool
    from tunhelper.link.bridge import BridgePlan
    from tunhelper.server.keeper import become_keeper
    from tunhelper.server.teardown import Configured, DownHook, Guarded, Leased, Taken
    from tunhelper.store import Request, liveness

    state, hook = sys.argv[1], sys.argv[2]
    sleeper = subprocess.Popen(["sleep", "600"])
    start = liveness.process_start(sleeper.pid)
    tun, tap = platform.device_info("thktun0"), platform.device_info("thktap0")
    taken = Taken(state, 5.0)
    pool = Pool.parse("192.168.77.0/24")
    owner = liveness.current(sleeper.pid, start, tun.name)
    lease = taken.store.get().allocate(
        Request(pool.name, pool.first, pool.last, pool.excluded([]), "alice", owner,
                pool.address),
        liveness.Liveness(),
    )
    taken.add(Leased(lease))
    taken.add(Configured(configure.point_to_point(tun, "192.168.77.1", lease.address, 1500)))
    taken.add(Configured(configure.client_networks(tun, ["10.77.0.0/24"], state)))
    platform.guard_link(tun, [lease.address, "10.77.0.0/24"], None)
    taken.add(Guarded(tun))
    plan = BridgePlan("thkbr0", managed=True, address="192.168.78.1", prefixlen=24)
    taken.add(Configured(configure.bridge_port(tap, plan, 1500, state)))
    taken.add(DownHook([hook], {"device": tun.name}, 5.0, tun))
    taken.store.close()
    record = {**taken.record(), "session": {"device": tun._asdict(),
              "session_pid": sleeper.pid, "session_start": start}}
    print(json.dumps({"sleeper": sleeper.pid}), flush=True)
    become_keeper(record, ["test"])
    sys.exit("the keeper did not start")
    """
)


def test_every_kind_of_taken_thing_is_given_back_by_the_keeper(tmp_path: Path) -> None:
    require_lab_prerequisites()
    from tunhelper.server.teardown import KINDS

    assert set(KINDS) == {"lease", "configured", "down", "guard"}, "add the new kind below"
    ns = f"thk{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    hook = tmp_path / "down.sh"
    out = tmp_path / "down.out"
    hook.write_text(f'#!/bin/sh\necho "$TUNHELPER_REASON" > {out}\n')
    hook.chmod(0o755)
    run("ip", "netns", "add", ns)
    keeper = None
    try:
        for name, mode in (("thktun0", "tun"), ("thktap0", "tap")):
            run("ip", "tuntap", "add", "dev", name, "mode", mode, ns=ns)
        run("ip", "link", "set", "lo", "up", ns=ns)
        keeper = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SETUP, str(state), str(hook)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = keeper.stdout.readline()
        assert line, keeper.stderr.read()
        sleeper = json.loads(line)["sleeper"]

        def configured() -> bool:
            addrs = json.loads(run("ip", "-j", "addr", "show", "thktun0", ns=ns).stdout)
            return any(a["local"] == "192.168.77.1" for a in addrs[0]["addr_info"])

        assert wait_until(configured, 10)
        assert "thktun0" in run("nft", "list", "table", "netdev", "tunhelper", ns=ns).stdout
        routes = run("ip", "route", "show", "10.77.0.0/24", ns=ns).stdout
        assert "thktun0" in routes
        assert "thkbr0" in run("ip", "link", "show", "master", "thkbr0", ns=ns).stdout or (
            "thktap0" in run("ip", "link", "show", "master", "thkbr0", ns=ns).stdout
        )
        ps = run("ps", "-o", "args=", "-p", str(keeper.pid), check=False).stdout
        assert "tunhelper.server.keeper" in ps, ps  # the real exec happened, same pid

        os.kill(sleeper, 9)  # sshd's session process ends
        keeper.wait(30)
        assert keeper.returncode == 0, keeper.stderr.read()
        addrs = json.loads(run("ip", "-j", "addr", "show", "thktun0", ns=ns).stdout)
        assert not addrs[0]["addr_info"], addrs
        assert run("ip", "route", "show", "10.77.0.0/24", ns=ns).stdout.strip() == ""
        assert run("ip", "link", "show", "thkbr0", ns=ns, check=False).returncode != 0
        chains = run("nft", "list", "table", "netdev", "tunhelper", ns=ns, check=False).stdout
        assert "thktun0" not in chains, chains
        store = open_store(str(state))
        try:
            assert [x.state for x in store.leases()] == [RELEASED]
        finally:
            store.close()
        assert "ended" in out.read_text()
    finally:
        if keeper is not None and keeper.poll() is None:
            keeper.kill()
        for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        run("ip", "netns", "del", ns, check=False)
