"""Faults, end to end with a real sshd: whatever breaks, nothing is lost and nothing is left.

Each test breaks one thing (a process killed at a bad moment, the client's network
cut, a reboot, the lease database locked, read-only, full or corrupt) and then checks
what docs/reliability.md records: what the client saw, and that no lease, device,
bridge or process was left behind, or, where a SIGKILL makes it unavoidable, that the
one record left holds nothing and is reclaimed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from tests.lab import Lab, run, tunhelper_command, wait_until
from tests.lab import refused as lab_refused
from tests.test_e2e import connected, lease_of

ONE_ADDRESS = ["--pool", "192.168.3.0/30"]  # .2 only: every fault must give it back
DB = "leases.sqlite3"


# -- what is left ------------------------------------------------------------------------


def helper_processes(lab: Lab) -> list[psutil.Process]:
    """Helpers and keepers of this lab: their command lines name its state directory."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if lab.state_dir in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


def kill_helpers(lab: Lab) -> int:
    killed = 0
    for p in helper_processes(lab):
        try:
            p.kill()
            killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


def server_devices(lab: Lab) -> list[str]:
    """tun/tap devices and bridges in the server namespace, the lab's own excepted."""
    return [d for d in lab.server_links() if d.startswith(("tun", "tap", "thbr"))]


def configured(lab: Lab) -> list[str]:
    """Server tun/tap devices that carry an IPv4 address or sit on a bridge."""
    out = json.loads(run("ip", "-j", "addr", ns=lab.server_ns).stdout)
    return [
        link["ifname"]
        for link in out
        if link["ifname"].startswith(("tun", "tap"))
        and (any(a["family"] == "inet" for a in link.get("addr_info", [])) or "master" in link)
    ]


def assert_clean(lab: Lab, timeout: float = 10) -> None:
    """No live lease, no device, no bridge, no helper, no process but sshd's listener."""
    assert wait_until(lambda: not helper_processes(lab), timeout), helper_processes(lab)
    assert wait_until(lambda: not server_devices(lab), timeout), server_devices(lab)
    assert lab.sshd is not None
    assert wait_until(lambda: lab.server_pids() == [lab.sshd.pid], timeout), lab.server_pids()
    assert [x for x in lab.leases() if x["state"] == "active"] == []


def refused(session, timeout: float = 20) -> str:
    return lab_refused(session, timeout)


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- processes killed ----------------------------------------------------------------------


def test_sigkill_while_configuring_holds_the_address_then_gives_it_back(make_lab) -> None:
    """The helper is stopped between lease and configuration (the test holds the bridge
    lock a tap session needs), then killed: nothing announced, nothing configured; the
    address stays taken while the session lives and is reclaimed after."""
    lab = make_lab(ONE_ADDRESS)
    os.makedirs(lab.state_dir, mode=0o700)
    victim, later = lab.add_client("victim"), lab.add_client("later")
    with open(os.path.join(lab.state_dir, "bridges.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        session = victim.connect("-o", "Tunnel=ethernet")
        assert wait_until(lambda: lab.leases() != [], 15)
        (lease,) = lab.leases()
        assert lease["state"] == "active"
        assert configured(lab) == []  # waiting for the lock: not configured yet
        os.kill(lease["pid"], signal.SIGKILL)
        assert wait_until(lambda: not psutil.pid_exists(lease["pid"]), 5)
    assert session.read_address(1) is None  # never announced
    assert configured(lab) == []
    assert lease_of(lab, "192.168.3.2")["state"] == "active"  # its session still lives

    session.close()
    assert wait_until(lambda: not server_devices(lab), 5)
    assert lease_of(lab, "192.168.3.2")["state"] == "stale"  # holds nothing now
    again = later.connect("-o", "Tunnel=ethernet")
    assert again.read_address() == "192.168.3.2"  # reclaimed: the pool has no other
    again.close()
    assert_clean(lab)


ROUNDS = 20


def test_helper_sigkilled_at_random_moments_leaves_only_what_is_reclaimed(make_lab) -> None:
    """SIGKILL anywhere from discovery to holding, ROUNDS times, on a one-address pool.

    Each round's address must be reclaimable by the next: a leak would exhaust the pool.
    """
    lab = make_lab([*ONE_ADDRESS, "--wait", "1"])
    client = lab.add_client()
    rng = random.Random(20240607)
    outcomes = {"announced": 0, "not announced": 0, "no helper yet": 0}
    for _ in range(ROUNDS):
        session = client.connect()
        time.sleep(rng.uniform(0.0, 1.0))
        killed = kill_helpers(lab)
        address = session.read_address(0.5)
        outcomes[
            "no helper yet" if not killed else "announced" if address else "not announced"
        ] += 1
        session.close()
        assert wait_until(lambda: not server_devices(lab), 10), server_devices(lab)
        assert wait_until(lambda: not helper_processes(lab), 10)
        assert [x["state"] for x in lab.leases() if x["state"] == "active"] == []
    final = client.connect()
    assert final.read_address() == "192.168.3.2", final.stderr()  # still reclaimable
    final.close()
    assert_clean(lab)
    print(f"helper SIGKILL at random moments, {ROUNDS} rounds: {outcomes}")


def test_client_gone_at_random_moments_of_setup_leaves_nothing(make_lab) -> None:
    """The client's ssh killed while the helper is setting up: the helper must clean up."""
    lab = make_lab([*ONE_ADDRESS, "--wait", "1"])
    client = lab.add_client()
    rng = random.Random(1337)
    for _ in range(ROUNDS):
        session = client.connect()
        time.sleep(rng.uniform(0.0, 0.6))
        session.proc.kill()
        session.close()
        assert wait_until(lambda: not helper_processes(lab), 10), helper_processes(lab)
        assert wait_until(lambda: not server_devices(lab), 10), server_devices(lab)
        states = {x["state"] for x in lab.leases()}
        assert states <= {"released"}, lab.leases()  # released by its helper, never stale
    assert_clean(lab)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_sshd_session_process_killed_ends_everything(make_lab, sig) -> None:
    lab = make_lab()
    session = connected(lab.add_client())
    lease = lease_of(lab, session.address or "")
    os.kill(lease["session_pid"], sig)
    assert session.wait(10) is not None  # the client's ssh ends too
    assert_clean(lab)
    assert lease_of(lab, session.address or "")["state"] == "released"


def test_sigterm_while_holding_ends_everything_for_many_sessions(make_lab) -> None:
    lab = make_lab()
    sessions = [connected(lab.add_client()) for _ in range(5)]
    for s in sessions:
        os.kill(lease_of(lab, s.address or "")["pid"], signal.SIGTERM)
    for s in sessions:
        assert s.wait(10) is not None
    assert_clean(lab)
    assert {x["state"] for x in lab.leases()} == {"released"}


# -- the network and the machine ----------------------------------------------------------


def test_client_network_cut_ends_the_session_by_client_alive(make_lab) -> None:
    lab = make_lab(sshd_options={"ClientAliveInterval": "1", "ClientAliveCountMax": "2"})
    client = lab.add_client()
    session = connected(client)
    assert session.ping("192.168.3.1")
    run("ip", "link", "set", "eth0", "down", ns=client.ns)
    start = time.monotonic()
    assert wait_until(lambda: not lab.active_leases(), 20)
    took = time.monotonic() - start
    assert took < 15, took  # 2 unanswered probes, 1 s apart, and the unwinding
    assert lease_of(lab, session.address or "")["state"] == "released"
    assert "not responding" in lab.sshd_log_text()
    session.proc.kill()  # the client's own ssh cannot know yet
    assert_clean(lab)
    print(f"network cut: lease released after {took:.1f}s")


def test_reboot_reclaims_every_lease_from_before(make_lab) -> None:
    """A power cut, then rows as a reboot leaves them: old boot id, and (worst case) pids
    that now name live processes with matching start times. Only the boot id tells."""
    lab = make_lab(["--pool", "192.168.3.0/29"])  # five client addresses
    before = [connected(lab.add_client()) for _ in range(5)]
    addresses = sorted(s.address or "" for s in before)
    lab.power_cut()
    for s in before:
        s.close()
    assert lab.sshd is not None
    pid, start = lab.sshd.pid, psutil.Process(lab.sshd.pid).create_time()
    db = sqlite3.connect(os.path.join(lab.state_dir, DB))
    with db:
        db.execute(
            "UPDATE leases SET boot_id = 'before-the-reboot', helper_pid = ?, helper_start = ?,"
            " session_pid = ?, session_start = ? WHERE state = 'active'",
            (pid, start, pid, start),
        )
    db.close()
    assert sorted(x["state"] for x in lab.leases()) == ["stale"] * 5
    after = [connected(lab.add_client()) for _ in range(5)]  # new keys: no sticky claim
    assert sorted(s.address or "" for s in after) == addresses
    # Three tries each: one lost packet on a busy machine is not a broken link.
    assert all(s.ping("192.168.3.1", count=3) for s in after)
    for s in after:
        s.close()
    assert_clean(lab)


# -- the lease database -------------------------------------------------------------------


def test_locked_database_bounded_wait_then_one_clear_line(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/24", "--db-timeout", "1"])
    first = connected(lab.add_client("first"))
    late_client = lab.add_client("late")
    blocker = sqlite3.connect(os.path.join(lab.state_dir, DB), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        start = time.monotonic()
        late = late_client.connect()
        line = refused(late)
        took = time.monotonic() - start
        assert "stayed locked" in line, line
        assert 1.0 <= took < 10, took
        assert len(configured(lab)) == 1  # only the first session's device
        first.close()  # its release waits 1 s too, then gives up: the lease goes stale
        assert wait_until(lambda: not helper_processes(lab), 10)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [(x["address"], x["state"]) for x in lab.leases()] == [("192.168.3.2", "stale")]
    again = connected(lab.clients[0])  # the same client: its own stale lease back
    assert again.address == "192.168.3.2"
    assert connected(late_client).address == "192.168.3.3"
    for s in lab.clients:
        s.close()
    assert_clean(lab)
    print(f"locked database: refused after {took:.1f}s")


def _server_file_state(lab: Lab) -> list[str]:
    """The state directory's files as sshd's helpers see them."""
    out = lab.in_server_mounts("ls", "-A", lab.state_dir).stdout.split()
    return sorted(out)


@pytest.mark.parametrize("database", ["none yet", "existing"])
def test_read_only_state_directory_refuses_and_configures_nothing(make_lab, database) -> None:
    lab = make_lab(ONE_ADDRESS)
    a, b = lab.add_client("a"), lab.add_client("b")
    held = None
    if database == "existing":
        held = connected(a)
    else:
        os.makedirs(lab.state_dir, mode=0o700)
    lab.in_server_mounts("mount", "--bind", lab.state_dir, lab.state_dir)
    lab.in_server_mounts("mount", "-o", "remount,bind,ro", lab.state_dir)
    if held is not None:
        held.close()  # its release cannot be written: the lease goes stale, holding nothing
        assert wait_until(lambda: not helper_processes(lab), 10)
        assert wait_until(lambda: not server_devices(lab), 10)
    line = refused(b.connect())
    print(line)
    assert f"cannot write to state directory {lab.state_dir} (read-only file system)" in line
    assert wait_until(lambda: not server_devices(lab), 10)
    lab.in_server_mounts("umount", lab.state_dir)
    assert connected(b).address == "192.168.3.2"  # reclaimed once writable again
    b.close()
    assert_clean(lab)


@pytest.mark.parametrize("database", ["none yet", "existing"])
def test_full_state_directory_refuses_and_configures_nothing(make_lab, database) -> None:
    lab = make_lab(ONE_ADDRESS)
    a, b = lab.add_client("a"), lab.add_client("b")
    os.makedirs(lab.state_dir, mode=0o700)
    lab.in_server_mounts(
        "mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", lab.state_dir
    )
    if database == "existing":
        first = connected(a)
        first.close()
        assert wait_until(lambda: not helper_processes(lab), 10)
    filler = f"{lab.state_dir}/filler"
    lab.in_server_mounts("dd", "if=/dev/zero", f"of={filler}", "bs=4096", check=False)
    line = refused(b.connect())
    print(line)
    assert "cannot write lease database" in line, line
    assert "full" in line or "no space left" in line, line
    assert wait_until(lambda: not server_devices(lab), 10)
    lab.in_server_mounts("rm", filler)
    served = connected(b)
    assert served.address == "192.168.3.2"
    served.close()
    assert wait_until(lambda: not helper_processes(lab), 10)
    leases = json.loads(
        lab.in_server_mounts(
            tunhelper_command(), "leases", "--json", "--state-dir", lab.state_dir
        ).stdout
    )
    assert [x["state"] for x in leases] == ["released"]
    assert wait_until(lambda: not server_devices(lab), 10)
    assert lab.sshd is not None
    assert wait_until(lambda: lab.server_pids() == [lab.sshd.pid], 10)


def _damage(path: str, how: str) -> None:
    data = bytearray(Path(path).read_bytes())
    if how == "garbage":
        data = bytearray(b"not a lease database " * 400)
    else:  # every page but the first: the header and schema survive, the rows do not
        page = int.from_bytes(data[16:18], "big") or 65536
        for offset in range(page, len(data), page):
            data[offset : offset + page] = os.urandom(len(data[offset : offset + page]))
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["garbage", "pages"])
def test_corrupt_database_refused_untouched_and_doctor_says_what_to_do(make_lab, how) -> None:
    lab = make_lab()
    a, b = lab.add_client("a"), lab.add_client("b")
    for _ in range(3):
        s = connected(a)
        s.close()
        assert wait_until(lambda: not lab.active_leases(), 10)
    path = os.path.join(lab.state_dir, DB)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    db.close()
    _damage(path, how)
    before = digest(path)
    line = refused(b.connect())
    print(line)
    assert "unusable" in line and "left untouched" in line and "tunhelper doctor" in line, line
    assert digest(path) == before
    assert wait_until(lambda: not server_devices(lab), 10)
    doctor = lab.doctor()
    assert doctor.returncode == 1
    (advice,) = [x for x in doctor.stdout.splitlines() if x.startswith("error:")]
    assert f"mv {path} {path}.broken" in advice, doctor.stdout
    assert digest(path) == before
    os.rename(path, f"{path}.broken")  # what doctor said
    for leftover in (f"{path}-wal", f"{path}-shm"):
        if os.path.exists(leftover):
            os.rename(leftover, f"{path}.broken{leftover[len(path) :]}")
    served = connected(b)
    assert served.address == "192.168.3.2"  # a fresh database: no memory, first address
    served.close()
    assert_clean(lab)
