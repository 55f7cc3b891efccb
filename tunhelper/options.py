"""Every command's options: the parsers, and the types that check each value.

The forced command's options are one table, :data:`SERVE_OPTIONS`: the command line
parser is built from it, and so is the config file's reading of ``[pool NAME]``
sections (:mod:`tunhelper.conffile`), so an option and its checks are defined once.
Option types raise ``argparse.ArgumentTypeError`` with a message that names the value
and what would be right; the parsers turn every bad argument into one line.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from tunhelper import __version__, commands, defaults, family, log
from tunhelper.errors import UsageError

_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
_CLIENT_NAME = re.compile(r"[A-Za-z0-9._@:+-]{1,64}")
DESCRIPTION = """\
Automatic addressing for OpenSSH tun/tap forwarding. Run as the forced command of a
key in root's authorized_keys:

  command="/usr/bin/tunhelper --pool 192.168.3.0/24" ssh-ed25519 AAAA... laptop

(/usr/bin/tunhelper is the Debian package's; for a pip or source install give the
path 'command -v tunhelper' prints, e.g. /opt/tunhelper/bin/tunhelper), and connect
with 'ssh -T -w any SERVER': tunhelper finds the device sshd opened for the
session, leases the client an address, configures the device, prints the client's
address as the first line of output, and holds until the session ends."""

DOCTOR_DESCRIPTION = """\
Check this gateway's setup and print one line per finding, "ok:", "warning:" or
"error:"; exit 1 if there is any error. Nothing is changed.

checks:
  sshd        'sshd -T -C user=root' (Match User blocks apply, those on an address or
              host cannot): PermitTunnel (not no), PermitRootLogin
              (forced-commands-only), ExposeAuthInfo (yes: clients told apart by key),
              MaxStartups (clients connecting at once), AcceptEnv (no pattern may let
              through LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, BASH_ENV, BASH_FUNC_*,
              PYTHONPATH, PYTHONHOME, PYTHONINSPECT or SSH_USER_AUTH),
              ClientAliveInterval (not 0: a vanished client's session ends);
              with OpenSSH's version from 'sshd -V': DisableForwarding (not yes: from
              10.4 it refuses tunnels), PerSourcePenalties (9.8+: explained),
              ChannelTimeout (no session or tun-connection type: they close idle
              tunnels), PermitTunnel against tap pools
  keys        each line of root's authorized_keys (AuthorizedKeysFile, or
              --authorized-keys) whose command runs tunhelper: not 'restrict' (from
              OpenSSH 10.5 it blocks tunnels; below, a warning); no-pty,
              no-port-forwarding, no-agent-forwarding, no-X11-forwarding; its
              arguments, checked by the helper's own parsers; the program given by
              absolute path; pools of different lines neither overlapping nor split
              across state directories;
              no pool (either family) inside a network of this host's interfaces
              (the helper refuses those sessions); IPv4/IPv6 forwarding on for keys
              with --route or --client-net of that family
  devices     /dev/net/tun is there; no persistent tunN/tapN device a client could ask
              sshd to attach to (ssh -w any:N); net.ipv4.conf.all.rp_filter not loose
              (2), which would let a client send packets in another client's name
  state       each state directory (--state-dir, else those the keys name) owned by
              root and not writable by others; its lease database opened read-only and
              checked by SQLite (PRAGMA integrity_check), with what to do if it is not
              sound
  store       a shared [store] (backend = postgresql) the keys' config files name:
              the file's mode, the connection, the schema version (read only: never
              created or migrated here), this clock against the database's, and pools
              overlapping another gateway's with a different prefix"""


CONNECT_EPILOG = """\
exit status:
  0    ended on request (SIGINT, SIGTERM, 'tunhelper disconnect')
  1    the link never came up (the server refused, no device, no announcement)
  2    bad arguments
  3    the ssh connection ended after the link was up (without --reconnect)
  4    the local device disappeared (without --reconnect)
  5    ssh could not authenticate (key or host key): never retried
  70   an internal error (reported in one line)
  130  interrupted before the link was up

With --reconnect, a lost link is brought back with exponential backoff (up to about a
minute, with jitter), through the next DESTINATION if several are given; a refusal
by the server (1) or an authentication failure (5) ends connect at once.

With --kill-switch connect fails closed: nothing but SIGINT/SIGTERM (also from
'tunhelper disconnect' or 'systemctl stop') removes the blocking. A failure (a
refusal, a changed host key, a lost link without --reconnect) leaves it BLOCKED and
running: one line says what is wrong and what to do, 'tunhelper status' shows it, and
the code above is its exit status once the user ends it.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line, never usage plus exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(log.one_line(f"{message} (see '{self.prog} --help')"))


# -- option types ----------------------------------------------------------------


def seconds(text: str) -> float:
    """``--wait``, ``--db-timeout``: 0 to a minute."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= defaults.MAX_WAIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 0 to {defaults.MAX_WAIT:g}"
        )
    return value


def mtu(text: str) -> int:
    top = max(defaults.MAX_MTU.values())
    if not text.isdigit() or not defaults.MIN_MTU <= int(text) <= top:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an MTU from {defaults.MIN_MTU} (IPv4's minimum) to {top} "
            "(the most an ssh tun channel carries)"
        )
    return int(text)


def _count(text: str, top: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sessions from 1 to {top}")
    return int(text)


def max_leases(text: str) -> int:
    return _count(text, defaults.MAX_LEASES)


def max_sessions(text: str) -> int:
    return _count(text, defaults.MAX_SESSIONS)


def client_name(text: str) -> str:
    if not _CLIENT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a client name: use 1-64 letters, digits or ._@:+-"
        )
    return text


def network(text: str) -> str:
    """An IPv4 or IPv6 network; IPv6 in compact form, as routes and the kernel show it."""
    import netaddr

    try:
        net = netaddr.IPNetwork(text) if "/" in text else None
    except (netaddr.AddrFormatError, ValueError):
        net = None
    if net is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a network like 10.1.0.0/16 or fd00:1::/64"
        )
    if net.version == 6:
        if net.ip != net.network:
            raise argparse.ArgumentTypeError(
                f"{text!r} has host bits set; did you mean {net.cidr}?"
            )
        return str(net.cidr)
    if str(net.cidr) != text:
        raise argparse.ArgumentTypeError(f"{text!r} has host bits set; did you mean {net.cidr}?")
    return text


DEFAULT_ROUTE = "default"  # everything: each family's two halves (settings expands it)


def route(text: str) -> str:
    if text == DEFAULT_ROUTE:
        return text
    text = network(text)
    if text.endswith("/0"):
        halves = "::/1 and 8000::/1" if family.of(text) == 6 else "0.0.0.0/1 and 128.0.0.0/1"
        raise argparse.ArgumentTypeError(
            f"{text!r} would route the ssh connection itself into the tunnel; "
            f"use 'default' (or {halves}) for everything else"
        )
    return text


def address(text: str) -> str:
    """An IPv4 (dotted quad) or IPv6 address; IPv6 in compact form, as the lease store
    and the kernel write it."""
    version = family.parse(text)
    if version == 4:
        return text
    if version == 6:
        import netaddr

        return str(netaddr.IPAddress(text, 6))
    raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address")


def _split(text: str) -> list[str]:
    """A command line split as a shell would (it is never given to one)."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def hook(text: str) -> list[str]:
    argv = _split(text)
    if not argv or not os.path.isabs(argv[0]):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the hook as an absolute path (and its arguments)"
        )
    return argv


def hook_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= defaults.MAX_HOOK_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {defaults.MAX_HOOK_TIMEOUT:g}"
        )
    return value


def ifname(text: str) -> str:
    if not _IFNAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an interface name: 1-15 letters, digits or ._-"
        )
    return text


def path(text: str) -> str:
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path")
    return os.path.normpath(text)


def destination(text: str) -> str:
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ssh destination")
    return text


def ssh_command(text: str) -> list[str]:
    argv = _split(text)
    if not argv:
        raise argparse.ArgumentTypeError("the ssh command is empty")
    return argv


# -- the forced command's options: one table for argv and the config file -----------


@dataclass(frozen=True)
class Option:
    """One option of the forced command, as argparse and the config file both read it."""

    name: str  # without the leading --; also the config file's key
    help: str
    type: Callable[[str], Any] | None = None
    repeatable: bool = False  # given several times: a list
    flag: bool = False  # takes no value (in the config file: yes or no)
    default: Any = None
    metavar: str | None = None
    in_pools: bool = True  # may a [pool NAME] section set it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


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
        type=client_name,
        metavar="NAME",
        in_pools=False,
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


def _add(parser: argparse.ArgumentParser, option: Option, default: Any) -> None:
    if option.flag:
        parser.add_argument(
            f"--{option.name}", action="store_true", default=default, help=option.help
        )
        return
    parser.add_argument(
        f"--{option.name}",
        type=option.type,
        action="append" if option.repeatable else "store",
        default=default,
        metavar=option.metavar,
        help=option.help,
        **option.extra,
    )


def serve_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper",
        description=DESCRIPTION,
        epilog=commands.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tunhelper {__version__}")
    for option in SERVE_OPTIONS:
        _add(p, option, option.default)
    return p


def given_options(argv: list[str]) -> set[str]:
    """The options (by dest) that the command line set itself: argv wins over the file."""
    quiet = argparse.ArgumentParser(add_help=False)
    for option in SERVE_OPTIONS:
        if option.flag:
            quiet.add_argument(
                f"--{option.name}", action="store_const", const=True, default=argparse.SUPPRESS
            )
        else:
            quiet.add_argument(
                f"--{option.name}",
                action="append" if option.repeatable else "store",
                default=argparse.SUPPRESS,
            )
    known, _ = quiet.parse_known_args(argv)
    return set(vars(known))


# -- the other commands --------------------------------------------------------------


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    _add(parser, SERVE_OPTION["state-dir"], defaults.DEFAULT_STATE_DIR)


def _add_store_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=path,
        metavar="PATH",
        help=f"the config file whose [store] names the lease store (default "
        f"{defaults.CONFIG_PATH} if it exists; without a [store]: SQLite in --state-dir)",
    )


def leases_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunhelper leases", description="List the leases and their state.")
    p.add_argument(
        "--format",
        choices=("table", "json", "prometheus"),
        default="table",
        metavar="FORMAT",
        help="table: one per pool (default); json: a list of objects; prometheus: the text "
        "exposition format (pools, live sessions' counters, refusals)",
    )
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    p.add_argument("--pool", metavar="POOL", help="only this pool's leases (its network)")
    p.add_argument(
        "--client", metavar="TEXT", help="only the leases of clients whose identity contains TEXT"
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write to FILE atomically (a temporary file, then a rename) instead of "
        "stdout: for node_exporter's textfile collector",
    )
    _add_state_dir(p)
    _add_store_config(p)
    return p


def release_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunhelper release", description="Free a lease by hand.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--force", action="store_true", help="free it even though a live session still uses it"
    )
    _add_state_dir(p)
    _add_store_config(p)
    return p


def renew_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper renew",
        description="Renew this gateway's live leases in a shared lease store (one statement) "
        "and release its dead ones; run by tunhelper-renew.timer.",
    )
    _add_state_dir(p)
    _add_store_config(p)
    return p


def repair_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper repair",
        description="Give back what killed helpers left behind: bridges tunhelper created "
        "that no session uses any more.",
    )
    _add_state_dir(p)
    return p


def doctor_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper doctor",
        description=DOCTOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sshd-config",
        type=path,
        metavar="PATH",
        help="sshd's configuration file (default: sshd's own, /etc/ssh/sshd_config)",
    )
    p.add_argument(
        "--authorized-keys",
        type=path,
        metavar="PATH",
        help="root's authorized_keys (default: from sshd's AuthorizedKeysFile)",
    )
    p.add_argument(
        "--state-dir",
        type=path,
        metavar="DIR",
        help="the state directory to check (default: those the keys' lines name)",
    )
    return p


def connect_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper connect",
        description="Run 'ssh -w any DESTINATION' and configure this end of the tunnel\n"
        "from what the server's tunhelper announces. Stays until ssh ends or a signal.",
        epilog=CONNECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "destination",
        nargs="*",
        metavar="DESTINATION",
        type=destination,
        help="[user@]host, as for ssh (your ~/.ssh/config applies); several: failover, "
        "tried in order",
    )
    p.add_argument(
        "--profile",
        metavar="NAME",
        help="read destinations and options from /etc/tunhelper/connect/NAME.conf "
        "(what tunhelper-connect@NAME.service runs)",
    )
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="bring the link back when it is lost, with backoff (the default in a profile)",
    )
    p.add_argument("--shuffle", action="store_true", help="try the destinations in a random order")
    p.add_argument(
        "--kill-switch",
        action="store_true",
        help="with a full tunnel, drop all traffic leaving outside it (nftables), also "
        "while reconnecting; only the ssh connection itself passes",
    )
    p.add_argument(
        "--allow-lan",
        action="store_true",
        help="with --kill-switch: let traffic to the private networks (10/8, 172.16/12, "
        "192.168/16, link-local, fc00::/7) through outside the tunnel (off by default)",
    )
    p.add_argument(
        "--multiplex",
        action="store_true",
        help="keep your ControlMaster/ControlPath (default: its own connection, -S none)",
    )
    p.add_argument(
        "--no-aes-gcm",
        action="store_true",
        help="do not prefer AES-GCM when the CPU has AES and ssh_config chooses no ciphers",
    )
    p.add_argument(
        "-e",
        "--ssh-cmd",
        default="ssh",
        type=ssh_command,
        metavar="CMD",
        help='the ssh command to run, e.g. "ssh -i key -p 2222" (default: ssh)',
    )
    p.add_argument(
        "--tap", action="store_true", help="ask for an ethernet (tap) link: -o Tunnel=ethernet"
    )
    p.add_argument(
        "--wait",
        type=seconds,
        default=defaults.CONNECT_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for the server's announcement (default {defaults.CONNECT_WAIT:g})",
    )
    p.add_argument("--json", action="store_true", help="print the status line as JSON")
    p.add_argument(
        "--background",
        action="store_true",
        help="detach once the link is up; end it with 'tunhelper disconnect'",
    )
    p.add_argument(
        "--pid-file",
        type=path,
        metavar="PATH",
        help="pid file for --background (default /run/tunhelper/connect-DEVICE.pid)",
    )
    return p


def disconnect_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper disconnect",
        description="End a background 'tunhelper connect' (all of them if no DEVICE).",
    )
    p.add_argument("device", nargs="?", metavar="DEVICE", help="the local device, e.g. tun0")
    p.add_argument(
        "--pid-file",
        type=path,
        metavar="PATH",
        help="the pid file given to connect --pid-file",
    )
    return p


def status_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper status",
        description="Show every running 'tunhelper connect' on this host: state, "
        "destination, device, addresses, since when, bytes both ways, reconnects, the "
        "last error and what to do.",
    )
    p.add_argument("--json", action="store_true", help="a JSON list, one object per connect")
    return p


def _add_authorized_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--authorized-keys",
        type=path,
        metavar="PATH",
        help="root's authorized_keys (default: the first of sshd's AuthorizedKeysFile)",
    )


def client_add_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper client add",
        description="Add a client: one authorized_keys line with the restrictions, the full "
        "path of this tunhelper with the OPTIONs (checked by the helper's own parsers), "
        "the key, and NAME as its comment. The edit is atomic; other lines are kept.",
        epilog="example: tunhelper client add laptop --key 'ssh-ed25519 AAAA...' -- "
        "--pool 192.168.3.0/24 --max-leases 2",
    )
    p.add_argument("name", metavar="NAME", type=client_name, help="the client's name")
    p.add_argument("--key", required=True, metavar="KEY", help="its public key line")
    p.add_argument(
        "--program",
        type=path,
        metavar="PATH",
        help="tunhelper's full path on the line (default: this one's)",
    )
    _add_authorized_keys(p)
    p.add_argument(
        "helper", nargs="*", metavar="OPTION", help="after --: the helper's options (--pool ...)"
    )
    return p


def client_list_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper client list",
        description="List the authorized_keys lines that run tunhelper, with live leases.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    _add_authorized_keys(p)
    return p


def client_revoke_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper client revoke",
        description="Remove a client's line and end its live sessions at once.",
    )
    p.add_argument("name", metavar="NAME", type=client_name, help="the client's name")
    _add_authorized_keys(p)
    return p
