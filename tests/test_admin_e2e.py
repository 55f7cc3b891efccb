"""What a new admin meets first, end to end with a real sshd (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.lab import REPO, UNDERLAY, Client, refused, run, tunhelper_command, wait_until


def test_pool_overlapping_the_underlay_is_refused_before_any_lease(make_lab) -> None:
    # The lab's clients reach sshd from 10.231.1.x on the server's 10.231.0.0/16: a pool
    # there would lease a client an address whose host route swallows the ssh connection.
    lab = make_lab(["--pool", f"{UNDERLAY}.1.0/24"])
    client = lab.add_client()
    line = refused(client.connect(), 15)
    assert f"pool {UNDERLAY}.1.0/24" in line, line
    assert "overlaps" in line or "own address" in line, line
    assert lab.leases() == []
    assert lab.server_tun_devices() == []


def test_overlap_names_the_server_network_when_the_client_is_elsewhere(make_lab) -> None:
    lab = make_lab(["--pool", f"{UNDERLAY}.200.0/24"])
    client = lab.add_client()
    line = refused(client.connect(), 15)
    assert f"pool {UNDERLAY}.200.0/24 overlaps {UNDERLAY}.0.0/16 on the server's interface " in line
    assert lab.leases() == []


def test_doctor_flags_pools_overlapping_server_networks(make_lab) -> None:
    lab = make_lab()
    run("ip", "-6", "addr", "add", "fd00:e2e::1/64", "dev", lab.bridge, "nodad", ns=lab.server_ns)
    lab.add_client(helper_args=["--pool", "192.168.3.0/24", "--pool", "fd00:e2e::/112"])
    lab.add_client(helper_args=["--pool", f"{UNDERLAY}.9.0/24", "--pool", "fd00:99::/112"])
    out = lab.doctor().stdout
    flagged = [line for line in out.splitlines() if " on the server's interface " in line]
    assert any("pool fd00:e2e::/112 overlaps fd00:e2e::/64" in x for x in flagged), out
    assert any(f"pool {UNDERLAY}.9.0/24 overlaps {UNDERLAY}.0.0/16" in x for x in flagged), out
    assert all(x.startswith("error: ") for x in flagged), out
    assert len(flagged) == 2, out  # neither 192.168.3.0/24 nor fd00:99::/112


def test_a_replaced_session_is_told_why_before_it_ends(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    old = client.connect()
    address = old.read_address()
    assert address is not None
    new = client.connect()
    assert new.read_address() == address
    assert old.wait(10) is not None
    lines = [x for x in old.stderr().splitlines() if x.startswith("tunhelper:")]
    assert lines == [
        f"tunhelper: session {address} replaced by a newer session of this key "
        "(--max-sessions 1): ending it"
    ], old.stderr()
    assert "replaced" not in new.stderr()
    assert not list((lab.dir / "state" / "replaced").iterdir())  # the note was taken


def tunhelper(*argv: str) -> subprocess.CompletedProcess:
    return run(tunhelper_command(), *argv, check=False)


def test_client_add_list_revoke_with_a_real_sshd(make_lab) -> None:
    lab = make_lab()
    keys = str(lab.dir / "authorized_keys")
    lab.add_client("admin")  # a line client add must keep byte for byte
    before = (lab.dir / "authorized_keys").read_bytes()
    laptop = Client(lab, "laptop", len(lab.clients) + 2)
    lab.clients.append(laptop)
    laptop.setup()
    added = tunhelper(
        "client", "add", "laptop", "--key", laptop.public_key, "--authorized-keys", keys,
        "--", "--pool", "192.168.3.0/24", "--max-leases", "2", "--state-dir", lab.state_dir,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    after = (lab.dir / "authorized_keys").read_bytes()
    assert after.startswith(before)
    (line,) = after[len(before) :].decode().splitlines()
    assert line.startswith(
        "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc,"
        f'command="{tunhelper_command()} --pool 192.168.3.0/24'
    )
    assert line.endswith(" laptop")
    again = tunhelper("client", "add", "laptop", "--key", laptop.public_key,
                      "--authorized-keys", keys, "--", "--pool", "192.168.3.0/24")  # fmt: skip
    assert again.returncode != 0 and "already has a client named laptop" in again.stderr

    session = laptop.connect()
    address = session.read_address()
    assert address is not None, session.stderr()
    listed = json.loads(tunhelper("client", "list", "--json", "--authorized-keys", keys).stdout)
    (row,) = [r for r in listed if r["name"] == "laptop"]
    assert [x["address"] for x in row["leases"]] == [address]

    revoked = tunhelper("client", "revoke", "laptop", "--authorized-keys", keys)
    assert revoked.returncode == 0, revoked.stderr
    assert "ended 1 session" in revoked.stdout
    assert session.wait(10) is not None  # ended at once, not at its next reconnect
    assert "client laptop was revoked" in session.stderr()
    assert (lab.dir / "authorized_keys").read_bytes() == before
    assert wait_until(lambda: lab.active_leases() == [], 5)
    assert laptop.connect().read_address(10) is None  # the key no longer gets in


def sign(lab, client: Client, key_id: str, serial: int) -> None:
    run(
        "ssh-keygen", "-q", "-s", str(lab.dir / "ca"), "-I", key_id, "-n", "root",
        "-z", str(serial), "-V", "-5m:+1h", f"{client.key}.pub",
    )  # fmt: skip


def test_certificate_clients_keep_their_address_across_renewals(make_lab) -> None:
    restrictions = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding"
    lab = make_lab(key_options=f"cert-authority,{restrictions}")
    config = lab.dir / "tunhelper.conf"
    config.write_text("[client cert:bob]\naddress = 192.168.3.77\n")
    os.chmod(config, 0o600)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f", str(lab.dir / "ca"))
    ca = (lab.dir / "ca.pub").read_text().strip()
    lab.authorize(ca, ["--pool", "192.168.3.0/24", "--config", str(config)])
    alice, bob = (Client(lab, name, i) for i, name in ((2, "alice"), (3, "bob")))
    for c in (alice, bob):
        lab.clients.append(c)
        c.setup()

    first_addresses = []
    for serial in (1, 2):  # a renewal: a new certificate, so a new fingerprint
        sign(lab, alice, "alice", serial)
        session = alice.connect()
        address = session.read_address()
        assert address is not None, session.stderr()
        (lease,) = lab.active_leases()
        assert lease["client"] == "cert:alice"
        first_addresses.append(address)
        session.close()
        assert wait_until(lambda: lab.active_leases() == [], 10)
    assert first_addresses[0] == first_addresses[1]

    sign(lab, bob, "bob", 7)
    session = bob.connect()
    assert session.read_address() == "192.168.3.77", session.stderr()  # [client cert:bob]
    session.close()


def test_doctor_checks_forwarding_for_keys_that_route(make_lab) -> None:
    lab = make_lab()
    lab.add_client(helper_args=["--pool", "192.168.3.0/24", "--route", "10.77.0.0/16"])
    lab.add_client(helper_args=["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"])
    run("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=lab.server_ns)
    out = lab.doctor().stdout
    (line,) = [x for x in out.splitlines() if "ip_forward" in x]
    assert line.startswith("error: ") and "route IPv4 beyond the gateway" in line, out
    assert "forwarding" not in out.replace("ip_forward", ""), out  # no key routes IPv6
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=lab.server_ns)
    out = lab.doctor().stdout
    assert "ok: net.ipv4.ip_forward = 1: IPv4 packets are forwarded" in out, out


def test_contrib_masquerade_file_loads_and_removes_cleanly(make_lab) -> None:
    lab = make_lab()
    nft = str(REPO / "contrib" / "nftables" / "tunhelper-masquerade.nft")
    for _ in range(2):  # loading it twice replaces it, never doubles it
        run("nft", "-f", nft, ns=lab.server_ns)
    listed = run("nft", "list", "table", "inet", "tunhelper_nat", ns=lab.server_ns).stdout
    assert listed.count("masquerade") == 2, listed
    run("nft", "delete", "table", "inet", "tunhelper_nat", ns=lab.server_ns)
    assert "tunhelper_nat" not in run("nft", "list", "tables", ns=lab.server_ns).stdout


def test_connect_explains_a_wrong_command_path_within_seconds(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client(command="/usr/local/bin/tunhelper --pool 192.168.3.0/24")
    started = time.monotonic()
    conn = client.tunhelper_connect()
    assert conn.status() is None
    assert conn.wait(15) == 1
    assert time.monotonic() - started < 6  # not the old 10 s wait on an open tunnel
    assert "could not run the key's forced command" in conn.stderr(), conn.stderr()
    assert "No such file" in conn.stderr()  # the server's shell, passed through


@pytest.mark.parametrize("permit, tap", [("no", False), ("point-to-point", True)])
def test_connect_explains_a_refused_tunnel(make_lab, permit: str, tap: bool) -> None:
    lab = make_lab(sshd_options={"PermitTunnel": permit})
    client = lab.add_client()
    conn = client.tunhelper_connect(*(["--tap"] if tap else []))
    assert conn.status() is None and conn.wait(15) == 1
    text = conn.stderr()
    assert "Tunnel forwarding failed" in text  # OpenSSH's own line, passed through
    kind = "ethernet (tap)" if tap else "point-to-point (tun)"
    assert f"the server refused the {kind} tunnel: PermitTunnel" in text, text
