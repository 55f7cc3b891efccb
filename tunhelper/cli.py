"""Command line: the forced command (bare ``tunhelper --pool ...``) and admin commands.

Configuration comes from argv only. Imports are deferred to the command that needs
them, so ``--help`` and the admin commands do not pay for the session's libraries.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable, NoReturn

from tunhelper import __version__, log
from tunhelper.errors import TunhelperError, UsageError

DEFAULT_STATE_DIR = "/var/lib/tunhelper"
DEFAULT_WAIT = 5.0
MAX_WAIT = 60.0
MTU_MIN, MTU_MAX = 576, 16380  # IPv4's minimum; the most an OpenSSH tun channel carries
_CLIENT_NAME = re.compile(r"[A-Za-z0-9._@:+-]{1,64}")

DESCRIPTION = """\
Automatic addressing for OpenSSH tun forwarding. Run as the forced command of a key
in root's authorized_keys:

  command="tunhelper --pool 192.168.3.0/24" ssh-ed25519 AAAA... laptop

and connect with 'ssh -w any SERVER': tunhelper finds the device sshd opened for the
session, leases the client an address, configures the device, prints the client's
address as the first line of output, and holds until the session ends."""

EPILOG = """\
admin commands:
  tunhelper leases [--json] [--state-dir D]        list leases
  tunhelper release ADDRESS [--force] [--state-dir D]  free a lease by hand
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line, never usage plus exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


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
            f"{text!r} is not an MTU from {MTU_MIN} to {MTU_MAX} "
            "(the most an ssh tun channel carries)"
        )
    return int(text)


def _client_name(text: str) -> str:
    if not _CLIENT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a client name: use 1-64 letters, digits or ._@:+-"
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
    p.add_argument("--mtu", type=_mtu, metavar="N", help="MTU to set on the device")
    p.add_argument(
        "--wait",
        type=_wait,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for sshd's tunnel device (default {DEFAULT_WAIT:g})",
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


# Every command's parser, by command name ("" is the forced command). The man pages are
# checked against this registry (tests/test_manpage.py): a command added here without
# its options documented, or documented options it lacks, fails the tests.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "": serve_parser,
    "leases": leases_parser,
    "release": release_parser,
}


def _serve(argv: list[str]) -> int:
    from tunhelper.hold import Interrupted, catch_end_signals

    catch_end_signals()
    from tunhelper import session

    try:
        args = serve_parser().parse_args(argv)
        from tunhelper.pool import Pool

        pool = Pool.parse(args.pool, args.gateway)
        if os.geteuid() != 0:
            raise TunhelperError("must run as root: it configures network devices")
    except (TunhelperError, Interrupted) as e:
        log.error(str(e) if isinstance(e, TunhelperError) else f"interrupted by {e}")
        session.end_connection(None)
        return getattr(e, "exit_code", 1)
    settings = session.Settings(
        pool=pool, state_dir=args.state_dir, wait=args.wait, mtu=args.mtu, client=args.client
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


COMMANDS = {"leases": _leases, "release": _release}


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
