"""Command line: the forced command (bare ``tunhelper --pool ...``) and admin commands.

Configuration comes from argv only. Imports are deferred to the command that needs
them, so ``--help`` and the admin commands do not pay for the session's libraries.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Callable, NoReturn

from tunhelper import __version__, log
from tunhelper.errors import TunhelperError, UsageError

if TYPE_CHECKING:
    from tunhelper.pool import Pool
    from tunhelper.server.session import Settings

DEFAULT_STATE_DIR = "/var/lib/tunhelper"
DEFAULT_WAIT = 5.0
DEFAULT_HOOK_TIMEOUT = 10.0
MAX_HOOK_TIMEOUT = 300.0
DEFAULT_DB_TIMEOUT = 10.0
CONNECT_WAIT = 30.0
MAX_WAIT = 60.0
MTU_MIN, MTU_MAX = 576, 16380  # IPv4's minimum; the most an OpenSSH tun channel carries
MAX_LEASES = 65536  # a /16: more than any pool this serves
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
_CLIENT_NAME = re.compile(r"[A-Za-z0-9._@:+-]{1,64}")

DESCRIPTION = """\
Automatic addressing for OpenSSH tun/tap forwarding. Run as the forced command of a
key in root's authorized_keys:

  command="/usr/local/bin/tunhelper --pool 192.168.3.0/24" ssh-ed25519 AAAA... laptop

and connect with 'ssh -w any SERVER': tunhelper finds the device sshd opened for the
session, leases the client an address, configures the device, prints the client's
address as the first line of output, and holds until the session ends."""

EPILOG = """\
client commands (see 'tunhelper connect --help'):
  tunhelper connect [options] DESTINATION          ssh -w any, then configure this end
  tunhelper disconnect [DEVICE]                    end a background connect
admin commands:
  tunhelper leases [--json] [--state-dir D]        list leases
  tunhelper release ADDRESS [--force] [--state-dir D]  free a lease by hand
  tunhelper renew [--config PATH]                  renew this gateway's shared leases
  tunhelper doctor [options]                       check sshd, keys and state; one line each
"""

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
              ClientAliveInterval (not 0: a vanished client's session ends)
  keys        each line of root's authorized_keys (AuthorizedKeysFile, or
              --authorized-keys) whose command runs tunhelper: not 'restrict' (it
              disables tunnels); no-pty, no-port-forwarding, no-agent-forwarding,
              no-X11-forwarding; its arguments, checked by the helper's own parsers;
              the program given by absolute path; pools of different lines neither
              overlapping nor split across state directories
  devices     /dev/net/tun is there; no persistent tunN/tapN device a client could ask
              sshd to attach to (ssh -w any:N); net.ipv4.conf.all.rp_filter not loose
              (2), which would let a client send packets in another client's name
  state       each state directory (--state-dir, else those the keys name) owned by
              root and not writable by others; its lease database opened read-only and
              checked by SQLite (PRAGMA integrity_check), with what to do if it is not
              sound"""


CONNECT_EPILOG = """\
exit status:
  0    ended on request (SIGINT, SIGTERM, 'tunhelper disconnect')
  1    the link never came up (the server refused, no device, no announcement)
  2    bad arguments
  3    the ssh connection ended after the link was up
  4    the local device disappeared
  130  interrupted before the link was up
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line, never usage plus exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(log.one_line(f"{message} (see '{self.prog} --help')"))


def _wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 0 to {MAX_WAIT:g}"
        )
    return value


def _mtu(text: str) -> int:
    if not text.isdigit() or not MTU_MIN <= int(text) <= MTU_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an MTU from {MTU_MIN} (IPv4's minimum) to {MTU_MAX} "
            "(the most an ssh tun channel carries)"
        )
    return int(text)


def _max_leases(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LEASES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of sessions from 1 to {MAX_LEASES}"
        )
    return int(text)


def _client_name(text: str) -> str:
    if not _CLIENT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a client name: use 1-64 letters, digits or ._@:+-"
        )
    return text


def _network(text: str) -> str:
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


def _route(text: str) -> str:
    text = _network(text)
    if text.endswith("/0"):
        halves = "::/1 and 8000::/1" if ":" in text else "0.0.0.0/1 and 128.0.0.0/1"
        raise argparse.ArgumentTypeError(
            f"{text!r} would route the ssh connection itself into the tunnel; "
            f"use {halves} for everything else"
        )
    return text


def _address(text: str) -> str:
    """An IPv4 or IPv6 address (``--dns``); IPv6 in compact form."""
    import netaddr

    if netaddr.valid_ipv4(text, netaddr.INET_PTON):
        return text
    if netaddr.valid_ipv6(text):
        return str(netaddr.IPAddress(text, 6))
    raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address")


def _host_address(text: str) -> str:
    """An IPv4 or IPv6 address (``--address``); matched to a pool by its family later."""
    import netaddr

    if netaddr.valid_ipv4(text, netaddr.INET_PTON):
        return text
    if netaddr.valid_ipv6(text):
        return str(netaddr.IPAddress(text))  # compact form, as the lease store writes it
    raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address")


def _split(text: str) -> list[str]:
    """A command line split as a shell would (it is never given to one)."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _hook(text: str) -> list[str]:
    argv = _split(text)
    if not argv or not os.path.isabs(argv[0]):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the hook as an absolute path (and its arguments)"
        )
    return argv


def _max_sessions(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sessions from 1 to 1000")
    return int(text)


def _hook_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_HOOK_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {MAX_HOOK_TIMEOUT:g}"
        )
    return value


def _ifname(text: str) -> str:
    if not _IFNAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an interface name: 1-15 letters, digits or ._-"
        )
    return text


def _state_dir(text: str) -> str:
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path")
    return os.path.normpath(text)


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=_state_dir,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"where the lease database lives, created mode 0700 (default {DEFAULT_STATE_DIR})",
    )


def serve_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tunhelper {__version__}")
    p.add_argument(
        "--pool",
        required=True,
        action="append",
        metavar="NET",
        help="network to lease client addresses from, e.g. 192.168.3.0/24 or fd00:3::/112 "
        "(IPv6: /64 or longer); twice, one of each family, for dual stack; or the NAME of "
        "a [pool NAME] in the config file",
    )
    p.add_argument(
        "--config",
        type=_state_dir,
        metavar="PATH",
        help="the config file of named pools and clients (default /etc/tunhelper/"
        "tunhelper.conf, read when --pool is a name)",
    )
    p.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="ADDR",
        help="the server's address on every session (default: first host of the pool); "
        "once per pool, matched by family",
    )
    p.add_argument(
        "--mtu",
        type=_mtu,
        metavar="N",
        help="MTU of the link, announced to the client (default: the most an ssh channel "
        "carries, 16380 for tun, 16370 for tap)",
    )
    p.add_argument(
        "--wait",
        type=_wait,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for sshd's tunnel device (default {DEFAULT_WAIT:g})",
    )
    p.add_argument(
        "--db-timeout",
        type=_wait,
        default=DEFAULT_DB_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the lease database when another process holds it "
        f"(default {DEFAULT_DB_TIMEOUT:g})",
    )
    p.add_argument(
        "--bridge",
        type=_ifname,
        metavar="NAME",
        help="tap sessions join this existing bridge (never created or removed by tunhelper); "
        "--gateway is then optional",
    )
    p.add_argument(
        "--bridge-name",
        type=_ifname,
        metavar="NAME",
        help="name of the bridge tunhelper creates for the pool's tap sessions "
        "(default: thbr and a hash of the pool)",
    )
    p.add_argument(
        "--max-leases",
        type=_max_leases,
        metavar="N",
        help="at most N live sessions (addresses) per client identity in this pool, so "
        "that one key cannot take the whole pool (default: no limit)",
    )
    p.add_argument(
        "--client",
        type=_client_name,
        metavar="NAME",
        help="client identity when sshd does not expose the key (ExposeAuthInfo)",
    )
    p.add_argument(
        "--address",
        type=_host_address,
        action="append",
        default=[],
        metavar="ADDR",
        help="reserve this address of the pool for this key; refused while another live "
        "session holds it; once per pool, matched by family",
    )
    p.add_argument(
        "--max-sessions",
        type=_max_sessions,
        default=1,
        metavar="N",
        help="live sessions per client identity (default 1): a new one beyond it ends the "
        "client's oldest and takes over its address",
    )
    p.add_argument(
        "--refuse-extra",
        action="store_true",
        help="beyond --max-sessions, refuse the new session instead",
    )
    p.add_argument(
        "--route",
        type=_route,
        action="append",
        default=[],
        metavar="NET",
        help="a network, IPv4 or IPv6, the client should reach through the tunnel "
        "(announced; 'tunhelper connect' installs it); repeatable; not 0.0.0.0/0 or ::/0",
    )
    p.add_argument(
        "--client-net",
        type=_network,
        action="append",
        default=[],
        metavar="NET",
        help="a network behind the client, IPv4 or IPv6, routed to it while the session "
        "lives (site to site); repeatable",
    )
    p.add_argument(
        "--dns",
        type=_address,
        action="append",
        default=[],
        metavar="ADDR",
        help="a DNS server for the client, IPv4 or IPv6 (announced; 'tunhelper connect' "
        "applies it); repeatable; a --route, --client-net or --dns needs a --pool of its family",
    )
    p.add_argument(
        "--up",
        type=_hook,
        metavar="CMD",
        help="run CMD (absolute path, split like a shell would, never run by one) once the "
        "link is configured; failing refuses the session",
    )
    p.add_argument(
        "--down", type=_hook, metavar="CMD", help="run CMD when the session ends, however it ends"
    )
    p.add_argument(
        "--hook-timeout",
        type=_hook_timeout,
        default=DEFAULT_HOOK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a hook may run (default {DEFAULT_HOOK_TIMEOUT:g})",
    )
    _add_state_dir(p)
    return p


def _add_store_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=_state_dir,
        metavar="PATH",
        help="the config file whose [store] names the lease store (default /etc/tunhelper/"
        "tunhelper.conf if it exists; without a [store]: SQLite in --state-dir)",
    )


def leases_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunhelper leases", description="List the leases and their state.")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
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


def release_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunhelper release", description="Free a lease by hand.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--force", action="store_true", help="free it even though a live session still uses it"
    )
    _add_state_dir(p)
    _add_store_config(p)
    return p


def doctor_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tunhelper doctor",
        description=DOCTOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sshd-config",
        type=_state_dir,
        metavar="PATH",
        help="sshd's configuration file (default: sshd's own, /etc/ssh/sshd_config)",
    )
    p.add_argument(
        "--authorized-keys",
        type=_state_dir,
        metavar="PATH",
        help="root's authorized_keys (default: from sshd's AuthorizedKeysFile)",
    )
    p.add_argument(
        "--state-dir",
        type=_state_dir,
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
        metavar="DESTINATION",
        type=_destination,
        help="[user@]host, as for ssh (your ~/.ssh/config applies)",
    )
    p.add_argument(
        "-e",
        "--ssh-cmd",
        default="ssh",
        type=_ssh_cmd,
        metavar="CMD",
        help='the ssh command to run, e.g. "ssh -i key -p 2222" (default: ssh)',
    )
    p.add_argument(
        "--tap", action="store_true", help="ask for an ethernet (tap) link: -o Tunnel=ethernet"
    )
    p.add_argument(
        "--wait",
        type=_wait,
        default=CONNECT_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for the server's announcement (default {CONNECT_WAIT:g})",
    )
    p.add_argument("--json", action="store_true", help="print the status line as JSON")
    p.add_argument(
        "--background",
        action="store_true",
        help="detach once the link is up; end it with 'tunhelper disconnect'",
    )
    p.add_argument(
        "--pid-file",
        type=_state_dir,
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
        type=_state_dir,
        metavar="PATH",
        help="the pid file given to connect --pid-file",
    )
    return p


def _destination(text: str) -> str:
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ssh destination")
    return text


def _ssh_cmd(text: str) -> list[str]:
    argv = _split(text)
    if not argv:
        raise argparse.ArgumentTypeError("the ssh command is empty")
    return argv


def _connect(argv: list[str]) -> int:
    from tunhelper.client import connect

    args = connect_parser().parse_args(argv)
    options = connect.Options(
        destination=args.destination,
        ssh_cmd=args.ssh_cmd,
        tap=args.tap,
        wait=args.wait,
        as_json=args.json,
        background=args.background,
        pid_file=args.pid_file,
    )
    return connect.run(options)


def _disconnect(argv: list[str]) -> int:
    from tunhelper.client import background

    args = disconnect_parser().parse_args(argv)
    for path in background.disconnect(args.device, args.pid_file):
        print(f"ended {path}")
    return 0


# Every command's parser, by command name ("" is the forced command). The man pages are
# checked against this registry (tests/test_manpage.py): a command added here without
# its options documented, or documented options it lacks, fails the tests.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "": serve_parser,
    "leases": leases_parser,
    "release": release_parser,
    "renew": renew_parser,
    "doctor": doctor_parser,
    "connect": connect_parser,
    "disconnect": disconnect_parser,
}


def serve_settings(argv: list[str]) -> Settings:
    """Every check of the forced command's arguments and config file, and its settings.

    Everything a session needs to know before it starts; nothing here touches the
    network. ``tunhelper doctor`` runs the same code on each authorized_keys line, so
    the two never disagree.
    """
    from tunhelper import conffile
    from tunhelper.server import session
    from tunhelper.server.bridge import BridgePlan, default_name

    parser = serve_parser()
    args = parser.parse_args(argv)
    named = [p for p in args.pool if "/" not in p]
    if named and len(args.pool) > 1:
        raise UsageError(
            f"--pool {named[0]} names a config file pool: give it alone, its networks "
            "come from the file"
        )
    label = args.pool[0]  # a CIDR, or the name of a [pool NAME] in the config file
    sections = []
    path = args.config or conffile.DEFAULT_PATH
    if named or args.config:
        sections = conffile.read(path)
    if named:
        conffile.apply_pool(args, conffile.given_options(parser, argv), parser, path, sections)
    client_sections = conffile.clients(parser, path, sections)
    # The store: this file's [store], or the default file's even when no pool comes
    # from it, so that a fleet's keys need not all say --config.
    store = conffile.store(path, sections) if sections else conffile.store_config(None)
    pool, pool6 = resolve_pools(args.pool, args.gateway, args.bridge is not None)
    pools = [p for p in (pool, pool6) if p is not None]
    versions = {p.version for p in pools}
    for name, section in client_sections.items():
        if section.applies_to(label, *(p.name for p in pools)):
            for address in section.addresses:  # a family with no pool here: not this key's
                if _version(address) in versions:
                    _check_address(pools, address, f"{section.where}: [client {name}]")
    if args.bridge and args.bridge_name:
        raise UsageError(
            "--bridge joins an existing bridge, --bridge-name names one tunhelper "
            "creates: give one of them"
        )
    reserved = by_family(args.address, "--address", pools)
    for address in args.address:
        _check_address(pools, address, "")
    for option, values in (("--route", args.route), ("--client-net", args.client_net)):
        for value in values:
            check_family(option, value, pools)
    for server in args.dns:
        check_family("--dns", server, pools)
    for net in args.client_net:
        _check_client_net(net, pools, "")
    for name, section in client_sections.items():
        if section.applies_to(label, *(p.name for p in pools)):
            for net in section.client_nets:
                _check_client_net(net, pools, f"{section.where}: [client {name}]")

    if args.bridge:
        plan = BridgePlan(args.bridge, managed=False, address=None, prefixlen=pool.prefixlen)
    else:
        name = args.bridge_name or default_name(pool.name)
        plan = BridgePlan(
            name,
            managed=True,
            address=str(pool.gateway),
            prefixlen=pool.prefixlen,
            address6=None if pool6 is None else str(pool6.gateway),
            prefixlen6=None if pool6 is None else pool6.prefixlen,
        )
    return session.Settings(
        pool=pool,
        state_dir=args.state_dir,
        wait=args.wait,
        db_timeout=args.db_timeout,
        max_leases=args.max_leases,
        mtu=args.mtu,
        client=args.client,
        bridge=plan,
        address=reserved.get(pool.version),
        address6=None if pool6 is None else reserved.get(6),
        pool6=pool6,
        max_sessions=args.max_sessions,
        refuse_extra=args.refuse_extra,
        routes=args.route,
        client_nets=args.client_net,
        dns=args.dns,
        up=args.up,
        down=args.down,
        hook_timeout=args.hook_timeout,
        pool_label=label,
        clients=client_sections,
        store=store,
    )


def _serve(argv: list[str]) -> int:
    from tunhelper.hold import Interrupted, catch_end_signals

    catch_end_signals()
    from tunhelper.server import session

    try:
        settings = serve_settings(argv)
        if os.geteuid() != 0:
            raise TunhelperError("must run as root: it configures network devices")
    except (TunhelperError, Interrupted) as e:
        log.error(str(e) if isinstance(e, TunhelperError) else f"interrupted by {e}")
        session.end_connection(None)
        return getattr(e, "exit_code", 1)
    return session.serve(settings, os.environ)


def _version(address: str) -> int | None:
    import netaddr

    if netaddr.valid_ipv4(address, netaddr.INET_PTON):
        return 4
    return 6 if netaddr.valid_ipv6(address) else None


def by_family(values: list[str], option: str, pools: list) -> dict[int, str]:
    """Match each value of a repeatable option to the pool of its family.

    A value that is not an address is left to the only pool (whose own check names it),
    or refused; two of one family, or one whose family has no pool, are refused.
    """
    out: dict[int, str] = {}
    versions = {p.version for p in pools}
    for value in values:
        version = _version(value)
        if version is None:
            if len(pools) > 1:
                raise UsageError(f"{option} {value!r} is not an IPv4 or IPv6 address")
            version = pools[0].version
        if version not in versions:
            raise UsageError(
                f"{option} {value} is an IPv{version} address but no --pool is IPv{version}: "
                f"give an IPv{version} --pool or drop {option} {value}"
            )
        if version in out:
            raise UsageError(
                f"{option} given twice for IPv{version} ({out[version]}, {value}): "
                "give at most one per pool"
            )
        out[version] = value
    return out


def resolve_pools(
    cidrs: list[str], gateways: list[str], gateway_optional: bool = False
) -> tuple[Pool, Pool | None]:
    """The session's pools: the primary (IPv4 when there is one) and, for dual stack,
    the IPv6 one, each with the ``--gateway`` of its family."""
    from tunhelper.pool import Pool

    parsed = [Pool.parse(cidr, gateway_optional=True) for cidr in cidrs]
    seen: dict[int, Pool] = {}
    for p in parsed:
        if p.version in seen:
            raise UsageError(
                f"--pool given twice for IPv{p.version} ({seen[p.version].name}, {p.name}): "
                "give at most one pool of each family"
            )
        seen[p.version] = p
    chosen = by_family(gateways, "--gateway", parsed)
    pools = {p.version: Pool.parse(p.name, chosen.get(p.version), gateway_optional) for p in parsed}
    primary = pools.get(4) or pools[6]
    return primary, (pools.get(6) if 4 in pools else None)


def check_family(option: str, value: str, pools: list, where: str = "") -> None:
    """Refuse a network or address of a family the session has no address of.

    An IPv6 route on a link with no IPv6 address would take packets the link cannot
    source; better one line at configuration time than a silently dead route.
    """
    version = 6 if ":" in value else 4
    if version in {p.version for p in pools}:
        return
    kind = "network" if "/" in value else "address"
    example = "fd00:3::/112" if version == 6 else "192.168.3.0/24"
    prefix = f"{where}: " if where else ""
    raise UsageError(
        f"{prefix}{option} {value} is an IPv{version} {kind} but no --pool is "
        f"IPv{version}: add an IPv{version} --pool (e.g. --pool {example}) or drop it"
    )


def _check_client_net(net: str, pools: list, where: str) -> None:
    """A client network must have a pool of its family, and must not overlap one."""
    key = "client-net" if where else "--client-net"
    check_family(key, net, pools, where)
    for pool in pools:
        if pool.overlaps(net):
            prefix = f"{where}: " if where else ""
            raise UsageError(f"{prefix}{key} {net} overlaps --pool {pool.name}")


def _check_address(pools: list, address: str, where: str) -> None:
    version = _version(address)
    pool = next((p for p in pools if p.version == version), pools[0])
    offset = pool.offset(address)
    if (
        offset is None
        or not pool.first <= offset <= pool.last
        or (pool.gateway is not None and address == str(pool.gateway))
    ):
        prefix = f"{where}: " if where else ""
        raise UsageError(f"{prefix}--address {address} is not a client address of {pool.name}")


def _leases(argv: list[str]) -> int:
    from tunhelper.admin import leases
    from tunhelper.conffile import store_config

    args = leases_parser().parse_args(argv)
    return leases.leases(args.state_dir, args.json, store_config(args.config))


def _release(argv: list[str]) -> int:
    from tunhelper.admin import leases
    from tunhelper.conffile import store_config

    args = release_parser().parse_args(argv)
    return leases.release(args.state_dir, args.address, args.force, store_config(args.config))


def _renew(argv: list[str]) -> int:
    from tunhelper.admin import leases
    from tunhelper.conffile import store_config

    args = renew_parser().parse_args(argv)
    return leases.renew(args.state_dir, store_config(args.config))


def _doctor(argv: list[str]) -> int:
    from tunhelper.admin import doctor

    args = doctor_parser().parse_args(argv)
    if os.geteuid() != 0:
        raise TunhelperError("doctor must run as root: it reads sshd's and root's files")
    return doctor.run(args.sshd_config, args.authorized_keys, args.state_dir)


COMMANDS = {
    "connect": _connect,
    "disconnect": _disconnect,
    "leases": _leases,
    "release": _release,
    "renew": _renew,
    "doctor": _doctor,
}


def _isolate(argv: list[str]) -> None:
    """Re-execute in isolated mode if the environment carries Python settings.

    A client may send environment variables (sshd's AcceptEnv), and some of Python's
    own are dangerous in a root process: PYTHONINSPECT would hand the client a root
    REPL on stdin once we exit. Isolated mode (-I) ignores them all.
    """
    if sys.flags.isolated or not any(k.startswith("PYTHON") for k in os.environ):
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    argv = [sys.executable, "-I", "-m", "tunhelper", *argv]
    os.execve(sys.executable, argv, env)  # noqa: S606 - no shell: the same interpreter, isolated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _isolate(argv)
    try:
        command = COMMANDS.get(argv[0]) if argv else None
        if command is not None:
            return command(argv[1:])
        return _serve(argv)
    except TunhelperError as e:
        log.error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a bug must still reach the client as one line
        log.error(f"internal error ({type(e).__name__}: {e}); please report it")
        return 1
