"""The order of preference, decided once for every backend.

A backend reads the rows (its own SQL, under its own lock) and asks these pure
functions which one to take, so SQLite and PostgreSQL cannot drift apart on what
"sticky", "reserved", "released longest ago" and "reclaimed" mean:

1. ``--address`` (a reservation): that slot, unless a live session holds it;
2. the client's own previous address, unless a live session holds it;
3. the lowest address never handed out (the backend's bookkeeping);
4. another client's address released longest ago;
5. an active lease whose holder is dead (or whose lifetime ran out).
"""

from __future__ import annotations

from collections.abc import Iterable

from tunhelper.store.base import ACTIVE, RELEASED, AddressTaken, Alive, Lease, Request

EXHAUSTED = (
    "pool {pool} is exhausted: every address is held by a live session; try again later, "
    "or ask the admin for a larger --pool"
)


def usable(request: Request, slot: int) -> bool:
    """In this request's range and not excluded (the gateway, the server's own)."""
    return request.first <= slot <= request.last and slot not in request.excluded


def check_reserved(request: Request, lease: Lease | None, alive: Alive) -> int:
    """The reserved slot, given the row it has (if any); AddressTaken if it cannot be."""
    slot = request.reserved
    assert slot is not None
    address = request.address_of(slot)
    if not usable(request, slot):
        raise AddressTaken(
            f"--address {address} cannot be handed out here (the gateway, or already on "
            "one of the server's interfaces); reserve another address"
        )
    if lease is not None and lease.state == ACTIVE and alive(lease):
        raise AddressTaken(
            f"--address {address} is held by another live session (client {lease.client}, "
            f"helper pid {lease.owner.helper_pid}, gateway {lease.owner.host}); end that "
            "session or reserve another address"
        )
    return slot


def sticky(request: Request, own: Iterable[Lease], alive: Alive) -> Lease | None:
    """The client's previous leases, newest first: the first usable one no live
    session holds."""
    for lease in own:
        if usable(request, lease.slot) and (lease.state == RELEASED or not alive(lease)):
            return lease
    return None


def reclaimable(request: Request, active: Iterable[Lease], alive: Alive) -> Lease | None:
    """Active leases, oldest first: the first usable one whose holder is gone."""
    for lease in active:
        if usable(request, lease.slot) and not alive(lease):
            return lease
    return None
