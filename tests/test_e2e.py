"""End to end: a real sshd in a namespace, real ``ssh -w any`` clients in others.

Each test checks what a user checks: the address announced, the server's device
configured, ping both ways, the lease gone after.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.lab import Lab, run, wait_until

GATEWAY = "192.168.3.1"


def connected(client, **kw):
    """Connect, read the announced address and set up the client side by hand."""
    session = client.connect(**kw)
    address = session.read_address()
    assert address is not None, f"no address announced; ssh said: {session.stderr()}"
    session.configure_client_side()
    return session


def lease_of(lab: Lab, address: str) -> dict:
    (lease,) = [x for x in lab.leases() if x["address"] == address]
    return lease


def exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie: it has exited, and reaping an orphan is init's business.

    Some machines' init reaps orphans only every second or two, and a helper whose sshd
    session process died is an orphan.
    """
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_nothing_left(lab: Lab) -> None:
    """No active lease, no configured tun, no helper process."""
    assert wait_until(lambda: not lab.active_leases(), 5), lab.leases()
    assert wait_until(lambda: not lab.server_tun_devices(), 5), lab.server_addresses()
    helpers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if lab.state_dir in " ".join(p.info["cmdline"] or [])
    ]
    assert wait_until(lambda: all(exited(p) for p in helpers), 5), helpers


def test_one_client_gets_an_address_and_pings_both_ways(make_lab) -> None:
    lab = make_lab()
    session = connected(lab.add_client())
    assert session.address == "192.168.3.2"
    (device,) = lab.server_tun_devices()
    (inet,) = [a for a in lab.server_addresses()[device] if a["family"] == "inet"]
    assert (inet["local"], inet["address"], inet["prefixlen"]) == (GATEWAY, "192.168.3.2", 32)
    assert session.ping(GATEWAY)
    assert lab.ping_from_server(session.address)
    lease = lease_of(lab, session.address)
    assert lease["state"] == "active" and lease["device"] == device
    assert lease["client"].startswith("SHA256:")  # ExposeAuthInfo: the key identifies the client
    assert session.stderr() == ""  # success is silent on the client's stderr
    session.close()
    assert_nothing_left(lab)


def test_twenty_clients_at_once_get_distinct_reachable_addresses(make_lab) -> None:
    lab = make_lab()
    clients = [lab.add_client() for _ in range(20)]
    sessions = [c.connect() for c in clients]
    addresses = [s.read_address(timeout=60) for s in sessions]
    if None in addresses:  # say where it stalled: ssh, sshd or the helper
        stalled = [c.name for c, a in zip(clients, addresses) if a is None]
        ps = run("ps", "-o", "pid,ppid,stat,etime,args", "-e", check=False).stdout
        raise AssertionError(
            f"no address for {stalled}; ssh said {[s.stderr() for s in sessions]}; "
            f"sshd log:\n{lab.sshd_log_text()[-3000:]}\nprocesses:\n{ps[-4000:]}"
        )
    assert len(set(addresses)) == 20
    for s in sessions:
        s.configure_client_side()
    assert all(s.ping(GATEWAY) for s in sessions)
    assert all(lab.ping_from_server(a) for a in addresses)
    assert len(lab.active_leases()) == 20
    for s in sessions:
        s.close()
    assert_nothing_left(lab)


def test_clients_that_come_back_in_the_other_order_keep_their_addresses(make_lab) -> None:
    lab = make_lab()
    alice, bob = lab.add_client("alice"), lab.add_client("bob")
    first = {c.name: connected(c) for c in (alice, bob)}
    before = {name: s.address for name, s in first.items()}
    assert before["alice"] != before["bob"]
    for s in first.values():
        s.close()
    assert wait_until(lambda: not lab.active_leases(), 5)
    second = {c.name: connected(c) for c in (bob, alice)}
    assert {name: s.address for name, s in second.items()} == before
    assert all(s.ping(GATEWAY) for s in second.values())


def test_disconnect_releases_the_lease_and_ends_the_helper_within_two_seconds(make_lab) -> None:
    lab = make_lab()
    session = connected(lab.add_client())
    helper = psutil.Process(lease_of(lab, session.address)["pid"])
    session.close()
    start = time.monotonic()
    assert wait_until(lambda: not lab.active_leases(), 2)
    assert wait_until(lambda: exited(helper), 2 - (time.monotonic() - start))
    assert lease_of(lab, session.address)["state"] == "released"


def test_stdin_closed_is_not_the_end_of_the_session(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    session = client.connect("-n")
    assert session.read_address() == "192.168.3.2"
    session.configure_client_side()
    time.sleep(1)  # give a wrongly written helper time to take EOF as the end
    assert lease_of(lab, session.address)["state"] == "active"
    assert session.ping(GATEWAY)


def test_killed_helper_keeps_its_address_until_its_client_leaves(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/30"])  # exactly one client address: .2
    holder_client, other = lab.add_client("holder"), lab.add_client("other")
    held = connected(holder_client)
    lease = lease_of(lab, held.address)
    os.kill(lease["pid"], signal.SIGKILL)
    assert wait_until(lambda: not psutil.pid_exists(lease["pid"]), 5)
    assert held.ping(GATEWAY)  # the session and its configured device live on

    refused = other.connect()
    assert refused.read_address() is None
    assert refused.wait(10) not in (None, 0)
    assert "exhausted" in refused.stderr()
    assert lease_of(lab, held.address)["state"] == "active"

    held.close()
    later = connected(other)
    assert later.address == held.address  # reclaimed from the dead session
    assert later.ping(GATEWAY)
    assert lease_of(lab, later.address)["client"] != lease["client"]


def test_killed_sshd_session_process_makes_the_helper_release_and_exit(make_lab) -> None:
    lab = make_lab()
    session = connected(lab.add_client())
    lease = lease_of(lab, session.address)
    helper = psutil.Process(lease["pid"])
    os.kill(lease["session_pid"], signal.SIGKILL)
    assert wait_until(lambda: exited(helper), 2)
    assert lease_of(lab, session.address)["state"] == "released"


def test_exhausted_pool_refuses_clearly_and_ends_the_session(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/29"])  # .2 to .6: five clients
    clients = [lab.add_client() for _ in range(6)]
    served = [connected(c) for c in clients[:5]]
    assert sorted(s.address for s in served) == [f"192.168.3.{i}" for i in range(2, 7)]
    late = clients[5].connect()
    start = time.monotonic()
    assert late.read_address() is None  # nothing on stdout
    code = late.wait(10)
    assert code not in (None, 0), "ssh must not sit on an unconfigured tunnel"
    assert time.monotonic() - start < 10
    errors = [line for line in late.stderr().splitlines() if line.startswith("tunhelper:")]
    assert len(errors) == 1 and "exhausted" in errors[0], late.stderr()
    assert "Traceback" not in late.stderr()
    assert len(lab.active_leases()) == 5  # the refusal leaked no lease
    assert len(lab.server_tun_devices()) == 5 or wait_until(
        lambda: len(lab.server_tun_devices()) == 5, 5
    )
    for s in served:
        s.close()
    assert_nothing_left(lab)


def test_without_a_tunnel_the_client_is_told_why(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/24", "--wait", "0.5"])
    client = lab.add_client()
    argv = [a for a in client.ssh_argv() if a not in ("-w", "any")]
    import subprocess

    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "no tunnel device" in result.stderr and "-w any" in result.stderr
    assert lab.leases() == []


def test_plain_ssh_tap_gets_the_bare_address_and_a_bridge_port(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    session = client.connect("-o", "Tunnel=ethernet")
    assert session.read_address() == "192.168.3.2"
    (tap,) = client.tun_devices("tap")
    run("ip", "addr", "add", "192.168.3.2/24", "dev", tap, ns=client.ns)
    run("ip", "link", "set", tap, "up", ns=client.ns)
    assert session.ping(GATEWAY)
    assert lab.ping_from_server(session.address)


def test_bad_arguments_in_authorized_keys_refused_in_one_line(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/33"])
    session = lab.add_client().connect()
    assert session.read_address() is None
    assert session.wait(10) not in (None, 0)
    lines = [line for line in session.stderr().splitlines() if line.startswith("tunhelper:")]
    assert len(lines) == 1 and "--pool" in lines[0], session.stderr()
    assert "Traceback" not in session.stderr()
    assert lab.server_tun_devices() == [] or wait_until(lambda: lab.server_tun_devices() == [], 5)


def test_client_environment_changes_nothing(make_lab) -> None:
    """AcceptEnv let everything through; the client's variables still change nothing."""
    lab = make_lab(sshd_options={"AcceptEnv": "*"})
    marker = lab.dir / "pwned"
    sent = {
        "PYTHONINSPECT": "1",
        "PYTHONPATH": str(lab.dir),
        "TUNHELPER_POOL": "10.99.0.0/24",
        "POOL": "10.99.0.0/24",
        "SSH_TUNNEL": "tun9",
    }
    setenv = ["-o", "SetEnv=" + " ".join(f"{k}={v}" for k, v in sent.items())]
    session = lab.add_client().connect(*setenv)
    assert session.read_address() == "192.168.3.2"
    session.configure_client_side()
    assert session.ping(GATEWAY)
    # Were PYTHONINSPECT honoured, whatever the client types would run as root at exit.
    assert session.proc.stdin is not None
    session.proc.stdin.write(f"open({str(marker)!r}, 'w').write('x')\n".encode())
    session.proc.stdin.flush()
    os.kill(lease_of(lab, session.address)["pid"], signal.SIGTERM)
    assert session.wait(10) is not None
    assert not marker.exists()
    assert_nothing_left(lab)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_to_the_helper_deconfigures_releases_and_ends_the_session(make_lab, sig) -> None:
    lab = make_lab()
    session = connected(lab.add_client())
    lease = lease_of(lab, session.address)
    os.kill(lease["pid"], sig)
    assert session.wait(10) is not None, "the client must not be left on a dead tunnel"
    assert_nothing_left(lab)
