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
from typing import TYPE_CHECKING, NoReturn

from tunhelper import __version__, log
from tunhelper.errors import TunhelperError, UsageError

if TYPE_CHECKING:
    from tunhelper.pool import Pool

DEFAULT_STATE_DIR = "/var/lib/tunhelper"
DEFAULT_WAIT = 5.0
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
              the program given by absolute path; --max-leases set; pools of
              different lines neither overlapping nor split across state directories
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
        metavar="NET",
        help="IPv4 network to lease client addresses from, e.g. 192.168.3.0/24",
    )
    p.add_argument(
        "--gateway",
        metavar="ADDR",
        help="the server's address on every session (default: first host of the pool)",
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
    _add_state_dir(p)
    return p


def leases_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunhelper leases", description="List the leases and their state.")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    _add_state_dir(p)
    return p


def release_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tunhelper release", description="Free a lease by hand.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--force", action="store_true", help="free it even though a live session still uses it"
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
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if not argv:
        raise argparse.ArgumentTypeError("the ssh command is empty")
    return argv


def _connect(argv: list[str]) -> int:
    from tunhelper import connect

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
    from tunhelper import daemon

    args = disconnect_parser().parse_args(argv)
    for path in daemon.disconnect(args.device, args.pid_file):
        print(f"ended {path}")
    return 0


def serve_pool(args: argparse.Namespace) -> Pool:
    """The checks of the forced command's arguments beyond argparse's (``doctor`` uses them)."""
    from tunhelper.pool import Pool

    pool = Pool.parse(args.pool, args.gateway, gateway_optional=args.bridge is not None)
    if args.bridge and args.bridge_name:
        raise UsageError(
            "--bridge joins an existing bridge, --bridge-name names one tunhelper "
            "creates: give one of them"
        )
    return pool


def _serve(argv: list[str]) -> int:
    from tunhelper.hold import Interrupted, catch_end_signals

    catch_end_signals()
    from tunhelper import session

    try:
        args = serve_parser().parse_args(argv)
        pool = serve_pool(args)
        if os.geteuid() != 0:
            raise TunhelperError("must run as root: it configures network devices")
    except (TunhelperError, Interrupted) as e:
        log.error(str(e) if isinstance(e, TunhelperError) else f"interrupted by {e}")
        session.end_connection(None)
        return getattr(e, "exit_code", 1)
    from tunhelper.bridge import BridgePlan, default_name

    if args.bridge:
        plan = BridgePlan(args.bridge, managed=False, address=None, prefixlen=pool.prefixlen)
    else:
        name = args.bridge_name or default_name(pool.name)
        plan = BridgePlan(name, managed=True, address=str(pool.gateway), prefixlen=pool.prefixlen)
    settings = session.Settings(
        pool=pool,
        state_dir=args.state_dir,
        wait=args.wait,
        db_timeout=args.db_timeout,
        max_leases=args.max_leases,
        mtu=args.mtu,
        client=args.client,
        bridge=plan,
    )
    return session.serve(settings, os.environ)


def _leases(argv: list[str]) -> int:
    from tunhelper import admin

    args = leases_parser().parse_args(argv)
    return admin.leases(args.state_dir, args.json)


def _release(argv: list[str]) -> int:
    from tunhelper import admin

    args = release_parser().parse_args(argv)
    return admin.release(args.state_dir, args.address, args.force)


def _doctor(argv: list[str]) -> int:
    from tunhelper import doctor

    args = doctor_parser().parse_args(argv)
    if os.geteuid() != 0:
        raise TunhelperError("doctor must run as root: it reads sshd's and root's files")
    return doctor.run(args.sshd_config, args.authorized_keys, args.state_dir)


COMMANDS = {
    "connect": _connect,
    "disconnect": _disconnect,
    "leases": _leases,
    "release": _release,
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
