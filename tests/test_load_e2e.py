"""Load, end to end: many clients at once, and many short sessions, leave nothing behind.

What is counted after: leases (active or stale), tun/tap devices and bridges on the
server, processes in the server's and the clients' namespaces, and the open file
descriptors of sshd's listener. docs/reliability.md records the figures.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time

from tests.lab import Lab, run, wait_until
from tests.test_faults_e2e import assert_clean, server_devices

GATEWAY = "192.168.3.1"


def listener_fds(lab: Lab) -> int:
    assert lab.sshd is not None
    return len(os.listdir(f"/proc/{lab.sshd.pid}/fd"))


def lease_state(db_path: str, address: str) -> str | None:
    """Read the store directly (read-only): cheaper than a tunhelper process per poll."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT state FROM leases WHERE address = ?", (address,)).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


def assert_clients_idle(lab: Lab) -> None:
    for client in lab.clients:
        assert wait_until(lambda c=client: not run("ip", "netns", "pids", c.ns).stdout, 10)


def test_a_hundred_clients_at_once_get_a_hundred_configured_addresses(make_lab) -> None:
    lab = make_lab()
    clients = [lab.add_client() for _ in range(100)]
    fds_before = listener_fds(lab)
    start = time.monotonic()
    sessions = [c.connect() for c in clients]  # all at once
    addresses = [s.read_address(timeout=180) for s in sessions]
    took = time.monotonic() - start
    assert None not in addresses, [s.stderr() for s, a in zip(sessions, addresses) if a is None]
    assert len(set(addresses)) == 100

    # Configured on the server: one tun per session, gateway local, the client as peer.
    peers = {
        a["address"]: name
        for name, infos in lab.server_addresses().items()
        if name.startswith("tun")
        for a in infos
        if a["family"] == "inet" and a["local"] == GATEWAY and a["prefixlen"] == 32
    }
    assert set(peers) == set(addresses)
    # ...and carrying traffic: every client pings the gateway through its own tunnel.
    for s in sessions:
        s.configure_client_side()
    pings = [
        subprocess.Popen(
            ["ip", "netns", "exec", s.client.ns, "ping", "-c", "1", "-W", "5", GATEWAY],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for s in sessions
    ]
    assert [p.wait(60) for p in pings] == [0] * 100

    for s in sessions:
        s.close()
    assert_clean(lab, timeout=60)
    assert_clients_idle(lab)
    assert [x for x in lab.leases() if x["state"] != "released"] == []
    assert wait_until(lambda: listener_fds(lab) == fds_before, 10), (fds_before, listener_fds(lab))
    print(f"100 clients at once: all addresses announced in {took:.1f}s")


CLIENTS, CYCLES, TAP_CLIENTS = 20, 25, 5  # 500 sessions; tap ones exercise the bridge


def test_five_hundred_connect_disconnect_cycles_leave_nothing(make_lab) -> None:
    lab = make_lab()
    clients = [lab.add_client() for _ in range(CLIENTS)]
    db_path = os.path.join(lab.state_dir, "leases.sqlite3")
    warm = clients[0].connect()  # creates the database; its listener fds are the baseline
    assert warm.read_address() is not None
    warm.close()
    assert wait_until(lambda: lease_state(db_path, "192.168.3.2") == "released", 10)
    fds_before = listener_fds(lab)
    failures: list[str] = []
    seen: dict[str, set[str]] = {c.name: set() for c in clients}
    release_times: list[float] = []

    def cycle(client, tap: bool) -> None:
        extra = ("-o", "Tunnel=ethernet") if tap else ()
        for i in range(CYCLES):
            session = client.connect(*extra)
            address = session.read_address(timeout=60)
            if address is None:
                failures.append(f"{client.name} cycle {i}: {session.stderr()}")
                session.close()
                return
            seen[client.name].add(address)
            closed = time.monotonic()
            session.close()
            if not wait_until(lambda a=address: lease_state(db_path, a) == "released", 30):
                failures.append(f"{client.name} cycle {i}: {address} not released")
                return
            release_times.append(time.monotonic() - closed)

    threads = [
        threading.Thread(target=cycle, args=(c, i < TAP_CLIENTS)) for i, c in enumerate(clients)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    took = time.monotonic() - start
    assert failures == []
    assert len(release_times) == CLIENTS * CYCLES
    # Sticky and never confused: each client had one address all along, all distinct.
    assert all(len(a) == 1 for a in seen.values()), seen
    assert len({a for s in seen.values() for a in s}) == CLIENTS

    assert_clean(lab, timeout=30)
    assert server_devices(lab) == []  # no tun, no tap, no bridge
    assert_clients_idle(lab)
    states = {x["state"] for x in lab.leases()}
    assert states == {"released"}, lab.leases()  # zero active, zero stale
    assert wait_until(lambda: listener_fds(lab) == fds_before, 10), (fds_before, listener_fds(lab))
    release_times.sort()
    median = release_times[len(release_times) // 2]
    print(
        f"{CLIENTS * CYCLES} cycles ({CLIENTS} clients, {TAP_CLIENTS} of them tap) in "
        f"{took:.0f}s; release after disconnect: median {median:.2f}s, max {release_times[-1]:.2f}s"
    )
