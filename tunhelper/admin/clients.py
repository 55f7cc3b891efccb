"""``tunhelper client add|list|revoke``: root's authorized_keys as the list of clients.

The counterpart of easy-rsa plus ccd, or ``wg set peer ... remove``: a client is one
authorized_keys line whose forced command runs tunhelper, named by the line's comment.
``add`` writes a line the helper itself accepts (its own parsers check the options),
``revoke`` removes it and ends that key's live sessions at once. Every edit is atomic
(a temporary file in the same directory, fsync, rename, with the file's owner and
mode) and keeps every other line and comment byte for byte; edits are serialised by
a lock file beside authorized_keys, so two admins' edits never lose one another.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunhelper.admin import openssh
from tunhelper.errors import TunhelperError, UsageError
from tunhelper.statedir import write_atomically

if TYPE_CHECKING:
    from tunhelper.settings import Settings

_KEYGEN_TIMEOUT = 10


@dataclass(frozen=True)
class Client:
    """One authorized_keys line that runs tunhelper."""

    number: int  # 1-based line number
    name: str  # the line's comment (what `client add` wrote as NAME)
    key_type: str
    blob: str  # the key's base64
    args: list[str]  # the helper's arguments
    authority: bool = False  # a cert-authority line: the key is a CA's

    @property
    def fingerprint(self) -> str:
        import base64
        import binascii

        from tunhelper.server.identity import fingerprint

        try:
            return fingerprint(base64.b64decode(self.blob, validate=True))
        except (binascii.Error, ValueError):
            return "?"


def default_path(sshd_config: str | None = None) -> str:
    """Root's first authorized_keys file as sshd sees it (``sshd -T``), else the usual."""
    sshd = openssh.find_sshd()
    if sshd is not None:
        with contextlib.suppress(TunhelperError):
            paths = openssh.authorized_keys_paths(openssh.read_sshd_config(sshd, sshd_config))
            if paths:
                return paths[0]
    return "/root/.ssh/authorized_keys"


def read_lines(path: str) -> list[bytes]:
    """The file's lines, each with its own line ending (none if missing)."""
    try:
        with open(path, "rb") as f:
            return f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise TunhelperError(f"cannot read {path}: {e.strerror}") from None


def clients(lines: list[bytes]) -> list[Client]:
    out = []
    for number, raw in enumerate(lines, 1):
        try:
            found = openssh.tunhelper_line(raw.decode("utf-8", errors="replace"))
        except ValueError:
            continue
        if found is None:
            continue
        words = found.key.split(None, 2)
        if len(words) < 2:
            continue
        comment = words[2].strip() if len(words) > 2 else ""
        authority = "cert-authority" in found.names
        out.append(Client(number, comment, words[0], words[1], found.args, authority))
    return out


def program() -> str:
    """The full path of the running tunhelper, for the line's command=."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "tunhelper" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(sys.executable), "tunhelper")  # a venv's, pip's
    found = beside if os.access(beside, os.X_OK) else shutil.which("tunhelper")
    if found is None:
        raise TunhelperError("cannot tell where tunhelper is installed: give --program PATH")
    return os.path.abspath(found)


def check_key(key: str) -> tuple[str, str, str]:
    """``(type, base64, fingerprint)`` of a public key, as ssh-keygen reads it."""
    words = key.split()
    if len(words) < 2 or not openssh.KEY_TYPE.fullmatch(words[0]):
        raise UsageError("--key: give a public key line, e.g. 'ssh-ed25519 AAAA... comment'")
    if not openssh.BASE64.fullmatch(words[1]) or "-cert-v01" in words[0]:
        raise UsageError(f"--key: not a plain public key of type {words[0]}")
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise TunhelperError("ssh-keygen not found: install openssh-client")
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as f:
        f.write(f"{words[0]} {words[1]}\n")
        f.flush()
        result = subprocess.run(
            [keygen, "-l", "-f", f.name],
            capture_output=True,
            text=True,
            timeout=_KEYGEN_TIMEOUT,
            check=False,
        )
    fields = result.stdout.split()
    if result.returncode != 0 or len(fields) < 2 or not fields[1].startswith("SHA256:"):
        raise UsageError(f"--key: ssh-keygen cannot read it as a {words[0]} public key")
    return words[0], words[1], fields[1]


def check_helper_args(args: list[str]) -> None:
    """The helper's own parsers and cross-checks, as a session would run them."""
    from tunhelper.commands import WORDS
    from tunhelper.settings import serve_settings

    if not args:
        raise UsageError("give the helper's options after --, e.g. -- --pool 192.168.3.0/24")
    if args[0] in WORDS:
        raise UsageError(f"the helper's options, not the command {args[0]!r}")
    for arg in args:
        if not arg.isprintable():
            raise UsageError(f"option {arg!r}: no control characters on an authorized_keys line")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            serve_settings(args)
    except SystemExit:
        raise UsageError("--help and --version have no place on a client's line") from None


@contextlib.contextmanager
def _editing(path: str) -> Iterator[None]:
    """Hold the lock on ``path``'s edits (``.authorized_keys.lock`` beside it): a
    read-modify-write that another one overlapped would drop its line."""
    from tunhelper import statedir

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        with statedir.held(directory, f".{os.path.basename(path)}"):
            yield
    except OSError as e:
        raise TunhelperError(f"cannot lock {path} for editing: {e.strerror}") from None


def add(path: str, name: str, key: str, helper_args: list[str], prog: str | None) -> int:
    from tunhelper.options.types import identity_name

    try:
        identity_name(name)  # a name the helper's --client accepts too
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"NAME: {e}") from None
    key_type, blob, fp = check_key(key)
    check_helper_args(helper_args)
    command = prog or program()
    if not os.path.isabs(command):
        raise UsageError(f"--program {command}: give the full path")
    with _editing(path):
        _add(path, name, key_type, blob, fp, [command, *helper_args])
    print(f"added {name} ({fp}) to {path}: {shlex.join(helper_args)}")
    return 0


def _add(path: str, name: str, key_type: str, blob: str, fp: str, command: list[str]) -> None:
    lines = read_lines(path)
    for c in clients(lines):
        if c.name == name:
            raise TunhelperError(f"{path}:{c.number} already has a client named {name}")
    for number, raw in enumerate(lines, 1):
        if blob.encode() in raw.split():
            raise TunhelperError(f"{path}:{number} already has this key ({fp})")
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    lines.append(openssh.key_line(command, key_type, blob, name).encode())
    write_atomically(path, b"".join(lines))


def line_settings(c: Client) -> Settings | None:
    """The line's settings as its helper reads them (the helper's parsers and config
    file, so a [pool] section's state-dir and the [store] count); ``None`` for a line
    the helper would refuse (doctor says why)."""
    from tunhelper.settings import serve_settings

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return serve_settings(c.args)
    except (TunhelperError, SystemExit):
        return None


def identities(c: Client, settings: Settings) -> set[str]:
    """The identities this line's sessions are recorded under: its key's fingerprint
    (ExposeAuthInfo) and the line's own --client name, never a shared login name. A
    cert-authority line's sessions are recorded by their certificates' key IDs, which
    the line does not name: it has only its --client, if it gives one."""
    named = {settings.identity} if settings.identity else set()
    return named if c.authority else {c.fingerprint, *named} - {"?"}


def live_leases(c: Client, settings: Settings | None) -> list:
    """The client's live leases: its identities only, in the pools and the store its
    line's helper uses (the store's query refuses an unscoped call)."""
    from tunhelper.liveness import Liveness
    from tunhelper.store import ACTIVE, open_store

    if settings is None:
        return []
    who = identities(c, settings)
    if not who or (settings.store is None and not os.path.isdir(settings.state_dir)):
        return []  # nothing it could be recorded under, or no session has run yet
    store = open_store(settings.state_dir, config=settings.store)
    try:
        alive = Liveness()
        pools = [pool.name for pool in settings.pools]
        return [x for x in store.leases_of(who, pools) if x.state == ACTIVE and alive(x)]
    finally:
        store.close()


def list_clients(path: str, as_json: bool) -> int:
    rows = []
    for c in clients(read_lines(path)):
        leases = live_leases(c, line_settings(c))
        rows.append(
            {
                "name": c.name,
                "line": c.number,
                "fingerprint": c.fingerprint,
                "options": c.args,
                "leases": [{"address": x.address, "device": x.owner.device} for x in leases],
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        held = ", ".join(f"{x['address']} on {x['device']}" for x in row["leases"]) or "-"
        print(
            f"{row['name'] or '(no name)'}\tline {row['line']}\t{row['fingerprint']}\t"
            f"{shlex.join(row['options'])}\tlive: {held}"
        )
    return 0


def revoke(path: str, name: str) -> int:
    from tunhelper.liveness import end
    from tunhelper.server import replaced

    with _editing(path):
        lines = read_lines(path)
        mine = [c for c in clients(lines) if c.name == name]
        if not mine:
            raise TunhelperError(f"{path} has no client named {name}: see tunhelper client list")
        gone = {c.number for c in mine}
        write_atomically(path, b"".join(x for n, x in enumerate(lines, 1) if n not in gone))
    ended = 0
    for c in mine:
        settings = line_settings(c)
        for lease in live_leases(c, settings):
            assert settings is not None  # it found leases
            replaced.leave_note(
                settings.state_dir, lease.token, f"client {name} was revoked: ending session"
            )
            end(lease)
            ended += 1
    numbers = ", ".join(map(str, sorted(gone)))
    print(f"revoked {name}: removed line {numbers} of {path}, ended {ended} session(s)")
    for c in mine:
        if c.authority:
            print(
                f"line {c.number} was a cert-authority line: sessions of its certificates "
                "are recorded by key ID (cert:KEYID), not by this key, and were left "
                "running: find them with tunhelper leases, and list the certificates in "
                "sshd's RevokedKeys"
            )
    return 0


# -- entry points (tunhelper.commands) ------------------------------------------------------


def add_command(args: argparse.Namespace) -> int:
    return add(
        args.authorized_keys or default_path(), args.name, args.key, args.helper, args.program
    )


def list_command(args: argparse.Namespace) -> int:
    return list_clients(args.authorized_keys or default_path(), args.json)


def revoke_command(args: argparse.Namespace) -> int:
    return revoke(args.authorized_keys or default_path(), args.name)
