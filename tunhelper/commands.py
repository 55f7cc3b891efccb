"""Every command tunhelper has, in one table: the help, the dispatch and the tests are
built from it, so a command cannot be added to one and missed by another.

Pure data and the lightest of the standard library (no dataclasses: ``cli`` imports
it on every start), so that any layer may read it (the parsers build
their epilog from it, doctor and ``client add`` recognise a command word with it).
Parsers and entry points are named as ``module:function`` and imported only when that
command runs: ``--help`` and the admin commands do not pay for the session's
libraries.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

SERVE = ""  # the forced command: tunhelper with no command word


class Command(NamedTuple):
    """One command.

    ``parser`` builds its argparse parser; ``entry`` runs it with the parsed
    arguments (for the forced command, with the raw argv: its settings come from argv
    and the config file together). ``root`` says why it must run as root (``None``:
    it need not). ``tail``: the argument that takes every word after the first ``--``
    untouched (argparse would parse them). ``side`` groups the help.
    """

    name: str
    parser: str
    entry: str
    summary: str
    usage: str = ""
    root: str | None = None
    tail: str | None = None
    side: str = "admin"

    def make_parser(self) -> Any:
        return load(self.parser)()

    def run(self) -> Callable[..., int]:
        return load(self.entry)


_OPTIONS = "tunhelper.options"
COMMANDS: tuple[Command, ...] = (
    Command(
        SERVE,
        f"{_OPTIONS}:serve_parser",
        "tunhelper.server.entry:serve_command",
        "the forced command: lease, configure, announce, hold",
        side="server",
    ),
    Command(
        "connect",
        f"{_OPTIONS}:connect_parser",
        "tunhelper.client.connect:connect_command",
        "ssh -w any, then configure this end",
        usage="[options] DESTINATION",
        side="client",
    ),
    Command(
        "disconnect",
        f"{_OPTIONS}:disconnect_parser",
        "tunhelper.client.background:disconnect_command",
        "end a connect (and its kill-switch)",
        usage="[DEVICE]",
        side="client",
    ),
    Command(
        "status",
        f"{_OPTIONS}:status_parser",
        "tunhelper.client.status:status_command",
        "each connect: state, link, last error",
        usage="[--json]",
        side="client",
    ),
    Command(
        "leases",
        f"{_OPTIONS}:leases_parser",
        "tunhelper.admin.leases:leases_command",
        "list leases (or metrics)",
        usage="[--format table|json|prometheus] [--pool P] [--client C]\n"
        "[--output FILE] [--state-dir D]",
    ),
    Command(
        "release",
        f"{_OPTIONS}:release_parser",
        "tunhelper.admin.leases:release_command",
        "free a lease by hand",
        usage="ADDRESS [--force] [--state-dir D]",
    ),
    Command(
        "repair",
        f"{_OPTIONS}:repair_parser",
        "tunhelper.admin.leases:repair_command",
        "remove bridges killed helpers left",
        usage="[--state-dir D]",
    ),
    Command(
        "renew",
        f"{_OPTIONS}:renew_parser",
        "tunhelper.admin.leases:renew_command",
        "renew this gateway's shared leases (--loop: every lifetime/3)",
        usage="[--loop] [--config PATH]",
    ),
    Command(
        "doctor",
        f"{_OPTIONS}:doctor_parser",
        "tunhelper.admin.doctor:doctor_command",
        "check sshd, keys and state; one line each",
        usage="[options]",
        root="it reads sshd's and root's files",
    ),
    Command(
        "client add",
        f"{_OPTIONS}:client_add_parser",
        "tunhelper.admin.clients:add_command",
        "add a client's authorized_keys line",
        usage="NAME --key KEY -- OPTION...",
        root="it reads root's authorized_keys",
        tail="helper",
    ),
    Command(
        "client list",
        f"{_OPTIONS}:client_list_parser",
        "tunhelper.admin.clients:list_command",
        "the clients and their live leases",
        usage="[--json]",
        root="it reads root's authorized_keys",
    ),
    Command(
        "client revoke",
        f"{_OPTIONS}:client_revoke_parser",
        "tunhelper.admin.clients:revoke_command",
        "remove a client, end its sessions",
        usage="NAME",
        root="it reads root's authorized_keys",
    ),
)
BY_NAME = {c.name: c for c in COMMANDS}
# The first word of every command ("client" for client add|list|revoke).
WORDS = frozenset(c.name.split()[0] for c in COMMANDS if c.name)


def load(spec: str) -> Any:
    """The object a ``module:name`` spec names, importing its module now."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def find(argv: list[str]) -> tuple[Command | None, list[str]]:
    """The command argv names and the words after its name.

    No command word: the forced command. A first word that starts a group but names
    no command in it (``client frobnicate``): ``None``.
    """
    for words in (2, 1):
        command = BY_NAME.get(" ".join(argv[:words])) if len(argv) >= words else None
        if command is not None:
            return command, argv[words:]
    if argv and argv[0] in WORDS:
        return None, argv[1:]
    return BY_NAME[SERVE], argv


def group(word: str) -> list[Command]:
    """The commands whose name starts with ``word`` (the choices after ``client``)."""
    return [c for c in COMMANDS if c.name.split()[:1] == [word]]


def epilog() -> str:
    """The command list at the foot of ``tunhelper --help``, grouped by side."""
    lines: list[str] = []
    for side, title in (("client", "client commands"), ("admin", "admin commands")):
        lines.append(f"{title} (see 'tunhelper COMMAND --help'):")
        for c in COMMANDS:
            if c.side != side:
                continue
            usage = [u.rstrip() for u in f"tunhelper {c.name} {c.usage}".split("\n")]
            usage[1:] = [" " * (len(c.name) + 11) + u for u in usage[1:]]
            if len(usage[-1]) > 48:
                usage.append("")
            lines.extend(f"  {u}" for u in usage[:-1])
            lines.append(f"  {usage[-1]:<49}{c.summary}")
    return "\n".join(lines) + "\n"
