"""``tunhelper doctor``'s checks of the lease stores the keys' lines use.

Each backend reports on its own store (:func:`tunhelper.store.verify`: SQLite's file,
PostgreSQL's schema, clock and renewal margin), changing nothing; this module adds
what is the admin's side: which store a state directory serves, the config file's
mode, and whether the renew service runs on a fleet gateway.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from typing import Any

from tunhelper.store import POSTGRESQL, StoreConfig, renew_period, verify

RENEW_SERVICE = "tunhelper-renew.service"


def _finding(check: Any) -> Any:
    from tunhelper.admin.findings import error, ok, warning

    return {"ok": ok, "warning": warning, "error": error}[check.level](check.text)


def _shared(config: StoreConfig | None) -> bool:
    return config is not None and config.backend == POSTGRESQL


def check_local(state_dir: str, lines: Iterable[Any]) -> list:
    """The store of ``state_dir``: its SQLite database, unless every line that uses the
    directory keeps its leases in a shared store (the default config file's, when no
    line names the directory), where no session ever creates that file."""
    from tunhelper import statedir
    from tunhelper.admin.findings import ok

    users = [line for line in lines if line.state_dir == state_dir]
    stores = {line.store for line in users} if users else {_default_store()}
    if stores and all(_shared(s) for s in stores):
        names = ", ".join(sorted(s.where or "[store]" for s in stores if s is not None))
        waiting = _count_lines(statedir.path(state_dir, statedir.PENDING_RELEASES))
        return [
            ok(
                f"{state_dir}: leases are kept in the shared store of {names}; this directory "
                f"keeps only the releases the database missed ({waiting} waiting)"
            )
        ]
    return [_finding(c) for c in verify(state_dir, None, [], "")]


def _default_store() -> StoreConfig | None:
    from tunhelper.conffile import store_config
    from tunhelper.errors import UsageError

    try:
        return store_config(None)
    except UsageError:
        return None  # reported with the stores


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def check_store(config: StoreConfig, pools: list[str], timeout: float = 5.0) -> list[Any]:
    """The config file's mode, the backend's own report, the renew service."""
    from tunhelper.liveness import this_host

    if config.backend != POSTGRESQL:
        return []
    out = [_file_mode(config)]
    out += [_finding(c) for c in verify("", config, pools, this_host(), timeout)]
    out.append(_renew_service(config))
    return out


def _file_mode(config: StoreConfig) -> Any:
    from tunhelper.admin.findings import error, ok, warning

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


def _renew_service(config: StoreConfig) -> Any:
    """A fleet gateway's leases live only as long as the renew service renews them."""
    from tunhelper.admin.findings import ok, warning

    where = config.where or "[store]"
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return warning(
            f"{where}: cannot tell whether {RENEW_SERVICE} runs (no systemctl): run "
            "'tunhelper renew --loop' under a supervisor, or leases expire while held"
        )
    try:
        state = subprocess.run(
            [systemctl, "is-active", RENEW_SERVICE],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return warning(f"{where}: cannot ask systemd about {RENEW_SERVICE} ({e})")
    every = renew_period(config.lifetime)
    if state == "active":
        return ok(f"{where}: {RENEW_SERVICE} is active (a renewal every {every:g}s)")
    return warning(
        f"{where}: {RENEW_SERVICE} is {state or 'unknown'}: unless 'tunhelper renew --loop' "
        f"runs another way, this gateway's leases look expired to the others "
        f"{config.lifetime:g}s after their last renewal; run: systemctl enable --now "
        f"{RENEW_SERVICE}"
    )
