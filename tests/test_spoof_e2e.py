"""Hostile clients spoofing sources, end to end: the gateway must never receive them.

Each test has a victim and an attacker connected through a real sshd, on tun or tap,
dual stack. The attacker adds addresses that are not its own to its device (another
live client's, an unleased one of the pool, one outside the pool) and sends UDP from
them to a listener on the gateway; on tap it also claims the victim's addresses in ARP
and neighbour discovery. What counts is what arrives on the gateway's side: the
listener's log of senders and the gateway's neighbour table. Controls show that the
same packets do arrive once the attacker's filter is removed by hand, so the tests can
fail. See docs/security.md, "Source validation".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.lab import Lab, run, tunhelper_command, wait_until

DUAL = ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]
GATEWAY, GATEWAY6 = "192.168.3.1", "fd00:3::1"
PORT = 47000
UNLEASED, UNLEASED6 = "192.168.3.200", "fd00:3::c8"
OUTSIDE, OUTSIDE6 = "10.99.0.5", "fd99::5"

LISTENER = f"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", {PORT}))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100)
    print(peer[0].removeprefix("::ffff:"), flush=True)
"""

SEND = """
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((src, 0))
for _ in range(3):
    s.sendto(b"spoof", (dst, port))
"""

# An ARP request (sender = a claimed address, our MAC) or an unsolicited, overriding
# neighbour advertisement for a claimed IPv6 address, sent from our own addresses.
CLAIM = """
import socket, struct, sys
device, mac, claimed = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3]
if ":" not in claimed:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((device, 0))
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(claimed),
                      b"\\0" * 6, socket.inet_aton(sys.argv[4]))
    for _ in range(3):
        s.send(b"\\xff" * 6 + mac + b"\\x08\\x06" + arp)
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    na = struct.pack("!BBHI16sBB6s", 136, 0, 0, 0x20000000, socket.inet_pton(
        socket.AF_INET6, claimed), 2, 1, mac)
    index = socket.if_nametoindex(device)
    for _ in range(3):
        s.sendto(na, ("ff02::1", 0, 0, index))
"""


class Listener:
    """A UDP socket on the gateway (both families) that logs every sender."""

    def __init__(self, lab: Lab) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.server_ns, sys.executable, "-c", LISTENER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def senders(self) -> list[str]:
        time.sleep(0.5)  # what was sent has arrived, or never will
        self.proc.kill()  # not SIGTERM: a test process may pass it on ignored
        out, _ = self.proc.communicate(timeout=5)
        return out.split()


def connect(client, mode: str) -> dict:
    args = ("--tap", "--json") if mode == "tap" else ("--json",)
    conn = client.tunhelper_connect(*args)
    status = json.loads(conn.status() or "{}")
    assert status.get("address6"), conn.stderr()
    status["connect"] = conn
    return status


def send(client, src: str, dst: str) -> None:
    run(sys.executable, "-c", SEND, src, dst, str(PORT), ns=client.ns)


def add_address(client, device: str, address: str) -> None:
    if ":" in address:
        run("ip", "-6", "addr", "add", f"{address}/128", "dev", device, "nodad", ns=client.ns)
    else:
        run("ip", "addr", "add", f"{address}/32", "dev", device, ns=client.ns)


def ping(client, address: str) -> bool:
    return run("ping", "-c", "1", "-W", "2", address, ns=client.ns, check=False).returncode == 0


def mac_of(ns: str, device: str) -> str:
    (link,) = json.loads(run("ip", "-j", "link", "show", "dev", device, ns=ns).stdout)
    return link["address"]


def neighbour(lab: Lab, address: str) -> str | None:
    out = json.loads(run("ip", "-j", "neigh", "show", address, ns=lab.server_ns).stdout)
    return next((n.get("lladdr") for n in out), None)


def chains(lab: Lab) -> list[str]:
    out = run("nft", "-j", "list", "table", "netdev", "tunhelper", ns=lab.server_ns, check=False)
    if out.returncode != 0:
        return []
    return [x["chain"]["name"] for x in json.loads(out.stdout)["nftables"] if "chain" in x]


def pins(lab: Lab) -> list[str]:
    """Every MAC and link-local the table-wide sets hold for tap ports."""
    out = run("nft", "-j", "list", "table", "netdev", "tunhelper", ns=lab.server_ns, check=False)
    if out.returncode != 0:
        return []
    shared = ("macs", "linklocals")
    items = json.loads(out.stdout)["nftables"]
    return [
        e for x in items if x.get("set", {}).get("name") in shared for e in x["set"].get("elem", [])
    ]


def chain_of(lab: Lab, device: str) -> str:
    (chain,) = [c for c in chains(lab) if c.rpartition("_")[0] == device]
    return chain


def server_device(lab: Lab, address: str) -> str:
    return next(x["device"] for x in lab.leases() if x["address"] == address)


def attack(lab: Lab, attacker, victim: dict, own: dict) -> list[str]:
    """Every spoof of both families through the attacker's device; return what arrived."""
    device = own["device"]
    assert ping(attacker, GATEWAY) and ping(attacker, GATEWAY6)  # neighbours resolved
    spoofed = [victim["address"], victim["address6"], UNLEASED, UNLEASED6, OUTSIDE, OUTSIDE6]
    for address in spoofed:
        add_address(attacker, device, address)
    listener = Listener(lab)
    for address in spoofed:
        send(attacker, address, GATEWAY6 if ":" in address else GATEWAY)
    send(attacker, own["address"], GATEWAY)  # the controls: its own addresses arrive
    send(attacker, own["address6"], GATEWAY6)
    return listener.senders()


@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_no_spoofed_source_reaches_the_gateway(make_lab, mode) -> None:
    lab = make_lab(DUAL)
    victim_host, attacker = lab.add_client("victim"), lab.add_client("attacker")
    victim, own = connect(victim_host, mode), connect(attacker, mode)
    arrived = attack(lab, attacker, victim, own)
    assert sorted(set(arrived)) == sorted([own["address"], own["address6"]]), arrived
    assert ping(victim_host, GATEWAY) and ping(victim_host, GATEWAY6)  # the honest client
    assert lab.ping_from_server(victim["address"]) and lab.ping6_from_server(victim["address6"])

    # The control: without the attacker's filter the same packets do arrive.
    chain = chain_of(lab, server_device(lab, own["address"]))
    run("nft", "delete", "chain", "netdev", "tunhelper", chain, ns=lab.server_ns)
    listener = Listener(lab)
    send(attacker, UNLEASED6, GATEWAY6)
    assert UNLEASED6 in listener.senders()


def test_a_tap_client_cannot_claim_another_clients_addresses(make_lab) -> None:
    lab = make_lab(DUAL)
    victim_host, attacker = lab.add_client("victim"), lab.add_client("attacker")
    victim, own = connect(victim_host, "tap"), connect(attacker, "tap")
    assert lab.ping_from_server(victim["address"]) and lab.ping6_from_server(victim["address6"])
    honest = mac_of(victim_host.ns, victim["device"])
    assert neighbour(lab, victim["address"]) == neighbour(lab, victim["address6"]) == honest
    mac = mac_of(attacker.ns, own["device"])
    assert ping(attacker, GATEWAY) and ping(attacker, GATEWAY6)

    def claim() -> None:
        time.sleep(1.1)  # past the neighbour table's lock time
        for claimed in (victim["address"], victim["address6"]):
            argv = [sys.executable, "-c", CLAIM, own["device"], mac, claimed, GATEWAY]
            run(*argv, ns=attacker.ns)
        time.sleep(0.3)

    claim()
    assert neighbour(lab, victim["address"]) == neighbour(lab, victim["address6"]) == honest
    assert ping(victim_host, GATEWAY) and ping(victim_host, GATEWAY6)

    # The control: without the attacker's filter the gateway believes the claims.
    chain = chain_of(lab, server_device(lab, own["address"]))
    run("nft", "delete", "chain", "netdev", "tunhelper", chain, ns=lab.server_ns)
    claim()
    assert neighbour(lab, victim["address"]) == mac
    assert neighbour(lab, victim["address6"]) == mac


def test_a_second_source_mac_on_a_tap_is_dropped(make_lab) -> None:
    lab = make_lab(DUAL)
    client = lab.add_client()
    own = connect(client, "tap")
    assert ping(client, GATEWAY)  # its first frames pin its MAC
    run("ip", "link", "set", own["device"], "address", "02:00:00:00:00:42", ns=client.ns)
    run("ip", "neigh", "flush", "dev", own["device"], ns=client.ns)
    assert not ping(client, GATEWAY)  # the same address from another MAC: dropped


@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_after_sigkill_no_filter_matches_a_later_device(make_lab, mode) -> None:
    lab = make_lab(DUAL)
    victim_host, attacker = lab.add_client("victim"), lab.add_client("attacker")
    first = connect(victim_host, mode)
    device = server_device(lab, first["address"])
    keeper = next(x["pid"] for x in lab.leases() if x["address"] == first["address"])
    os.kill(keeper, signal.SIGKILL)  # nothing gives back now: not the keeper, not the helper
    first["connect"].interrupt()  # the client leaves: sshd deletes the device
    assert wait_until(lambda: device not in lab.server_addresses(), 10)
    stale = chain_of(lab, device)  # this kernel keeps a netdev chain past its device
    doctor = lab.doctor("--state-dir", lab.state_dir)
    assert f"source filter {stale} was left" in doctor.stdout, doctor.stdout

    # A later session gets the same device name (and the freed address back, as a
    # sticky lease of another client would not): the stale chain must not match it.
    victim, own = connect(victim_host, mode), connect(attacker, mode)
    assert device in {server_device(lab, victim["address"]), server_device(lab, own["address"])}
    arrived = attack(lab, attacker, victim, own)
    assert sorted(set(arrived)) == sorted([own["address"], own["address6"]]), arrived
    assert ping(victim_host, GATEWAY) and ping(victim_host, GATEWAY6)

    repaired = run(tunhelper_command(), "repair", "--state-dir", lab.state_dir, ns=lab.server_ns)
    assert f"removed source filter {stale}" in repaired.stdout
    assert stale not in chains(lab)
    assert len(chains(lab)) == 2  # the live sessions' own
    for status in (victim, own):
        assert status["connect"].interrupt() == 0
    assert wait_until(lambda: chains(lab) == [], 10), chains(lab)
    assert pins(lab) == []  # what the tap ports pinned left with them


def link_local(ns: str, device: str) -> str:
    """The device's link-local address, once duplicate address detection is done."""

    def usable() -> str | None:
        (link,) = json.loads(run("ip", "-j", "-6", "addr", "show", "dev", device, ns=ns).stdout)
        return next(
            (
                a["local"]
                for a in link.get("addr_info", [])
                if a.get("scope") == "link" and not a.get("tentative")
            ),
            None,
        )

    assert wait_until(usable, 5)
    return str(usable())


def bridge_ports(lab: Lab, mac: str) -> set[str]:
    """The bridge ports the gateway's forwarding database puts ``mac`` behind."""
    out = json.loads(run("bridge", "-j", "fdb", "show", ns=lab.server_ns).stdout)
    return {e["ifname"] for e in out if e.get("mac") == mac and "master" in e}


def plain_tap(client, mac: str) -> tuple:
    """A hostile client's plain ``ssh -w``: its tap gets ``mac`` before its first frame."""
    session = client.connect("-o", "Tunnel=ethernet")
    address = session.read_address()
    assert address, session.stderr()
    (tap,) = client.tun_devices("tap")
    run("ip", "link", "set", tap, "address", mac, ns=client.ns)
    run("ip", "addr", "add", f"{address}/24", "dev", tap, ns=client.ns)
    run("ip", "link", "set", tap, "up", ns=client.ns)
    return session, address


def test_a_tap_client_cannot_take_another_clients_mac_or_link_local(make_lab) -> None:
    lab = make_lab(DUAL)
    victim_host, thief, claimer = (lab.add_client(n) for n in ("victim", "thief", "claimer"))
    victim = connect(victim_host, "tap")
    port = server_device(lab, victim["address"])
    honest = mac_of(victim_host.ns, victim["device"])
    honest_ll = link_local(victim_host.ns, victim["device"])
    assert ping(victim_host, GATEWAY) and ping(victim_host, f"ff02::1%{victim['device']}")
    assert bridge_ports(lab, honest) == {port}
    assert neighbour(lab, honest_ll) == honest

    # Another port sending from the victim's MAC: dropped before the bridge learns it.
    session, stolen = plain_tap(thief, honest)
    assert not session.ping(GATEWAY)
    assert bridge_ports(lab, honest) == {port}
    assert ping(victim_host, GATEWAY) and lab.ping_from_server(victim["address"])

    # Another port claiming the victim's link-local address in neighbour discovery.
    own = connect(claimer, "tap")
    mac = mac_of(claimer.ns, own["device"])
    assert ping(claimer, GATEWAY6)

    def claim() -> None:
        time.sleep(1.1)  # past the neighbour table's lock time
        run(sys.executable, "-c", CLAIM, own["device"], mac, honest_ll, GATEWAY, ns=claimer.ns)
        time.sleep(0.3)

    claim()
    assert neighbour(lab, honest_ll) == honest

    # The controls: without the filters the gateway believes both.
    chain = chain_of(lab, server_device(lab, own["address"]))
    run("nft", "delete", "chain", "netdev", "tunhelper", chain, ns=lab.server_ns)
    claim()
    assert neighbour(lab, honest_ll) == mac
    thief_port = server_device(lab, stolen)
    thief_chain = chain_of(lab, thief_port)
    run("nft", "delete", "chain", "netdev", "tunhelper", thief_chain, ns=lab.server_ns)
    session.ping(GATEWAY)
    assert bridge_ports(lab, honest) == {thief_port}


def test_a_client_back_after_sigkill_gets_its_mac_again(make_lab) -> None:
    """What a killed session pinned is freed by the next tap session's guard."""
    lab = make_lab(DUAL)
    client = lab.add_client()
    fixed = "02:00:00:00:00:17"  # a client whose tap MAC is the same every time
    session, address = plain_tap(client, fixed)
    assert session.ping(GATEWAY)
    device = server_device(lab, address)
    keeper = next(x["pid"] for x in lab.leases() if x["address"] == address)
    os.kill(keeper, signal.SIGKILL)  # its pins stay in the shared set, for now
    session.close()
    assert wait_until(lambda: device not in lab.server_addresses(), 10)

    again, _ = plain_tap(client, fixed)
    assert again.ping(GATEWAY)
