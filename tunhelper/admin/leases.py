"""The admin's view of the lease store: ``leases`` observes, ``release`` and ``repair`` act.

``tunhelper leases`` changes nothing, so it is safe to run from a monitoring script;
what killed helpers left behind is removed by ``tunhelper repair`` (and by the next
tap session of the pool), on purpose and said.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tunhelper import family, platform
from tunhelper.errors import TunhelperError
from tunhelper.link import bridge
from tunhelper.store import ACTIVE, Lease, StoreConfig, open_store
from tunhelper.store.liveness import Liveness

STALE = "stale"  # recorded active, but its helper and session are both gone


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _state(lease: Lease, alive: Liveness) -> str:
    if lease.state == ACTIVE and not alive(lease):
        return STALE
    return lease.state


def describe(
    lease: Lease, alive: Liveness, counters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One lease for the admin; bytes through the device for a live session here."""
    state = _state(lease, alive)
    io = (counters or {}).get(lease.device) if state == ACTIVE else None
    return {
        "address": lease.address,
        "pool": lease.pool,
        "client": lease.client,
        "device": lease.device,
        "state": state,
        "since": _iso(lease.since),
        "since_unix": lease.since,
        "released_at": _iso(lease.released_at),
        "pid": lease.helper_pid,
        "session_pid": lease.session_pid,
        "host": lease.host,
        "bytes_in": None if io is None else io.bytes_recv,  # from the client
        "bytes_out": None if io is None else io.bytes_sent,  # to the client
        "packets_in": None if io is None else io.packets_recv,
        "packets_out": None if io is None else io.packets_sent,
    }


FORMATS = ("table", "json", "prometheus")


def leases(
    state_dir: str,
    fmt: str = "table",
    pool: str | None = None,
    client: str | None = None,
    output: str | None = None,
    config: StoreConfig | None = None,
) -> int:
    """List the leases (``--pool``: that pool only; ``--client``: clients containing it),
    as a table, JSON or Prometheus text; ``output``: written there atomically."""
    store = open_store(state_dir, config=config)
    left = bridge.left_behind(state_dir)
    if left:
        print(
            f"note: bridge {', '.join(left)} was left without sessions by a killed helper: "
            "run 'tunhelper repair' to remove it",
            file=sys.stderr,
        )
    try:
        import psutil

        alive = Liveness()
        counters = psutil.net_io_counters(pernic=True)
        here = alive.host
        rows = [
            describe(lease, alive, counters if lease.host == here else None)
            for lease in store.leases()
        ]
    finally:
        store.close()
    rows = [
        r
        for r in rows
        if (pool is None or r["pool"] == pool) and (client is None or client in r["client"])
    ]
    if fmt == "prometheus":
        from tunhelper.admin import metrics

        text = metrics.render(rows, metrics.read_refusals(state_dir))
    elif fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        from tunhelper.admin import table

        text = table.render(rows, time.time())
    if output is not None:
        from tunhelper.admin import metrics

        metrics.write_atomically(output, text)
    else:
        sys.stdout.write(text)
    return 0


def release(state_dir: str, address: str, force: bool, config: StoreConfig | None = None) -> int:
    """Free a lease by hand; one that a live session still uses needs ``--force``."""
    import contextlib
    import ipaddress

    with contextlib.suppress(ValueError):  # IPv6 as the store keeps it: fd00:3::0:42 is ::42
        address = str(ipaddress.IPv6Address(address)) if family.of(address) == 6 else address
    store = open_store(state_dir, config=config)
    try:
        alive = Liveness()
        held = [
            lease for lease in store.leases() if lease.address == address and lease.state == ACTIVE
        ]
        if not held:
            raise TunhelperError(f"no active lease for {address}; see 'tunhelper leases'")
        live = [lease for lease in held if alive(lease)]
        if live and not force:
            lease = live[0]
            if lease.host != alive.host:  # a shared store: another gateway's, unexpired
                raise TunhelperError(
                    f"{address} is held by gateway {lease.host} (helper pid "
                    f"{lease.helper_pid} there): end that session on {lease.host}, or, if "
                    "that gateway is gone for good, use --force to free it before it expires"
                )
            raise TunhelperError(
                f"{address} is in use by a live session (helper pid {lease.helper_pid}); "
                "end that session, or use --force to free it anyway"
            )
        store.release_address(address)
    finally:
        store.close()
    print(f"released {address}")
    return 0


def repair(state_dir: str) -> int:
    """Remove the bridges tunhelper created that killed helpers left without sessions."""
    for name in bridge.repair(state_dir):
        print(f"removed bridge {name}: a killed helper had left it without sessions")
    for name in platform.remove_stale_guards():
        print(f"removed source filter {name}: a killed session had left it")
    return 0


def renew(state_dir: str, config: StoreConfig | None = None) -> int:
    """Renew this host's live leases in a shared store and release its dead ones.

    Run by ``tunhelper-renew.timer`` more often than the lease lifetime: another
    gateway counts this host's leases live only until they expire. Also does the
    releases queued while the database was away (opening the store does them)."""
    store = open_store(state_dir, config=config)
    try:
        alive = Liveness()
        live, dead = store.renew(alive.host, alive)
    finally:
        store.close()
    print(f"renewed {live} live lease(s) of {alive.host}, released {dead} dead one(s)")
    return 0


# -- entry points (tunhelper.commands) ------------------------------------------------------


def leases_command(args: argparse.Namespace) -> int:
    from tunhelper.conffile import store_config

    return leases(
        args.state_dir, args.format, args.pool, args.client, args.output, store_config(args.config)
    )


def release_command(args: argparse.Namespace) -> int:
    from tunhelper.conffile import store_config

    return release(args.state_dir, args.address, args.force, store_config(args.config))


def renew_command(args: argparse.Namespace) -> int:
    from tunhelper.conffile import store_config

    return renew(args.state_dir, store_config(args.config))


def repair_command(args: argparse.Namespace) -> int:
    return repair(args.state_dir)
