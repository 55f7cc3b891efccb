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
from tunhelper.liveness import Liveness
from tunhelper.store import ACTIVE, Lease, StoreConfig, open_store

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
    io = (counters or {}).get(lease.owner.device) if state == ACTIVE else None
    return {
        "address": lease.address,
        "pool": lease.pool,
        "client": lease.client,
        "device": lease.owner.device,
        "state": state,
        "since": _iso(lease.since),
        "since_unix": lease.since,
        "released_at": _iso(lease.released_at),
        "pid": lease.owner.helper_pid,
        "session_pid": lease.owner.session_pid,
        "host": lease.owner.host,
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
    output_group: str | None = None,
) -> int:
    """List the leases (``--pool``: that pool only; ``--client``: exactly the identities
    of the client line of that name, or that identity), as a table, JSON or Prometheus
    text; ``output``: written there atomically."""
    wanted = set() if client is None else _identities(client)
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
            describe(lease, alive, counters if lease.owner.host == here else None)
            for lease in store.all_leases()
        ]
    finally:
        store.close()
    rows = [
        r
        for r in rows
        if (pool is None or r["pool"] == pool) and (client is None or r["client"] in wanted)
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

        metrics.write_atomically(output, text, output_group)
    else:
        sys.stdout.write(text)
    return 0


def _identities(name: str) -> set[str]:
    """``name`` itself as an identity, and the identities of root's authorized_keys
    lines named ``name`` (``tunhelper client list``): exact, never a substring."""
    from tunhelper.admin import clients

    found = {name}
    for c in clients.clients(clients.read_lines(clients.default_path())):
        if c.name == name:
            settings = clients.line_settings(c)
            if settings is not None:
                found |= clients.identities(c, settings)
    return found


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
            lease
            for lease in store.all_leases()
            if lease.address == address and lease.state == ACTIVE
        ]
        if not held:
            raise TunhelperError(f"no active lease for {address}; see 'tunhelper leases'")
        live = [lease for lease in held if alive(lease)]
        if live and not force:
            lease = live[0]
            if lease.owner.host != alive.host:  # a shared store: another gateway's, unexpired
                owner = lease.owner
                raise TunhelperError(
                    f"{address} is held by gateway {owner.host} (helper pid "
                    f"{owner.helper_pid} there): end that session on {owner.host}, or, if "
                    "that gateway is gone for good, use --force to free it before it expires"
                )
            raise TunhelperError(
                f"{address} is in use by a live session (helper pid {lease.owner.helper_pid}); "
                "end that session, or use --force to free it anyway"
            )
        for lease in held:  # these grants only, by token: never a row judged by no one
            store.release(lease)
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


# -- entry points (tunhelper.commands) ------------------------------------------------------


def leases_command(args: argparse.Namespace) -> int:
    from tunhelper.conffile import store_config

    return leases(
        args.state_dir,
        args.format,
        args.pool,
        args.client,
        args.output,
        store_config(args.config),
        args.output_group,
    )


def release_command(args: argparse.Namespace) -> int:
    from tunhelper.conffile import store_config

    return release(args.state_dir, args.address, args.force, store_config(args.config))


def renew_command(args: argparse.Namespace) -> int:
    from tunhelper.admin import clients, renew
    from tunhelper.conffile import store_config

    keys = args.authorized_keys or clients.default_path()
    return renew.run(args.state_dir, store_config(args.config), keys, args.loop)


def repair_command(args: argparse.Namespace) -> int:
    return repair(args.state_dir)
