"""Connecting to the shared store, and its errors as one line (:mod:`.postgres`).

Apart so that the store module keeps to its allocation logic; psycopg is imported
here too, so only a configured PostgreSQL store loads this module.
"""

from __future__ import annotations

import os
import pwd

import psycopg
from psycopg import errors as pg_errors

from tunhelper.errors import TunhelperError
from tunhelper.store.base import LEASE_FIELDS, AddressTaken, StoreConfig, StoreError


def connect_args(config: StoreConfig, timeout: float) -> str:
    """The conninfo, complete: libpq must take nothing from the environment.

    A client may send environment variables through sshd (AcceptEnv), and libpq reads
    PGHOST, PGPASSFILE, PGSERVICEFILE, PGOPTIONS and more for every key the conninfo
    leaves out. So they are removed from this process's environment before connecting,
    and the files that default from the home directory are given explicitly, from the
    password database rather than from $HOME.
    """
    for name in [k for k in os.environ if k.startswith("PG")]:
        del os.environ[name]
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        given = conninfo_to_dict(config.conninfo)
    except psycopg.ProgrammingError as e:
        raise StoreError(f"{config.where}: conninfo: {first_line(e)}") from None
    home = pwd.getpwuid(os.geteuid()).pw_dir
    extra: dict[str, object] = {}
    if "passfile" not in given:
        extra["passfile"] = os.path.join(home, ".pgpass")
    # libpq before 18 has no servicefile key: its one way in is the environment, set
    # here from the password database, never left to what the client sent.
    os.environ["PGSERVICEFILE"] = os.path.join(home, ".pg_service.conf")
    if "connect_timeout" not in given:
        extra["connect_timeout"] = max(2, int(timeout + 0.999))  # libpq: 0 waits forever
    if "application_name" not in given:
        extra["application_name"] = "tunhelper"
    if "options" not in given:  # bounded waits for locks, as --db-timeout says
        extra["options"] = f"-c lock_timeout={int(timeout * 1000) or 1}"
    return make_conninfo(config.conninfo, **extra)


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def placeholder(entry: dict) -> dict:
    """A lease record good enough to queue its release again."""
    blank = {f: None for f in LEASE_FIELDS}
    return {**blank, **entry}


class Errors:
    """Turn the database's errors into one line."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        if value is None or not isinstance(value, psycopg.Error):
            return False
        if isinstance(value, pg_errors.LockNotAvailable):
            raise StoreError(
                "the lease database's pool stayed locked by another gateway's allocation "
                "longer than --db-timeout; try again"
            ) from None
        if isinstance(value, pg_errors.UniqueViolation):
            raise AddressTaken(
                "that address is active in an overlapping pool of another gateway; "
                "give the gateways the same --pool (run 'tunhelper doctor')"
            ) from None
        if isinstance(value, psycopg.OperationalError):
            raise StoreError(
                f"lost the lease database ({first_line(value)}); check that PostgreSQL "
                f"is up and [store] in {self.where}"
            ) from None
        raise StoreError(
            f"lease database error ({first_line(value)}); run 'tunhelper doctor'"
        ) from None


def unreachable(e: TunhelperError) -> bool:
    return str(e).startswith(("cannot reach the lease database", "lost the lease database"))
