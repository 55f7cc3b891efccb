"""The connect state machine end to end: what ``tunhelper status`` shows in each state,
a failure that blocks instead of ending, a hung connect that ``disconnect`` still
ends, a second connect refused while one holds the kill-switch. A real sshd behind a
router namespace (tests/test_client_e2e.py's); the attacks are in test_hostile_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.lab import Connect, run, tunhelper_command, wait_until
from tests.test_client_e2e import BEYOND, FULL, GATEWAY, Router, connect, ping, snapshot


@pytest.fixture
def routed(make_lab):
    """A lab client behind a router (test_client_e2e's shape)."""
    routers: list[Router] = []

    def factory(helper_args=FULL, **kw):
        lab = make_lab(helper_args, **kw)
        client = lab.add_client()
        routers.append(Router(lab, client))
        return lab, client, routers[-1]

    yield factory
    for router in routers:
        router.close()


def status(client, *extra: str) -> str:
    result = run(tunhelper_command(), "status", *extra, ns=client.ns, check=False)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


def entries(client) -> list[dict]:
    return json.loads(status(client, "--json"))


def steady(state: dict[str, str]) -> dict[str, str]:
    """A snapshot without the drop counters, which count whatever the host sent."""
    return {**state, "nft": re.sub(r"counter packets \d+ bytes \d+", "counter", state["nft"])}


def tables(client) -> list[str]:
    out = run("nft", "list", "tables", ns=client.ns).stdout
    return [line.split()[-1] for line in out.splitlines() if "tunhelper" in line]


def test_status_shows_the_link_its_bytes_and_then_nothing(routed) -> None:
    lab, client, router = routed()
    assert entries(client) == [] and "no connect is running" in status(client)
    conn = connect(client, "--json", "--kill-switch")
    up = json.loads(conn.status() or "{}")
    assert up.get("address"), conn.stderr()
    assert ping(client, BEYOND, 3)
    (entry,) = entries(client)
    assert entry["state"] == "connected" and entry["pid"] == conn.proc.pid
    assert (entry["device"], entry["address"]) == (up["device"], up["address"])
    assert entry["destination"] == up["destination"] and entry["kill_switch"] is True
    assert entry["received"] > 0 and entry["sent"] > 0  # the pings, both ways
    assert abs(entry["since"] - time.time()) < 60 and entry["reconnects"] == 0
    text = status(client)
    assert f"connected: {up['device']} {up['address']} to {up['destination']}" in text
    assert "transfer:" in text and "kill-switch: on" in text
    assert conn.interrupt() == 0
    assert entries(client) == []  # the control is the entry above


def test_a_refusal_under_the_kill_switch_blocks_until_the_user_ends_it(routed) -> None:
    lab, client, router = routed(["--pool", "192.168.3.0/30", *FULL[2:]])  # one address
    holder = lab.add_client().tunhelper_connect()  # another identity, on the bridge
    assert holder.status() is not None, holder.stderr()
    before = snapshot(client)
    late = connect(client, "--kill-switch")
    assert wait_until(lambda: [e["state"] for e in entries(client)] == ["blocked"], 30)
    (entry,) = entries(client)
    assert "refused" in entry["error"] and entry["hint"], entry
    assert late.proc.poll() is None  # blocked, still running: not an exit that unblocks
    assert tables(client) == ["tunhelper_client"]  # the control: the table is seen
    blocked = [x for x in late.stderr().splitlines() if x.startswith("tunhelper: blocked:")]
    assert len(blocked) == 1, late.stderr()
    start = router.counters()["Icmp.InEchos"]
    run("ping", "-c", "2", "-W", "1", "10.232.0.1", ns=client.ns, check=False)
    assert router.counters()["Icmp.InEchos"] == start  # nothing leaves while blocked
    late.proc.send_signal(signal.SIGTERM)  # systemctl stop
    assert late.wait(15) == 1  # the failure's code, once the user ended it
    assert snapshot(client) == before and entries(client) == []
    run("ping", "-c", "2", "-W", "1", "10.232.0.1", ns=client.ns, check=False)
    assert router.counters()["Icmp.InEchos"] == start + 2  # the control: now it leaves


def test_disconnect_ends_a_hung_connect_and_says_so(routed) -> None:
    lab, client, router = routed()
    before = snapshot(client)
    conn = connect(client, "--json", "--kill-switch")
    assert json.loads(conn.status() or "{}").get("address"), conn.stderr()
    assert snapshot(client) != before  # the control: the snapshot sees what it changed
    os.kill(conn.proc.pid, signal.SIGSTOP)  # hung: it will never act on SIGTERM
    result = run(tunhelper_command(), "disconnect", ns=client.ns, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "did not end within" in result.stderr  # truthful: it had to be killed
    assert conn.wait(10) is not None
    assert wait_until(lambda: snapshot(client) == before, 10), snapshot(client)
    assert entries(client) == []


def test_a_second_connect_is_refused_while_one_holds_the_kill_switch(routed) -> None:
    lab, client, router = routed()
    first = connect(client, "--json", "--kill-switch")
    assert json.loads(first.status() or "{}").get("address"), first.stderr()
    during = snapshot(client)
    second = connect(client, "--json")
    assert second.wait(30) not in (None, 0)
    lines = [x for x in second.stderr().splitlines() if x.startswith("tunhelper:")]
    assert len(lines) == 1 and "kill-switch" in lines[0], second.stderr()
    assert steady(snapshot(client)) == steady(during)  # it changed nothing
    assert ping(client, BEYOND)
    assert first.interrupt() == 0


def test_a_second_kill_switch_connect_takes_a_blocked_one_over_without_a_gap(routed) -> None:
    """The user fixed what blocked the first (here: the gateway had no address free)
    and connects again: the new connect takes the table over, the old one ends, and
    nothing leaves in between (no disconnect, which would open the host)."""
    lab, client, router = routed(["--pool", "192.168.3.0/30", *FULL[2:]])
    holder = lab.add_client().tunhelper_connect()
    assert holder.status() is not None, holder.stderr()
    first = connect(client, "--kill-switch")
    assert wait_until(lambda: [e["state"] for e in entries(client)] == ["blocked"], 30)
    assert holder.interrupt() == 0  # the address is free again
    start = router.counters()["Icmp.InEchos"]
    pinger = Connect(client, ["ip", "netns", "exec", client.ns, "ping", "-i", "0.1", "10.232.0.1"])
    second = connect(client, "--json", "--kill-switch")
    assert json.loads(second.status() or "{}").get("address"), second.stderr()
    assert first.wait(20) == 1, first.stderr()  # handed over: ended, its failure's code
    pinger.close()
    assert router.counters()["Icmp.InEchos"] == start  # not one packet in between
    assert tables(client) == ["tunhelper_client"]
    assert [e["state"] for e in entries(client)] == ["connected"]
    assert second.interrupt() == 0
    assert tables(client) == []
    run("ping", "-c", "2", "-W", "1", "10.232.0.1", ns=client.ns, check=False)
    assert router.counters()["Icmp.InEchos"] == start + 2  # the control: now they leave


def test_a_gateway_that_cannot_be_resolved_blocks_rather_than_exits(routed) -> None:
    """Under the kill-switch even a failure before the first attempt (here: a name no
    resolver knows; after a kill, the old table would block DNS the same way) blocks:
    an exit would leave a killed predecessor's table with nothing to stop."""
    lab, client, router = routed()
    before = snapshot(client)
    conn = connect(client, "--kill-switch", dest=("root@gw.tunhelper.invalid",))
    assert wait_until(lambda: [e["state"] for e in entries(client)] == ["blocked"], 30)
    (entry,) = entries(client)
    assert "resolve" in entry["error"] and "disconnect" in entry["hint"], entry
    assert tables(client) == ["tunhelper_client"] and conn.proc.poll() is None
    result = run(tunhelper_command(), "disconnect", ns=client.ns, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert conn.wait(15) == 1
    assert snapshot(client) == before  # the control: the table was seen above


def test_a_restarted_connect_finds_its_gateway_without_dns(routed, tmp_path) -> None:
    """A connect killed under the kill-switch leaves its table, which blocks DNS; the
    restarted one takes the gateway's address from the journal the killed one left."""
    lab, client, router = routed()
    hosts = tmp_path / "ssh_config"
    hosts.write_text("Host office\n  HostName gw.tunhelper.invalid\n  User root\n")
    etc_hosts = router.etc / "hosts"
    etc_hosts.write_text(f"127.0.0.1 localhost\n{GATEWAY} gw.tunhelper.invalid\n")
    ssh = f"{client.ssh_command()} -F {hosts}"
    first = client.tunhelper_connect("-e", ssh, "--json", "--kill-switch", server="office")
    assert json.loads(first.status() or "{}").get("address"), first.stderr()
    first.proc.kill()
    first.wait(10)
    etc_hosts.write_text("127.0.0.1 localhost\n")  # the name is gone: only the journal knows
    lookup = run("getent", "hosts", "gw.tunhelper.invalid", ns=client.ns, check=False)
    assert lookup.returncode != 0  # the control: nothing else could resolve it now
    second = client.tunhelper_connect("-e", ssh, "--json", "--kill-switch", server="office")
    assert json.loads(second.status() or "{}").get("address"), second.stderr()
    assert second.interrupt() == 0


def test_a_new_kill_switch_connect_takes_over_from_a_hung_one(routed) -> None:
    lab, client, router = routed()
    before = snapshot(client)
    first = connect(client, "--json", "--kill-switch")
    assert json.loads(first.status() or "{}").get("address"), first.stderr()
    assert snapshot(client) != before  # the control: the snapshot sees what it changed
    os.kill(first.proc.pid, signal.SIGSTOP)  # hung: it will never hand over
    start = router.counters()["Icmp.InEchos"]
    pinger = Connect(client, ["ip", "netns", "exec", client.ns, "ping", "-i", "0.2", "10.232.0.1"])
    second = connect(client, "--json", "--kill-switch")
    assert json.loads(second.status(60) or "{}").get("address"), second.stderr()
    assert first.wait(10) is not None  # killed by the newcomer
    assert "did not hand over" in second.stderr()  # and said so
    pinger.close()
    assert router.counters()["Icmp.InEchos"] == start
    assert [e["state"] for e in entries(client)] == ["connected"]
    assert second.interrupt() == 0
    assert snapshot(client) == before
