"""Connect profiles: ``/etc/tunhelper/connect/NAME.conf``, for ``tunhelper-connect@NAME``.

One ``key = value`` a line, ``#`` comments. A profile becomes ``connect`` arguments,
so it is checked by the same parser as the command line. It is read only if root owns
it and neither group nor others may write it (it names the ssh command root runs).

    destination = gw1.example.net gw2.example.net
    ssh = ssh -i /root/.ssh/tunnel_key
    reconnect = yes          # the default in a profile
    kill-switch = no
"""

from __future__ import annotations

import os
import re
import stat

from tunhelper.errors import UsageError

DIRECTORY = "/etc/tunhelper/connect"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
FLAGS = {
    "reconnect": "--reconnect",
    "kill-switch": "--kill-switch",
    "allow-lan": "--allow-lan",
    "shuffle": "--shuffle",
    "tap": "--tap",
    "json": "--json",
    "multiplex": "--multiplex",
}
NEGATIVE = {"aes-gcm": "--no-aes-gcm"}  # on by default: "no" adds the option
VALUES = {"ssh": "--ssh-cmd", "wait": "--wait"}
BOOLEANS = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}


def path_of(name: str, directory: str = DIRECTORY) -> str:
    if not NAME.fullmatch(name):
        raise UsageError(f"profile name {name!r}: use letters, digits and . _ - @ only")
    return os.path.join(directory, f"{name}.conf")


def read(name: str, directory: str = DIRECTORY) -> list[str]:
    """The ``connect`` arguments a profile stands for (options first, destinations last)."""
    path = path_of(name, directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise UsageError(f"cannot read profile {path}: {e.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="strict") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"profile {path} is not a regular file")
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise UsageError(
                f"profile {path} must be owned by root and not group/other-writable "
                "(chown root: and chmod go-w it)"
            )
        try:
            text = f.read()
        except UnicodeDecodeError:
            raise UsageError(f"profile {path} is not UTF-8 text") from None
    return parse(text, path)


def parse(text: str, path: str) -> list[str]:
    argv: list[str] = []
    destinations: list[str] = []
    seen: set[str] = set()
    reconnect = True
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("ssh") else raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        where = f"{path}:{number}"
        if not sep or not value:
            raise UsageError(f"{where}: expected 'key = value', got {raw.strip()!r}")
        key = key.lower()
        if key in seen:
            raise UsageError(f"{where}: {key} is given twice")
        seen.add(key)
        if key == "destination":
            destinations = value.split()
        elif key in VALUES:
            argv += [VALUES[key], value]
        elif key in FLAGS or key in NEGATIVE:
            if value.lower() not in BOOLEANS:
                raise UsageError(f"{where}: {key} must be yes or no, not {value!r}")
            on = BOOLEANS[value.lower()]
            if key == "reconnect":
                reconnect = on
            elif key in FLAGS and on:
                argv.append(FLAGS[key])
            elif key in NEGATIVE and not on:
                argv.append(NEGATIVE[key])
        else:
            known = ", ".join(sorted(["destination", *VALUES, *FLAGS, *NEGATIVE]))
            raise UsageError(f"{where}: unknown key {key!r} (known: {known})")
    if not destinations:
        raise UsageError(f"{path}: no 'destination = HOST...' line")
    if reconnect:
        argv.append("--reconnect")
    return [*argv, "--", *destinations]
