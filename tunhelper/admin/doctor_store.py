"""``tunhelper doctor``'s checks of a shared lease store (``[store]`` in the config file).

Nothing is changed: the database is opened with a connection of our own, read only,
so a missing or older schema is reported, not created or migrated (the first session
does that under its lock). psycopg is imported only when a PostgreSQL store is
configured, as everywhere else.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from tunhelper.errors import TunhelperError
from tunhelper.store import POSTGRESQL, StoreConfig

SKEW_WARNING = 1.0  # seconds between this gateway's clock and the database's


def check_store(config: StoreConfig, pools: list[str], timeout: float = 5.0) -> list[Any]:
    """The config file's mode, the connection, the schema, the clock, other gateways' pools."""
    from tunhelper.admin.findings import error, ok, warning

    if config.backend != POSTGRESQL:
        return []
    where = config.where or "[store]"
    out = [_file_mode(config, ok, warning, error)]
    try:
        import psycopg

        from tunhelper.store import pgconnect, pgschema
    except ImportError:
        return [
            *out,
            error(f"{where}: backend = postgresql needs psycopg 3: apt install python3-psycopg"),
        ]
    try:
        conninfo = pgconnect.connect_args(config, timeout)
        before = time.time()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            (now,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            after = time.time()
            version = _schema_version(conn)
            known = _pools(conn) if version is not None else []
    except psycopg.Error as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [*out, error(f"{where}: cannot reach the lease database ({text})")]
    except TunhelperError as e:
        return [*out, error(str(e))]
    out.append(ok(f"{where}: the lease database answers ({(after - before) * 1000:.0f} ms)"))
    out.append(_schema(where, version, pgschema.SCHEMA_VERSION, ok, warning, error))
    skew = float(now) - (before + after) / 2
    line = f"{where}: this clock is {abs(skew):.2f}s {'behind' if skew > 0 else 'ahead of'} the "
    if abs(skew) > config.lifetime / 10:
        out.append(error(line + "database's: leases expire at the wrong time; run NTP"))
    elif abs(skew) > SKEW_WARNING:
        out.append(warning(line + "database's; run NTP on every gateway"))
    else:
        out.append(ok(line + "database's"))
    out.extend(_overlaps(where, pools, known, ok, error))
    return out


def _file_mode(config: StoreConfig, ok, warning, error) -> Any:
    try:
        mode = stat.S_IMODE(os.stat(config.where).st_mode)
    except OSError as e:
        return error(f"{config.where}: cannot stat the config file ({e.strerror})")
    if mode & 0o077 and "password" in config.conninfo.lower():
        return error(f"{config.where}: holds a password but has mode {mode:04o}: chmod 600")
    if mode & 0o004:
        return warning(
            f"{config.where}: mode {mode:04o}: every local user can read where the lease "
            "database is; chmod 600 (or 640 for a group of admins)"
        )
    return ok(f"{config.where}: mode {mode:04o}")


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


def _schema(where: str, version: int | None, ours: int, ok, warning, error) -> Any:
    if version is None:
        return ok(f"{where}: no schema yet; the first session creates it (version {ours})")
    if version == ours:
        return ok(f"{where}: schema version {version}, as this tunhelper expects")
    if version < ours:
        return warning(
            f"{where}: schema version {version}, older than this tunhelper's {ours}: the "
            "first session migrates it; upgrade the other gateways too"
        )
    return error(
        f"{where}: schema version {version} is newer than this tunhelper's {ours}: "
        "its sessions are refused; upgrade tunhelper on this gateway"
    )


def _overlaps(where: str, ours: list[str], known: list[str], ok, error) -> list[Any]:
    """A pool of this gateway that overlaps another gateway's with a different prefix
    hands addresses out in two numberings: the database refuses a second active lease
    of one address, so clients are refused where a common pool would serve them."""
    import ipaddress

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
                    error(
                        f"{where}: pool {mine} overlaps pool {theirs} of the shared store with "
                        "a different prefix: give every gateway the same pool"
                    )
                )
    if not out and ours:
        out.append(ok(f"{where}: no pool here overlaps another gateway's ({len(known)} known)"))
    return out
