"""The PostgreSQL store verifying itself, for ``tunhelper doctor``.

Over a connection of its own that creates and migrates nothing: the connection, the
schema version against this tunhelper's, this clock against the database's (expiry
is compared across gateways' clocks), this gateway's pools against the shared
store's, and how long before this gateway's active leases would look expired to the
others (the margin its renewals keep). psycopg is imported by the caller's choice of
this module only.
"""

from __future__ import annotations

import ipaddress
import time

import psycopg

from tunhelper.errors import TunhelperError
from tunhelper.store.base import Check, StoreConfig, renew_period
from tunhelper.store.pgconnect import connect_args, first_line
from tunhelper.store.pgschema import SCHEMA_VERSION

SKEW_WARNING = 1.0  # seconds between this gateway's clock and the database's


def verify(config: StoreConfig, pools: list[str], host: str, timeout: float) -> list[Check]:
    """What doctor prints about the store ``config`` names, for gateway ``host``."""
    where = config.where or "[store]"
    try:
        before = time.time()
        with psycopg.connect(connect_args(config, timeout), autocommit=True) as conn:
            (now,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            after = time.time()
            version = _schema_version(conn)
            known = _pools(conn) if version is not None else []
            margin = _margin(conn, host) if version is not None else (0, None)
    except psycopg.Error as e:
        return [Check("error", f"{where}: cannot reach the lease database ({first_line(e)})")]
    except TunhelperError as e:
        return [Check("error", str(e))]
    out = [Check("ok", f"{where}: the lease database answers ({(after - before) * 1000:.0f} ms)")]
    out.append(_schema(where, version))
    out.append(_skew(where, float(now) - (before + after) / 2, config.lifetime))
    out.append(_renewed(where, config.lifetime, *margin))
    out.extend(_overlaps(where, pools, known))
    return out


def _schema_version(conn) -> int | None:
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return None
    return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]


def _pools(conn) -> list[str]:
    exists = conn.execute("SELECT to_regclass('pools') IS NOT NULL").fetchone()[0]
    query = "SELECT DISTINCT pool FROM leases"
    if exists:
        query += " UNION SELECT pool FROM pools"
    return sorted(row[0] for row in conn.execute(query).fetchall())


def _margin(conn, host: str) -> tuple[int, float | None]:
    """How many active leases ``host`` has, and the least time left on one (seconds,
    by the database's clock), which is what another gateway compares."""
    count, left = conn.execute(
        "SELECT count(*), min(expires) - extract(epoch FROM clock_timestamp())::float8 "
        "FROM leases WHERE state = 'active' AND host = %s",
        (host,),
    ).fetchone()
    return count, left


def _schema(where: str, version: int | None) -> Check:
    if version is None:
        return Check("ok", f"{where}: no schema yet; the first session creates it")
    if version == SCHEMA_VERSION:
        return Check("ok", f"{where}: schema version {version}, as this tunhelper expects")
    if version < SCHEMA_VERSION:
        return Check(
            "warning",
            f"{where}: schema version {version}, older than this tunhelper's {SCHEMA_VERSION}: "
            "the first session migrates it; upgrade the other gateways too",
        )
    return Check(
        "error",
        f"{where}: schema version {version} is newer than this tunhelper's {SCHEMA_VERSION}: "
        "its sessions are refused; upgrade tunhelper on this gateway",
    )


def _skew(where: str, skew: float, lifetime: float) -> Check:
    line = f"{where}: this clock is {abs(skew):.2f}s {'behind' if skew > 0 else 'ahead of'} the "
    if abs(skew) > lifetime / 10:
        return Check("error", line + "database's: leases expire at the wrong time; run NTP")
    if abs(skew) > SKEW_WARNING:
        return Check("warning", line + "database's; run NTP on every gateway")
    return Check("ok", line + "database's")


def _renewed(where: str, lifetime: float, count: int, left: float | None) -> Check:
    """This gateway's real margin: an active lease with less than a renewal period
    left was not renewed on schedule; one past its expiry looks dead to the others."""
    every = renew_period(lifetime)
    if not count or left is None:
        return Check("ok", f"{where}: no active lease of this gateway to renew")
    said = f"{where}: this gateway's {count} active lease(s) expire in {left:.0f}s at the soonest"
    if left <= 0:
        return Check(
            "error",
            f"{said.replace('expire in', 'expired')}: other gateways count them dead and may "
            "hand their addresses out; start tunhelper-renew.service",
        )
    if left < lifetime / 2:  # renewed every third: at least two thirds left on schedule
        return Check(
            "warning",
            f"{said} (lifetime {lifetime:g}s, renewed every {every:g}s): a renewal was "
            "missed; check tunhelper-renew.service and the database",
        )
    return Check("ok", f"{said} (lifetime {lifetime:g}s, renewed every {every:g}s)")


def _overlaps(where: str, ours: list[str], known: list[str]) -> list[Check]:
    """A pool of this gateway that overlaps another gateway's with a different prefix
    hands addresses out in two numberings: the database refuses a second active lease
    of one address, so clients are refused where a common pool would serve them."""
    out = []
    for mine in sorted(set(ours)):
        a = ipaddress.ip_network(mine, strict=False)
        for theirs in known:
            try:
                b = ipaddress.ip_network(theirs, strict=False)
            except ValueError:
                continue
            if a.version == b.version and a != b and a.overlaps(b):
                out.append(
                    Check(
                        "error",
                        f"{where}: pool {mine} overlaps pool {theirs} of the shared store with "
                        "a different prefix: give every gateway the same pool",
                    )
                )
    if not out and ours:
        out.append(
            Check("ok", f"{where}: no pool here overlaps another gateway's ({len(known)} known)")
        )
    return out
