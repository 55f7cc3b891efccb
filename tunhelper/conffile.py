"""Settings of the forced command: argv, over the admin's config file of named pools.

``/etc/tunhelper/tunhelper.conf`` (or ``--config PATH``) lets authorized_keys say
``command="tunhelper --pool office"``. Its format::

    # comments and blank lines are ignored
    [pool office]
    network = 192.168.3.0/24
    network = fd00:3::/112      # optional: once per family, for dual stack
    mtu = 9000
    route = 10.0.0.0/8          # keys that repeat on the command line repeat here
    route = 10.20.0.0/16
    route = fd00:20::/64        # IPv6 values need the pool's IPv6 network
    dns = 192.168.3.53
    max-sessions = 2
    up = /usr/local/sbin/tunnel-up --verbose

    [store]                     # optional: the lease store (default: SQLite in --state-dir)
    backend = postgresql        # a fleet of gateways sharing one pool
    conninfo = host=db1,db2 dbname=tunhelper user=tunhelper target_session_attrs=read-write
    lifetime = 600              # seconds another gateway's lease lives unless renewed

    [client laptop]             # a client identity: --client NAME, or SHA256:... of a key
    pool = office               # optional: only for this pool
    address = 192.168.3.10      # reserved: other clients of the pool never get it
    address = fd00:3::10        # optional: once per family, for dual stack
    client-net = 10.99.0.0/24

Pool keys are the forced command's long options without ``--`` (``network`` is the
pool's CIDR); each value is checked by the same code as the option, and a bad one is
reported as ``FILE:LINE: KEY: what is wrong``. Options given on the command line win.
The file is read only if root owns it and nobody else can write it: it configures a
program that runs as root. A ``[store]`` that holds a password needs the file private
(mode 0600); libpq's own ``~/.pgpass`` of root and ``service = NAME`` (root's
``~/.pg_service.conf``) keep it out of this file altogether.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from dataclasses import dataclass, field

from tunhelper import defaults, family
from tunhelper.errors import UsageError
from tunhelper.options import DEFAULT_ROUTE, SERVE_OPTION, Option, given_options

IDENTITY_KEYS = ("pool", "address", "client-net")
FAMILY_KEYS = ("route", "dns")  # pool keys whose family must be one the pool has
STORE_KEYS = ("backend", "conninfo", "service", "lifetime")
# A password in a libpq keyword/value string, or in a URL's user:password@.
_PASSWORD = re.compile(r"(^|\s)password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


@dataclass
class Entry:
    key: str
    value: str
    line: int


@dataclass
class Section:
    kind: str  # "pool", "client" or "store"
    name: str
    line: int
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True)
class IdentitySection:
    """What the config file's ``[client IDENTITY]`` says about one client identity."""

    pool: str | None
    addresses: tuple[str, ...]  # reservations, at most one of each family
    client_nets: tuple[str, ...]
    where: str  # FILE:LINE of the section, for errors

    def applies_to(self, *pool_names: str) -> bool:
        return self.pool is None or self.pool in pool_names


def read(path: str) -> list[Section]:
    """Parse the file into sections; only its syntax is checked here."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {path} ({e.strerror})") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise UsageError(
                f"config file {path} must be a regular file owned by root that nobody else "
                f"can write: chown root {path} && chmod go-w {path}"
            )
        text = f.read()
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        if line.startswith("["):
            words = line.strip("[]").split()
            if words == ["store"] and line.endswith("]"):
                sections.append(Section("store", "", number))
                continue
            if not line.endswith("]") or len(words) != 2 or words[0] not in ("pool", "client"):
                raise UsageError(f"{where}: a section is [pool NAME], [client IDENTITY] or [store]")
            sections.append(Section(words[0], words[1], number))
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"{where}: expected KEY = VALUE")
        if not sections:
            raise UsageError(f"{where}: {key}: outside any [pool NAME] or [client ...] section")
        sections[-1].entries.append(Entry(key, value, number))
    secret = [
        e for x in sections if x.kind == "store" for e in x.entries if _PASSWORD.search(e.value)
    ]
    if secret and st.st_mode & 0o077:
        raise UsageError(
            f"{path}:{secret[0].line}: {secret[0].key}: holds a password, so the file must "
            f"be private: chmod 600 {path} (or move the password to root's ~/.pgpass)"
        )
    return sections


def store(path: str, sections: list[Section]):
    """The ``[store]`` section as a :class:`tunhelper.store.StoreConfig`, or None."""
    from tunhelper.store import (
        DEFAULT_LIFETIME,
        MAX_LIFETIME,
        MIN_LIFETIME,
        POSTGRESQL,
        SQLITE,
        StoreConfig,
    )

    found = [s for s in sections if s.kind == "store"]
    if not found:
        return None
    section = found[-1]
    values: dict[str, Entry] = {}
    for entry in section.entries:
        if entry.key not in STORE_KEYS:
            raise UsageError(
                f"{path}:{entry.line}: {entry.key}: not a store setting ({', '.join(STORE_KEYS)})"
            )
        values[entry.key] = entry
    backend = values["backend"].value if "backend" in values else SQLITE
    if backend not in (SQLITE, POSTGRESQL):
        raise UsageError(
            f"{path}:{values['backend'].line}: backend: give sqlite or postgresql, not {backend!r}"
        )
    conninfo = values["conninfo"].value if "conninfo" in values else ""
    if "service" in values:
        if conninfo:
            raise UsageError(
                f"{path}:{values['service'].line}: service: give conninfo or service, not both"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", values["service"].value):
            raise UsageError(f"{path}:{values['service'].line}: service: not a service name")
        conninfo = f"service={values['service'].value}"
    if backend == POSTGRESQL and not conninfo:
        raise UsageError(
            f"{path}:{section.line}: [store] with backend = postgresql needs conninfo = ... "
            "or service = NAME"
        )
    lifetime = DEFAULT_LIFETIME
    if "lifetime" in values:
        entry = values["lifetime"]
        try:
            lifetime = float(entry.value)
        except ValueError:
            lifetime = -1.0
        if 0 < lifetime < MIN_LIFETIME:
            raise UsageError(
                f"{path}:{entry.line}: lifetime: {entry.value} s is too short for the renew "
                f"service (a renewal every lifetime/3, each waiting up to half of that): "
                f"give at least {MIN_LIFETIME:g}"
            )
        if not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
            raise UsageError(
                f"{path}:{entry.line}: lifetime: give seconds from {MIN_LIFETIME:g} to "
                f"{MAX_LIFETIME:g}, not {entry.value!r}"
            )
    return StoreConfig(backend, conninfo, lifetime, path)


def store_config(config: str | None):
    """The store the admin configured: ``config``'s [store], else the default file's if
    it exists (a fleet's gateways need not repeat --config on every key), else None."""
    path = config or defaults.CONFIG_PATH
    if config is None and not os.path.exists(path):
        return None
    return store(path, read(path))


def _check(option: Option, value: str, where: str, key: str) -> object:
    """The option's own validation, reported against the file's line and key."""
    if option.flag:  # yes/no
        if value.lower() in ("yes", "true", "1"):
            return True
        if value.lower() in ("no", "false", "0"):
            return False
        raise UsageError(f"{where}: {key}: give yes or no, not {value!r}")
    try:
        return option.type(value) if option.type else value
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"{where}: {key}: {e}") from None


def apply_pool(
    args: argparse.Namespace, argv: list[str], path: str, sections: list[Section]
) -> None:
    """Fill what argv left unset from the ``[pool NAME]`` that ``--pool`` names."""
    (wanted,) = args.pool
    matches = [s for s in sections if s.kind == "pool" and s.name == wanted]
    if not matches:
        raise UsageError(f"--pool {wanted}: no [pool {wanted}] in {path}")
    given = given_options(argv)
    values: dict[str, object] = {}
    families: set[int] = set()
    addressed: list[tuple[str, str, str]] = []  # (where, key, value) of route and dns
    for entry in matches[-1].entries:
        where, key = f"{path}:{entry.line}", entry.key
        option = SERVE_OPTION.get("pool" if key == "network" else key)
        if option is None or not (option.in_pools or key == "network"):
            raise UsageError(f"{where}: {key}: not a pool setting")
        value = _check(option, entry.value, where, key)
        if key in FAMILY_KEYS and option.dest not in given and value != DEFAULT_ROUTE:
            addressed.append((where, key, str(value)))
        if key == "network":
            from tunhelper.pool import Pool

            try:
                version = Pool.parse(entry.value, gateway_optional=True).version
            except UsageError as e:
                raise UsageError(f"{where}: network: {e}") from None
            if version in families:
                raise UsageError(
                    f"{where}: network: a second IPv{version} network; a pool has at most "
                    "one network of each family"
                )
            families.add(version)
        if option.repeatable:
            values.setdefault(option.dest, []).append(value)  # type: ignore[union-attr]
        else:
            values[option.dest] = value
    if "pool" not in values:
        raise UsageError(f"{path}:{matches[-1].line}: [pool {wanted}] has no network")
    for where, key, value in addressed:
        version = family.of(value)
        if version not in families:
            kind = "network" if "/" in value else "address"
            raise UsageError(
                f"{where}: {key}: {value} is an IPv{version} {kind} but [pool {wanted}] has "
                f"no IPv{version} network: add one (network = ...) or drop this {key}"
            )
    for dest, value in values.items():
        if dest == "pool" or dest not in given:
            setattr(args, dest, value)


def identities(path: str, sections: list[Section]) -> dict[str, IdentitySection]:
    """Every ``[client IDENTITY]``, checked."""
    out: dict[str, IdentitySection] = {}
    for section in (s for s in sections if s.kind == "client"):
        pool, addresses, nets = None, {}, []
        for entry in section.entries:
            where = f"{path}:{entry.line}"
            if entry.key not in IDENTITY_KEYS:
                raise UsageError(f"{where}: {entry.key}: not a client setting")
            if entry.key == "pool":
                pool = entry.value
            elif entry.key == "address":
                address = _check(SERVE_OPTION["address"], entry.value, where, entry.key)
                version = family.of(address)
                if version in addresses:
                    raise UsageError(
                        f"{where}: address: a second IPv{version} address "
                        f"({addresses[version]}, {address}); a client has at most one "
                        "of each family"
                    )
                addresses[version] = address
            else:
                nets.append(_check(SERVE_OPTION["client-net"], entry.value, where, entry.key))
        out[section.name] = IdentitySection(
            pool,
            tuple(addresses.values()),
            tuple(nets),
            f"{path}:{section.line}",  # type: ignore[arg-type]
        )
    return out
