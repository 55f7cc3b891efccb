"""The forced command's options: one table, for argv and the config file alike.

:data:`SERVE_OPTIONS` builds the command line parser, the config file's reading of
``[pool NAME]`` sections (:mod:`tunhelper.conffile`), and, through
:func:`~tunhelper.options.schema.build`, :class:`tunhelper.settings.Settings`.
"""

from __future__ import annotations

import argparse

from tunhelper import __version__, commands, defaults
from tunhelper.options.schema import Option, Parser, add, given
from tunhelper.options.types import (
    address,
    hook,
    hook_timeout,
    identity_name,
    ifname,
    max_leases,
    max_sessions,
    mtu,
    network,
    path,
    route,
    seconds,
)

DESCRIPTION = """\
Automatic addressing for OpenSSH tun/tap forwarding. Run as the forced command of a
key in root's authorized_keys:

  command="/usr/bin/tunhelper --pool 192.168.3.0/24" ssh-ed25519 AAAA... laptop

(/usr/bin/tunhelper is the Debian package's; for a pip or source install give the
path 'command -v tunhelper' prints, e.g. /opt/tunhelper/bin/tunhelper), and connect
with 'ssh -T -w any SERVER': tunhelper finds the device sshd opened for the
session, leases the client an address, configures the device, prints the client's
address as the first line of output, and holds until the session ends."""


SERVE_OPTIONS: tuple[Option, ...] = (
    Option(
        "pool",
        "network to lease client addresses from, e.g. 192.168.3.0/24 or fd00:3::/112 "
        "(IPv6: /64 or longer); twice, one of each family, for dual stack; or the NAME of "
        "a [pool NAME] in the config file",
        repeatable=True,
        metavar="NET",
        in_pools=False,  # a pool's key is "network"
        extra={"required": True},
    ),
    Option(
        "config",
        "the config file of named pools and clients (default "
        f"{defaults.CONFIG_PATH}, read when --pool is a name)",
        type=path,
        metavar="PATH",
        in_pools=False,
    ),
    Option(
        "gateway",
        "the server's address on every session (default: first host of the pool); "
        "once per pool, matched by family",
        repeatable=True,
        default=[],
        metavar="ADDR",
    ),
    Option(
        "mtu",
        "MTU of the link, announced to the client (default: the most an ssh channel "
        "carries, 16380 for tun, 16370 for tap)",
        type=mtu,
        metavar="N",
    ),
    Option(
        "wait",
        f"how long to wait for sshd's tunnel device (default {defaults.DEVICE_WAIT:g})",
        type=seconds,
        default=defaults.DEVICE_WAIT,
        metavar="SECONDS",
    ),
    Option(
        "db-timeout",
        "how long to wait for the lease database when another process holds it "
        f"(default {defaults.DB_TIMEOUT:g})",
        type=seconds,
        default=defaults.DB_TIMEOUT,
        metavar="SECONDS",
    ),
    Option(
        "bridge",
        "tap sessions join this existing bridge (never created or removed by tunhelper); "
        "--gateway is then optional",
        type=ifname,
        metavar="NAME",
    ),
    Option(
        "bridge-name",
        "name of the bridge tunhelper creates for the pool's tap sessions "
        "(default: thbr and a hash of the pool)",
        type=ifname,
        metavar="NAME",
    ),
    Option(
        "max-leases",
        "at most N live sessions (addresses) per client identity in this pool, so "
        "that one key cannot take the whole pool (default: no limit)",
        type=max_leases,
        metavar="N",
    ),
    Option(
        "client",
        "client identity when sshd does not expose the key (ExposeAuthInfo)",
        type=identity_name,
        metavar="NAME",
        in_pools=False,
        fills="identity",
    ),
    Option(
        "address",
        "reserve this address of the pool for this key; refused while another live "
        "session holds it; once per pool, matched by family",
        type=address,
        repeatable=True,
        default=[],
        metavar="ADDR",
        in_pools=False,
    ),
    Option(
        "max-sessions",
        "live sessions per client identity (default 1): a new one beyond it ends the "
        "client's oldest and takes over its address",
        type=max_sessions,
        default=1,
        metavar="N",
    ),
    Option(
        "refuse-extra",
        "beyond --max-sessions, refuse the new session instead",
        flag=True,
        default=False,
    ),
    Option(
        "route",
        "a network, IPv4 or IPv6, the client should reach through the tunnel "
        "(announced; 'tunhelper connect' installs it); repeatable; 'default' for everything "
        "(a full tunnel: each family's two halves, 0.0.0.0/1 and 128.0.0.0/1, ::/1 and "
        "8000::/1); not 0.0.0.0/0 or ::/0",
        type=route,
        repeatable=True,
        default=[],
        metavar="NET",
    ),
    Option(
        "client-net",
        "a network behind the client, IPv4 or IPv6, routed to it while the session "
        "lives (site to site); repeatable",
        type=network,
        repeatable=True,
        default=[],
        metavar="NET",
        in_pools=False,
        fills="client_nets",
    ),
    Option(
        "dns",
        "a DNS server for the client, IPv4 or IPv6 (announced; 'tunhelper connect' "
        "applies it); repeatable; a --route, --client-net or --dns needs a --pool of its family",
        type=address,
        repeatable=True,
        default=[],
        metavar="ADDR",
    ),
    Option(
        "up",
        "run CMD (absolute path, split like a shell would, never run by one) once the "
        "link is configured; failing refuses the session",
        type=hook,
        metavar="CMD",
    ),
    Option("down", "run CMD when the session ends, however it ends", type=hook, metavar="CMD"),
    Option(
        "hook-timeout",
        f"how long a hook may run (default {defaults.HOOK_TIMEOUT:g})",
        type=hook_timeout,
        default=defaults.HOOK_TIMEOUT,
        metavar="SECONDS",
    ),
    Option(
        "state-dir",
        f"where the lease database lives, created mode 0700 (default {defaults.DEFAULT_STATE_DIR})",
        type=path,
        default=defaults.DEFAULT_STATE_DIR,
        metavar="DIR",
    ),
)
SERVE_OPTION = {o.name: o for o in SERVE_OPTIONS}


def serve_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper",
        description=DESCRIPTION,
        epilog=commands.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tunhelper {__version__}")
    for option in SERVE_OPTIONS:
        add(p, option)
    return p


def given_options(argv: list[str]) -> set[str]:
    """The forced command's options (by dest) that the command line set itself."""
    return given(SERVE_OPTIONS, argv)
