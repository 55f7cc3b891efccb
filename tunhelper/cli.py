"""The command line: which entry point runs, and every error as one line.

The bare form (``tunhelper --pool ...``) is the forced command, the server side of a
session (:mod:`tunhelper.server`); ``connect`` and ``disconnect`` are the client
(:mod:`tunhelper.client`); ``leases``, ``release``, ``repair`` and ``doctor`` are admin
commands (:mod:`tunhelper.admin`). Options live in :mod:`tunhelper.options`, the
forced command's settings in :mod:`tunhelper.settings`. Each entry point imports what
it needs (its options too) only when it runs, so ``--help`` and the admin commands do
not pay for the session's libraries.
"""

from __future__ import annotations

import os
import sys

from tunhelper import log
from tunhelper.errors import TunhelperError, UsageError


def _serve(argv: list[str]) -> int:
    from tunhelper import signals

    signals.catch_end_signals()  # before anything is taken: a signal unwinds like an error
    from tunhelper.server import session, teardown
    from tunhelper.settings import serve_settings

    try:
        settings = serve_settings(argv)
        if os.geteuid() != 0:
            raise TunhelperError("must run as root: it configures network devices")
    except (TunhelperError, signals.Interrupted) as e:
        log.error(str(e) if isinstance(e, TunhelperError) else f"interrupted by {e}")
        teardown.end_connection(None)
        return getattr(e, "exit_code", 1)
    return session.serve(settings, os.environ)


def _connect(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.client import connect

    parser = options.connect_parser()
    args = parser.parse_args(argv)
    if args.profile is not None:
        from tunhelper.client import profile

        if args.destination:
            raise UsageError("give the destinations in the profile or on the command line")
        args = parser.parse_args([*argv, *profile.read(args.profile)])
    if not args.destination:
        raise UsageError("connect needs a DESTINATION (or --profile NAME)")
    return connect.run(
        connect.Options(
            destination=args.destination[0],
            more=tuple(args.destination[1:]),
            reconnect=args.reconnect,
            shuffle=args.shuffle,
            kill_switch=args.kill_switch,
            allow_lan=args.allow_lan,
            multiplex=args.multiplex,
            aes=not args.no_aes_gcm,
            ssh_cmd=args.ssh_cmd,
            tap=args.tap,
            wait=args.wait,
            as_json=args.json,
            background=args.background,
            pid_file=args.pid_file,
        )
    )


def _disconnect(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.client import background

    args = options.disconnect_parser().parse_args(argv)
    for path in background.disconnect(args.device, args.pid_file):
        print(f"ended {path}")
    return 0


def _status(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.client import status

    args = options.status_parser().parse_args(argv)
    return status.run(args.json)


def _leases(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.admin import leases
    from tunhelper.conffile import store_config

    args = options.leases_parser().parse_args(argv)
    return leases.leases(
        args.state_dir, args.format, args.pool, args.client, args.output, store_config(args.config)
    )


def _release(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.admin import leases
    from tunhelper.conffile import store_config

    args = options.release_parser().parse_args(argv)
    return leases.release(args.state_dir, args.address, args.force, store_config(args.config))


def _renew(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.admin import leases
    from tunhelper.conffile import store_config

    args = options.renew_parser().parse_args(argv)
    return leases.renew(args.state_dir, store_config(args.config))


def _repair(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.admin import leases

    args = options.repair_parser().parse_args(argv)
    return leases.repair(args.state_dir)


def _doctor(argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.admin import doctor

    args = options.doctor_parser().parse_args(argv)
    if os.geteuid() != 0:
        raise TunhelperError("doctor must run as root: it reads sshd's and root's files")
    return doctor.run(args.sshd_config, args.authorized_keys, args.state_dir)


def _client(command: str, argv: list[str]) -> int:
    from tunhelper import options
    from tunhelper.admin import clients

    helper: list[str] = []
    if command == "add" and "--" in argv:  # the helper's options follow the first --
        argv, helper = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = options.PARSERS[f"client {command}"]().parse_args(argv)
    if os.geteuid() != 0:
        raise TunhelperError(f"client {command} must run as root: it reads root's authorized_keys")
    path = args.authorized_keys or clients.default_path()
    if command == "add":
        return clients.add(path, args.name, args.key, [*args.helper, *helper], args.program)
    if command == "list":
        return clients.list_clients(path, args.json)
    return clients.revoke(path, args.name)


COMMANDS = {
    "connect": _connect,
    "disconnect": _disconnect,
    "status": _status,
    "leases": _leases,
    "release": _release,
    "repair": _repair,
    "renew": _renew,
    "doctor": _doctor,
    "client add": lambda argv: _client("add", argv),
    "client list": lambda argv: _client("list", argv),
    "client revoke": lambda argv: _client("revoke", argv),
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
        if argv[:1] == ["client"]:  # two words: client add|list|revoke
            command = COMMANDS.get(" ".join(argv[:2]))
            if command is None:
                raise UsageError("tunhelper client: give add, list or revoke (see --help)")
            return command(argv[2:])
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
