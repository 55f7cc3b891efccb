"""The command line: dispatch only, and every error as one line.

Which commands exist, their parsers, entry points and whether they need root, is
:mod:`tunhelper.commands`' table; this module looks the command up, parses, checks
root, runs the entry point, and turns whatever escapes into one line on stderr. The
bare form (``tunhelper --pool ...``) is the forced command (:mod:`tunhelper.server`).
"""

from __future__ import annotations

import os
import sys

from tunhelper import commands, log
from tunhelper.errors import TunhelperError, UsageError


def _dispatch(argv: list[str]) -> int:
    command, rest = commands.find(argv)
    if command is None:
        *most, last = [c.name.split()[1] for c in commands.group(argv[0])]
        raise UsageError(f"tunhelper {argv[0]}: give {', '.join(most)} or {last} (see --help)")
    if command.name == commands.SERVE:
        return command.run()(rest)  # its settings come from argv and the config file
    tail: list[str] = []
    if command.tail is not None and "--" in rest:  # words after the first -- untouched
        rest, tail = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
    args = command.make_parser().parse_args(rest)
    if command.tail is not None:
        setattr(args, command.tail, [*getattr(args, command.tail), *tail])
    if command.root is not None and os.geteuid() != 0:
        raise TunhelperError(f"{command.name} must run as root: {command.root}")
    return command.run()(args)


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
        return _dispatch(argv)
    except TunhelperError as e:
        log.error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a bug must still reach the client as one line
        log.error(f"internal error ({type(e).__name__}: {e}); please report it")
        return 1
