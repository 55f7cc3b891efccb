"""Leases cannot expire while held: two gateways on one PostgreSQL, the shortest lifetime
the config file accepts, renewals only from the shipped renew service's own command
and schedule (every lifetime/3). Over several lifetimes, no live session's lease ever
looks expired to the other gateway; with the service stopped, the same check sees
them expire (the control).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import pg
from tests.test_fleet_e2e import Fleet, connected, running_fleet
from tunhelper.store import MIN_LIFETIME

LIFETIMES = 3


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with running_fleet(2, lifetime=MIN_LIFETIME, shipped_renew=True) as f:
        yield f


def time_left(fleet: Fleet) -> list[tuple[str, str, float]]:
    """Each active lease's address, gateway, and seconds before it expires, by the
    database's clock (the one every gateway's expiry is compared against)."""
    assert fleet.server is not None
    return fleet.server.sql(
        "SELECT address, host, expires - extract(epoch FROM clock_timestamp())::float8 "
        "FROM leases WHERE state = 'active' ORDER BY address",
        db=pg.DB,
    )


def renew_logs(fleet: Fleet) -> str:
    return " | ".join((lab.dir / "renew.log").read_text() for lab in fleet.gateways)


def test_no_live_lease_ever_looks_expired_to_another_gateway(fleet: Fleet) -> None:
    sessions = [connected(lab.add_client()) for lab in fleet.gateways]
    worst = float("inf")
    end = time.monotonic() + LIFETIMES * MIN_LIFETIME
    while time.monotonic() < end:
        rows = time_left(fleet)
        assert len(rows) == len(sessions), rows
        worst = min(worst, *(left for _, _, left in rows))
        assert worst > 0, f"a live session's lease expired: {rows}; {renew_logs(fleet)}"
        time.sleep(0.5)
    # Renewed every third of the lifetime: never less than about a third left.
    assert worst > MIN_LIFETIME / 3 - 1, (worst, renew_logs(fleet))
    for lab, other in zip(fleet.gateways, reversed(fleet.gateways)):
        listed = json.loads(fleet.admin(lab, "leases", "--json").stdout)
        theirs = [x for x in listed if x["host"] == f"{other.hostname}"]
        assert [x["state"] for x in theirs] == ["active"], listed  # not stale, seen from here
    for s in sessions:
        assert s.ping("192.168.3.1")

    # The control: without the service, the same check sees the leases run out.
    fleet.stop_renewing()
    time.sleep(MIN_LIFETIME + 1)
    assert all(left < 0 for _, _, left in time_left(fleet)), time_left(fleet)
