"""A burst of one key's connections under ``--max-sessions 1`` leaves no source filter.

Each new session ends the older one with SIGTERM, which may land while the older one
is still installing its nftables chain. The chain is recorded before ``nft`` runs
(server/teardown.py's ``Guarded``), and teardown deletes it by that recorded name, so
after every round the table holds no chain, and it does not grow from round to round.
"""

from __future__ import annotations

import pytest

from tests.lab import Lab, run, wait_until
from tests.test_spoof_e2e import chains, pins

BURST, ROUNDS = 8, 3


def table_size(lab: Lab) -> int:
    """Lines of our table's listing: chains, rules, sets and their elements."""
    out = run("nft", "list", "table", "netdev", "tunhelper", ns=lab.server_ns, check=False)
    return len(out.stdout.splitlines()) if out.returncode == 0 else 0


def running(sessions: list) -> int:
    return sum(s.wait(0) is None for s in sessions)


@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_a_burst_of_takeovers_leaves_no_chain(make_lab, mode) -> None:
    lab = make_lab(("--pool", "192.168.3.0/24", "--max-sessions", "1"))
    client = lab.add_client("burst")
    extra = ("-o", "Tunnel=ethernet") if mode == "tap" else ()
    sizes = []
    for _ in range(ROUNDS):
        sessions = [client.connect(*extra) for _ in range(BURST)]
        # The takeovers run their course (every session but the newest ended by a later
        # one), bounded; what is checked is what they leave in the table. Not asserted
        # here: on tap, CI runs twice saw two sessions of the key still running after
        # 60 s, a --max-sessions race of its own (issue 24's closing note), which
        # does not change what a takeover leaves behind.
        wait_until(lambda batch=sessions: running(batch) <= 1, 30)
        for s in sessions:
            s.close()
        assert wait_until(lambda: lab.active_leases() == [], 15), lab.leases()
        assert wait_until(lambda: chains(lab) == [], 10), chains(lab)
        assert pins(lab) == []
        sizes.append(table_size(lab))
    # No growth from round to round. A round whose sessions were all ended before any
    # reached its guard leaves no table at all (size 0): that is no growth either.
    present = [size for size in sizes if size]
    assert present == present[:1] * len(present), sizes


def test_the_check_sees_a_leaked_chain(make_lab) -> None:
    """The control: a chain left in the table is what the checks above would see."""
    lab = make_lab()
    empty = table_size(lab)
    run("nft", "add", "table", "netdev", "tunhelper", ns=lab.server_ns)
    run("nft", "add", "chain", "netdev", "tunhelper", "tun0_99999", ns=lab.server_ns)
    assert chains(lab) == ["tun0_99999"]
    assert table_size(lab) > empty
