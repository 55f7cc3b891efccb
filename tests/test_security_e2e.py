"""Hostile clients, end to end: what a client controls cannot take what is not its own.

A client controls the command it sends, the variables sshd's AcceptEnv lets through,
the tunnel unit it asks for (``-w any:N``), tun or tap, and when and how often it
connects. Each test plays one of those against a real sshd; see docs/security.md.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time

import psutil
import pytest

from tests.lab import Lab, run, wait_until
from tests.lab import refused as lab_refused
from tunhelper.server.identity import fingerprint

GATEWAY = "192.168.3.1"


def refused(session, timeout: float = 15) -> str:
    return lab_refused(session, timeout)


def link(lab: Lab, name: str) -> dict:
    (out,) = json.loads(run("ip", "-j", "addr", "show", "dev", name, ns=lab.server_ns).stdout)
    return out


def ipv4(link_json: dict) -> set[tuple[str, int]]:
    return {(a["local"], a["prefixlen"]) for a in link_json["addr_info"] if a["family"] == "inet"}


@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_a_persistent_admin_device_asked_for_by_number_is_refused_and_left_alone(
    make_lab, mode
) -> None:
    """``ssh -w any:5`` makes sshd attach to an admin's persistent tun5/tap5, if one exists.

    tunhelper must not configure that device (nor set it down at the end): it refuses
    the session, which detaches sshd from it.
    """
    lab = make_lab()
    name = f"{mode}5"
    run("ip", "tuntap", "add", name, "mode", mode, ns=lab.server_ns)
    run("ip", "addr", "add", "10.50.0.1/24", "dev", name, ns=lab.server_ns)
    run("ip", "link", "set", name, "up", ns=lab.server_ns)
    extra = ("-o", "Tunnel=ethernet") if mode == "tap" else ()
    session = lab.add_client().connect(*extra, tunnel="any:5")
    line = refused(session)
    assert "persistent" in line and name in line, line
    after = link(lab, name)
    assert ipv4(after) == {("10.50.0.1", 24)}
    assert "UP" in after["flags"]  # not set down by a cleanup that was never its to do
    assert "master" not in after  # not put on a bridge either
    assert [x for x in lab.leases() if x["state"] == "active"] == []


def test_another_sessions_unit_cannot_be_taken(make_lab) -> None:
    lab = make_lab(["--pool", "192.168.3.0/24", "--wait", "1"])
    victim, thief = lab.add_client("victim"), lab.add_client("thief")
    held = victim.connect()
    assert held.read_address() == "192.168.3.2"
    held.configure_client_side()
    (device,) = lab.server_tun_devices()
    taking = thief.connect(tunnel=f"any:{device[3:]}")
    assert "no tunnel device" in refused(taking)  # sshd itself would not open it
    assert held.ping(GATEWAY)
    assert lab.ping_from_server(held.address or "")
    (lease,) = lab.active_leases()
    assert (lease["address"], lease["device"]) == ("192.168.3.2", device)


@pytest.mark.parametrize("expose", ["yes", "no"])
def test_a_client_cannot_claim_another_clients_identity(make_lab, expose) -> None:
    """SSH_USER_AUTH from the client: overridden by sshd (ExposeAuthInfo yes), else refused
    in one line (tests/test_identity_e2e.py has the other files a client may name).

    The forged identity would be another client's sticky address. The attack: point
    SSH_USER_AUTH at /proc/self/environ, a private root-owned file whose text is the
    client's own variables, one of which carries the victim's key on a line of its own.
    """
    lab = make_lab(sshd_options={"AcceptEnv": "*", "ExposeAuthInfo": expose})
    victim, thief = lab.add_client("victim"), lab.add_client("thief")
    victim_line = " ".join(victim.public_key.split()[:2])
    victim_id = fingerprint(base64.b64decode(victim.public_key.split()[1]))
    thief_id = fingerprint(base64.b64decode(thief.public_key.split()[1]))
    sent = f'SetEnv=SSH_USER_AUTH=/proc/self/environ "X=\x0bpublickey {victim_line} "'
    session = thief.connect("-o", sent)
    if expose == "no":  # the client's own variable names no auth file of this session
        assert "SSH_USER_AUTH" in refused(session)
        assert lab.active_leases() == []
        return
    assert session.read_address() is not None, session.stderr()
    (lease,) = lab.active_leases()
    assert lease["client"] != victim_id
    assert lease["client"] == thief_id


HOSTILE_COMMANDS = [
    "touch {mark}",
    "; touch {mark}",
    "$(touch {mark})",
    "`touch {mark}`",
    "tunhelper-describe/1; touch {mark}",
    "tunhelper-describe/1 && touch {mark}",
    "tunhelper-describe/2",
    " tunhelper-describe/1",
    "--pool 10.99.0.0/24 --state-dir {mark}",
    "tunhelper --pool 10.99.0.0/24",
    "\x1b[2J\x1b]0;{mark}\x07",
    "x" * 60000,
]


def test_commands_a_client_sends_are_never_run_and_change_nothing(make_lab) -> None:
    lab = make_lab()
    mark = lab.dir / "ran"
    client = lab.add_client()
    for command in HOSTILE_COMMANDS:
        session = client.connect(command=[command.format(mark=mark)])
        assert session.read_address() == "192.168.3.2", (command[:40], session.stderr())
        assert session.stderr() == ""
        session.close()
        assert wait_until(lambda: not lab.active_leases(), 5)
    assert not mark.exists()
    assert {x["address"] for x in lab.leases()} == {"192.168.3.2"}  # the admin's pool only


def test_the_exact_request_gets_the_description(make_lab) -> None:
    lab = make_lab()
    session = lab.add_client().connect(command=["tunhelper-describe/1"])
    line = session.read_address()
    assert line is not None and json.loads(line)["address"] == "192.168.3.2"


def test_no_session_channel_means_no_helper_and_no_lease(make_lab) -> None:
    """``ssh -N -w any``: a tunnel and no forced command; nothing is taken for it."""
    lab = make_lab()
    client = lab.add_client()
    proc = subprocess.Popen(client.ssh_argv("-N"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: lab.server_tun_devices() != [], 10)
        assert lab.leases() == []
        (device,) = lab.server_tun_devices()
        assert [a for a in lab.server_addresses()[device] if a["family"] == "inet"] == []
    finally:
        proc.kill()
        proc.communicate()


def test_one_key_cannot_take_more_than_its_share_of_the_pool(make_lab) -> None:
    """With a raised --max-sessions, --max-leases is the hard cap that holds in a burst.

    Connections that arrive at the same moment may all be refused (each counts the
    others' fresh leases), never all served: the limit holds under a burst.
    """
    lab = make_lab(  # five addresses; --max-sessions 10 leaves the cap to --max-leases
        ["--pool", "192.168.3.0/29", "--max-sessions", "10", "--refuse-extra", "--max-leases", "2"]
    )
    greedy, other = lab.add_client("greedy"), lab.add_client("other")
    burst = [greedy.connect() for _ in range(6)]  # all at once
    served = [s for s in burst if s.read_address(30) is not None]
    assert len(served) <= 2, [s.stderr() for s in burst]
    for s in burst:
        if s not in served:
            assert "--max-leases 2" in refused(s)
    for s in burst:
        s.close()
    assert wait_until(lambda: not lab.active_leases(), 10)

    one_by_one = []
    for _ in range(2):
        one_by_one.append(greedy.connect())
        assert one_by_one[-1].read_address() is not None, one_by_one[-1].stderr()
    one_by_one.append(greedy.connect())
    assert "--max-leases 2" in refused(one_by_one[-1])
    late = other.connect()
    assert late.read_address() is not None, late.stderr()  # the pool still has room
    assert len(lab.active_leases()) == 3
    for s in one_by_one + [late]:
        s.close()
    assert wait_until(lambda: not lab.active_leases(), 10)
    assert wait_until(lambda: not lab.server_tun_devices(), 10)


def tx_packets(lab: Lab, device: str) -> int:
    (out,) = json.loads(
        run("ip", "-j", "-s", "link", "show", "dev", device, ns=lab.server_ns).stdout
    )
    return out["stats64"]["tx"]["packets"]


def test_a_tun_client_cannot_send_as_another_client(make_lab) -> None:
    """Packets a client sends with another client's address as source are dropped.

    Were they accepted, the gateway would answer them towards the other client: the
    sender could inject traffic in the other's name (it never sees the replies).
    """
    lab = make_lab()
    a, b = lab.add_client("a"), lab.add_client("b")
    sa = a.connect()
    assert sa.read_address() == "192.168.3.2"
    tun_a = sa.configure_client_side()
    sb = b.connect()
    assert sb.read_address() == "192.168.3.3"
    sb.configure_client_side()
    device_b = lease_device(lab, "192.168.3.3")
    assert sa.ping(GATEWAY)  # A's own address works
    run("ip", "addr", "add", "192.168.3.3/32", "dev", tun_a, ns=a.ns)  # A claims B's
    before = tx_packets(lab, device_b)
    spoofed = run("ping", "-c", "3", "-W", "1", "-I", "192.168.3.3", GATEWAY, ns=a.ns, check=False)
    assert spoofed.returncode != 0
    assert tx_packets(lab, device_b) == before  # the gateway answered nothing towards B
    assert sb.ping(GATEWAY)  # B itself is unaffected


def lease_device(lab: Lab, address: str) -> str:
    (lease,) = [x for x in lab.leases() if x["address"] == address]
    return lease["device"]


def test_a_client_flooding_stdin_changes_nothing(make_lab) -> None:
    """stdin is never read: a client writing megabytes to it holds its session, no more."""
    lab = make_lab()
    session = lab.add_client().connect()
    assert session.read_address() == "192.168.3.2"
    session.configure_client_side()
    assert session.proc.stdin is not None
    writer = subprocess.Popen(
        ["dd", "if=/dev/zero", "bs=65536", "count=80"], stdout=session.proc.stdin
    )  # 5 MiB: more than every pipe and channel window on the way
    time.sleep(2)
    assert session.ping(GATEWAY)
    (lease,) = lab.active_leases()
    helper = psutil.Process(lease["pid"])
    assert helper.memory_info().rss < 64 * 2**20
    writer.kill()
    writer.wait()
    session.close()
    assert wait_until(lambda: not lab.active_leases(), 10)
