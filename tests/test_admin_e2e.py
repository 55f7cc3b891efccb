"""What a new admin meets first, end to end with a real sshd (issue 19)."""

from __future__ import annotations

from tests.lab import UNDERLAY, refused, run


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
