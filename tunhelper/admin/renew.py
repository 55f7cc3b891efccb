"""``tunhelper renew``: keep this gateway's leases alive in every shared store it uses.

Another gateway counts this gateway's leases live only until they expire, so each
store is renewed every lifetime/3 (:func:`tunhelper.store.renew_period`), by the
loop the package ships as ``tunhelper-renew.service`` (``renew --loop``). The stores
are those the keys' lines reach (root's authorized_keys, each line's ``--config``
and state directory, read as its helper reads them) and the one ``--config`` names;
they are looked up again every round, so a new line or config file counts without a
restart. One store that cannot be reached costs one line, not the others' renewal.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from tunhelper.defaults import CONFIG_PATH, DB_TIMEOUT
from tunhelper.errors import TunhelperError
from tunhelper.liveness import Liveness
from tunhelper.store import POSTGRESQL, StoreConfig, open_store, renew_period
from tunhelper.store.base import MIN_RENEW_PERIOD


@dataclass(frozen=True)
class Target:
    """One store to renew, with the state directory whose queued releases it replays."""

    state_dir: str
    config: StoreConfig | None

    @property
    def shared(self) -> bool:
        return self.config is not None and self.config.backend == POSTGRESQL

    @property
    def name(self) -> str:
        return self.config.where if self.shared and self.config else self.state_dir


def targets(state_dir: str, config: StoreConfig | None, authorized_keys: str) -> list[Target]:
    """The given store, and every shared store a tunhelper line of ``authorized_keys``
    reaches (a line the helper would refuse reaches none; doctor says why)."""
    from tunhelper.admin import clients

    found = {Target(state_dir, config)}
    for c in clients.clients(clients.read_lines(authorized_keys)):
        settings = clients.line_settings(c)
        if settings is not None and settings.store is not None:
            line = Target(settings.state_dir, settings.store)
            if line.shared:
                found.add(line)
    return sorted(found, key=lambda t: (t.name, t.state_dir))


def renew_one(target: Target, timeout: float) -> str:
    """Renew this host's live leases in one store and release its dead ones."""
    store = open_store(target.state_dir, timeout, target.config)
    try:
        alive = Liveness()
        live, dead = store.renew(alive.host, alive)
    finally:
        store.close()
    return (
        f"{target.name}: renewed {live} live lease(s) of {alive.host}, released {dead} dead one(s)"
    )


def round_of(found: list[Target]) -> bool:
    """Renew each store once; False if one failed (said in one line)."""
    ok = True
    for target in found:
        try:
            print(renew_one(target, wait(target)), flush=True)
        except TunhelperError as e:
            print(f"tunhelper: {target.name}: {e}", file=sys.stderr, flush=True)
            ok = False
    return ok


def wait(target: Target) -> float:
    """How long one renewal waits for the database: half its period, within libpq's
    2 s minimum and the usual database timeout."""
    if target.config is None or not target.shared:
        return DB_TIMEOUT
    return max(2.0, min(renew_period(target.config.lifetime) / 2, DB_TIMEOUT))


class _Lines:
    """The stores the keys' lines reach, read again only when authorized_keys or a
    config file it names changes (checked every :data:`MIN_RENEW_PERIOD`)."""

    def __init__(self, state_dir: str, config: StoreConfig | None, authorized_keys: str) -> None:
        self.args = state_dir, config, authorized_keys
        self.seen: tuple = ()
        self.found: list[Target] = []

    def targets(self) -> list[Target]:
        paths = {self.args[2], CONFIG_PATH, *(t.config.where for t in self.found if t.config)}
        seen = tuple(sorted((p, _signature(p)) for p in paths if p))
        if seen != self.seen:
            try:
                self.found = targets(*self.args)
            except TunhelperError as e:  # authorized_keys unreadable: say so, keep the rest
                print(f"tunhelper: {e}", file=sys.stderr, flush=True)
                self.found = [Target(self.args[0], self.args[1])]
            self.seen = seen
        return self.found


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def run(
    state_dir: str, config: StoreConfig | None, authorized_keys: str, loop: bool = False
) -> int:
    """Once (an admin's run: every store found, SQLite included), or for ever (the
    service): each shared store every lifetime/3, a failed one again after
    :data:`MIN_RENEW_PERIOD`, and the lines looked at every :data:`MIN_RENEW_PERIOD`."""
    lines = _Lines(state_dir, config, authorized_keys)
    if not loop:
        return 0 if round_of(lines.targets()) else 1
    due: dict[Target, float] = {}
    while True:
        shared = [t for t in lines.targets() if t.shared and t.config is not None]
        for target in shared:
            if due.get(target, 0.0) <= time.monotonic():
                ok = round_of([target])
                assert target.config is not None
                every = renew_period(target.config.lifetime) if ok else MIN_RENEW_PERIOD
                due[target] = time.monotonic() + every
        soonest = min((due[t] for t in shared), default=float("inf"))
        time.sleep(max(0.0, min(soonest - time.monotonic(), MIN_RENEW_PERIOD)))
