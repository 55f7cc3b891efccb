"""``tunhelper doctor``: check a gateway's setup, one line per finding, and change nothing.

What it reads: sshd's effective configuration for root (``sshd -T -C user=root``, so
``Match User`` blocks apply; blocks on address or host cannot be judged without a
client), the lines of root's authorized_keys that run tunhelper (their arguments go
through the very parsers the helper uses, so doctor and the helper never disagree),
the tun device, persistent tunN/tapN devices a client could ask sshd for, the
platform's source filtering (asked of the platform, which knows the host), the state
directories and their lease databases (opened read-only). Every finding is one line,
``ok:``, ``warning:`` or ``error:``; any error makes the exit status 1.

sshd's settings are judged in ``doctor_sshd.py``, the stores in ``doctor_store.py``;
every OpenSSH format (``sshd -T``, versions, authorized_keys lines, the restriction
list) is read by ``openssh.py``, which ``client add|list|revoke`` shares.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunhelper import family, platform, statedir
from tunhelper.admin import doctor_sshd, openssh
from tunhelper.admin.findings import ERROR, OK, Finding, error, ok, warning
from tunhelper.admin.openssh import SshdConfig, Version
from tunhelper.errors import TunhelperError, UsageError

if TYPE_CHECKING:
    from tunhelper.pool import Pool
    from tunhelper.store import StoreConfig


# -- authorized_keys -------------------------------------------------------------------


@dataclass(frozen=True)
class KeyLine:
    """One authorized_keys line that runs tunhelper, with what its arguments say."""

    where: str
    program: str
    pool: Pool
    state_dir: str
    gateway: str | None
    tap: bool = False  # the line gives tap sessions a bridge of their own choosing
    store: StoreConfig | None = None  # the config file's [store], if any
    pool6: Pool | None = None  # the IPv6 pool of a dual-stack line
    pools: tuple[Pool, ...] = ()  # every pool of the line (both of a dual-stack one)
    bridge: str = ""  # the bridge its tap sessions join (a --bridge LAN may hold the pool)
    forwards: tuple[int, ...] = ()  # IP versions of its --route and --client-net


def check_key_line(
    where: str, line: str, version: Version | None = None
) -> tuple[list[Finding], KeyLine | None]:
    """Findings for one line; the parsed line when it runs tunhelper with sound arguments.

    ``version``: the sshd's OpenSSH version (``None``: unknown, judged as the newest).
    """
    from tunhelper.commands import WORDS
    from tunhelper.link.bridge import default_name
    from tunhelper.settings import serve_settings

    try:
        found = openssh.tunhelper_line(line)
    except ValueError as e:
        return [error(f"{where}: cannot read the line ({e})")], None
    if found is None:
        return [], None
    program, args = found.program, found.args
    out = _restrictions(where, found.names, version)
    if args and args[0] in WORDS:
        out.append(error(f"{where}: the forced command runs 'tunhelper {args[0]}', not the helper"))
        return out, None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            settings = serve_settings(args)  # the helper's own checks, config file too
    except UsageError as e:
        out.append(error(f"{where}: {e}"))
        return out, None
    except SystemExit:
        out.append(error(f"{where}: --help or --version: the client gets that text, no tunnel"))
        return out, None
    if not os.path.isabs(program):
        out.append(
            warning(
                f"{where}: {program!r} is not an absolute path: root's shell looks it up (and "
                "a bash function a client exports could stand in for it); give the full path"
            )
        )
    elif not os.access(program, os.X_OK):
        out.append(error(f"{where}: {program} is not an executable file"))
    pool = settings.pool
    out.append(ok(f"{where}: tunhelper --pool {pool.name}: arguments are valid"))
    gateway = None if pool.gateway is None else str(pool.gateway)
    plan = settings.bridge  # tap sessions on a bridge the admin chose: --bridge(-name)
    tap = not plan.managed or plan.name != default_name(pool.name)
    return out, KeyLine(
        where,
        program,
        pool,
        settings.state_dir,
        gateway,
        tap,
        store=settings.store,
        pool6=settings.pool6,
        pools=tuple(settings.pools),
        bridge=settings.bridge.name,
        forwards=tuple(sorted({family.of(n) for n in [*settings.routes, *settings.client_nets]})),
    )


def _restrictions(where: str, names: set[str], version: Version | None) -> list[Finding]:
    """``restrict`` (judged by the sshd's version), else each missing restriction."""
    if "restrict" in names:
        return [doctor_sshd.restrict_finding(where, version)]
    return [
        warning(f"{where}: no {r.option}: {r.without}; add {r.option}")
        for r in openssh.RESTRICTIONS
        if r.without and r.option.lower() not in names
    ]


def check_forwarding(lines: list[KeyLine]) -> list[Finding]:
    """Routes beyond the gateway (--route, --client-net) need the host to forward."""
    out = []
    for version in (4, 6):
        users = [line.where for line in lines if version in line.forwards]
        if not users:
            continue
        on, text = platform.forwarding(version)
        if on:
            out.append(ok(text))
        else:
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            out.append(error(f"{users[0]}{more} route IPv{version} beyond the gateway, but {text}"))
    return out


def check_tunnel_modes(config: SshdConfig, lines: list[KeyLine]) -> list[Finding]:
    """``PermitTunnel`` must let through the kind of device the keys' pools expect."""
    mode = config.first("PermitTunnel")
    out = []
    for line in lines:
        if mode == "point-to-point" and line.tap:
            out.append(
                error(
                    f"{line.where}: the pool has a bridge for tap sessions, but PermitTunnel "
                    "point-to-point refuses tap (ssh -o Tunnel=ethernet); set PermitTunnel "
                    "yes (or ethernet)"
                )
            )
        elif mode == "ethernet" and not line.tap:
            out.append(
                warning(
                    f"{line.where}: PermitTunnel ethernet refuses plain 'ssh -w any' (tun): "
                    "its clients must use -o Tunnel=ethernet; set PermitTunnel yes to "
                    "serve both"
                )
            )
    return out


def check_interface_overlap(lines: list[KeyLine]) -> list[Finding]:
    """Pools inside a network of this host's interfaces: the helper refuses their
    sessions (a lease there would reroute that network, maybe the ssh connection)."""
    from tunhelper.server.policy import interface_networks

    out = []
    for line in lines:
        for name, network in interface_networks(line.state_dir):
            for pool in line.pools:
                if name != line.bridge and pool.overlaps(network):
                    out.append(
                        error(
                            f"{line.where}: pool {pool.name} overlaps {network} on the "
                            f"server's interface {name}: the helper refuses its sessions; "
                            "use a pool outside the server's networks"
                        )
                    )
    return out


def check_pools(lines: list[KeyLine]) -> list[Finding]:
    """Pools that overlap hand the same address to two clients unless they are one pool.

    Each family's pool of a dual-stack line counts, the IPv6 one as much as the other.
    """
    pools = [
        (line, pool, None if pool.gateway is None else str(pool.gateway))
        for line in lines
        for pool in (line.pool, line.pool6)
        if pool is not None
    ]
    out = []
    for i, (a, pool_a, gateway_a) in enumerate(pools):
        for b, pool_b, gateway_b in pools[i + 1 :]:
            if a is b:
                continue  # one line's two families never overlap
            net_a, net_b = pool_a.network, pool_b.network
            if net_a.version != net_b.version:
                continue
            if net_a not in net_b and net_b not in net_a:  # CIDRs overlap only by nesting
                continue
            if net_a != net_b:
                out.append(
                    error(
                        f"{a.where} and {b.where}: pools {net_a} and {net_b} overlap: one "
                        "address can go to two clients; use the same pool or disjoint ones"
                    )
                )
            elif a.state_dir != b.state_dir:
                out.append(
                    error(
                        f"{a.where} and {b.where}: pool {net_a} with two state directories "
                        f"({a.state_dir}, {b.state_dir}): one address can go to two clients"
                    )
                )
            elif gateway_a != gateway_b:
                out.append(
                    warning(
                        f"{a.where} and {b.where}: pool {net_a} with two gateways "
                        f"({gateway_a}, {gateway_b}): a client may be given the other's gateway"
                    )
                )
    return out


def check_authorized_keys(
    paths: list[str], version: Version | None = None
) -> tuple[list[Finding], list[KeyLine]]:
    out: list[Finding] = []
    lines: list[KeyLine] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            out.append(error(f"{path}: cannot read it ({e.strerror})"))
            continue
        for number, line in enumerate(text.splitlines(), 1):
            findings, parsed = check_key_line(f"{path}:{number}", line, version)
            out += findings
            if parsed is not None:
                lines.append(parsed)
    if not lines and not any(f.level == ERROR for f in out):
        out.append(
            warning(f"no authorized_keys line runs tunhelper (looked in {', '.join(paths)})")
        )
    out += check_pools(lines)
    out += check_interface_overlap(lines)
    out += check_forwarding(lines)
    return out, lines


# -- the host --------------------------------------------------------------------------


def check_tun() -> list[Finding]:
    """Can sshd create tun/tap devices on this host (the platform says how it knows)?"""
    usable, line = platform.tun_node()
    return [ok(line) if usable else error(line)]


def check_persistent_devices() -> list[Finding]:
    """A persistent tunN/tapN is one a client can make sshd attach to with ``-w any:N``."""
    return [
        error(
            f"device {name} is persistent and named like sshd's devices: a client can make "
            f"sshd attach to it (ssh -w any:{name[3:]}) and carry its traffic until tunhelper "
            f"refuses; rename it ({rename})"
        )
        for name, rename in platform.persistent_devices()
    ]


def check_source_filter() -> list[Finding]:
    """Does the per-session source filter hold here? If not, a client can send as another."""
    holds, line = platform.source_validation()
    return [ok(line) if holds else warning(line)]


def check_stale_guards() -> list[Finding]:
    """Source filters of sessions whose device is gone: inert, but to be removed."""
    return [
        warning(
            f"source filter {name} was left by a killed session (it matches no device); "
            "run: tunhelper repair"
        )
        for name in platform.stale_guards()
    ]


def check_state_dir(path: str) -> list[Finding]:
    try:
        st = os.stat(path)  # as the helper does: a link to a sound directory is fine
    except FileNotFoundError:
        return [ok(f"{path}: not there yet; the first session creates it (mode 0700)")]
    except OSError as e:
        return [error(f"{path}: {e.strerror}")]
    wrong = statedir.problem(path, st)
    if wrong is not None:
        return [error(wrong)]
    return [ok(f"{path}: owned by root, mode {stat.S_IMODE(st.st_mode):04o}")]


# -- the command -------------------------------------------------------------------------


def findings(
    sshd_config: str | None,
    authorized_keys: str | None,
    state_dir: str | None,
    sshd: str | None = None,
) -> Iterator[Finding]:
    sshd = sshd or openssh.find_sshd()
    config = SshdConfig()
    version = None
    if sshd is None:
        yield error("sshd not found: install openssh-server")
    else:
        version, said = openssh.sshd_version(sshd)
        try:
            config = openssh.read_sshd_config(sshd, sshd_config)
            unmatched = None
            if not openssh.at_least(version, openssh.MATCH_CHANNEL_TIMEOUT):
                unmatched = openssh.read_sshd_config(sshd, sshd_config, connection=None)
        except TunhelperError as e:
            yield error(str(e))
        else:
            yield from doctor_sshd.check_sshd(config)
            yield from doctor_sshd.check_releases(config, version, said, unmatched)
    paths = [authorized_keys] if authorized_keys else openssh.authorized_keys_paths(config)
    key_findings, lines = check_authorized_keys(paths, version)
    yield from key_findings
    yield from check_tunnel_modes(config, lines)
    yield from check_tun()
    yield from check_persistent_devices()
    yield from check_source_filter()
    yield from check_stale_guards()
    if state_dir is not None:
        dirs = [state_dir]
    else:
        from tunhelper.defaults import DEFAULT_STATE_DIR

        dirs = sorted({line.state_dir for line in lines}) or [DEFAULT_STATE_DIR]
    from tunhelper.admin import doctor_store

    for d in dirs:
        state = check_state_dir(d)
        yield from state
        if all(f.level != ERROR for f in state):
            yield from doctor_store.check_local(d, lines)
    yield from check_stores(lines)


def check_stores(lines: list[KeyLine]) -> Iterator[Finding]:
    """Each shared store the keys' config files name (else the default file's)."""
    from tunhelper.admin.doctor_store import check_store

    stores = {line.store for line in lines if line.store is not None}
    if not stores and not lines:
        try:
            from tunhelper.conffile import store_config

            default = store_config(None)
        except UsageError as e:
            yield error(str(e))
            return
        stores = {default} if default is not None else set()
    for config in sorted(stores, key=lambda c: c.where):
        pools = [line.pool.name for line in lines if line.store == config]
        yield from check_store(config, pools)


def run(sshd_config: str | None, authorized_keys: str | None, state_dir: str | None) -> int:
    worst = OK
    for finding in findings(sshd_config, authorized_keys, state_dir):
        print(finding, flush=True)
        if finding.level == ERROR:
            worst = ERROR
    return 1 if worst == ERROR else 0


def doctor_command(args: argparse.Namespace) -> int:
    """The ``doctor`` command (tunhelper.commands)."""
    return run(args.sshd_config, args.authorized_keys, args.state_dir)
