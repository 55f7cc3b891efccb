"""OpenSSH's formats, read and written in one place: ``sshd -T``, ``sshd -V``, the
releases that changed what tunnels get, root's authorized_keys lines and the
restriction list a tunhelper key carries.

Doctor judges these and ``client add|list|revoke`` edits them; the tests read sshd
through the same functions. It is admin code, not core: the helper never reads an
sshd configuration or an authorized_keys file (sshd already did, and hands it only the
forced command), so nothing below admin/ may depend on it. It judges nothing either:
the findings are doctor's (``admin/doctor_sshd.py``).

sshd compares keywords without case, and so must every reader of ``sshd -T``:
OpenSSH 10.5 and later print them in mixed case (``PermitTunnel yes``), earlier releases
in lower case. :class:`SshdConfig` is the only reader, and looks keywords up without case.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tunhelper.errors import TunhelperError

SSHD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_TIMEOUT = 30.0

# -- releases ------------------------------------------------------------------------

Version = tuple[int, int, int]
NEWEST: Version = (99, 0, 0)  # what an unknown version is judged as
GLOBAL_CHANNEL_TIMEOUT: Version = (9, 7, 0)  # ChannelTimeout global=: all channels at once
PENALTIES: Version = (9, 8, 0)  # PerSourcePenalties, on by default
DISABLE_FORWARDING_TUN: Version = (10, 4, 0)  # DisableForwarding yes refuses tunnels too
RESTRICT_BLOCKS_TUN: Version = (10, 5, 0)  # `restrict` refuses tunnels, nothing re-allows
MATCH_CHANNEL_TIMEOUT: Version = (10, 5, 0)  # a Match block's ChannelTimeout is in force
DOCUMENTED_CHANNEL_NAMES: Version = (10, 6, 0)  # ChannelTimeout session=/tun-connection= act
MIXED_CASE_DUMP: Version = (10, 5, 0)  # sshd -T prints `PermitTunnel`, not `permittunnel`
KNOWN: Version = (10, 6, 1)  # the newest release whose changes were read (docs/platforms.md)
_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)(?:p(\d+))?")


def parse_version(text: str) -> Version | None:
    """``OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1 ...`` -> ``(10, 0, 2)``; ``None`` if absent.

    Debian's ``sshd -V`` omits the portable suffix (``OpenSSH_9.2, OpenSSL ...``): 0 then.
    """
    m = _VERSION.search(text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def sshd_version(sshd: str) -> tuple[Version | None, str]:
    """The version ``sshd -V`` names (on stderr; an sshd without -V names it in its usage
    message), and the line it came from, for the report."""
    try:
        result = subprocess.run(
            [sshd, "-V"], capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    text = result.stderr + "\n" + result.stdout
    for line in text.splitlines():
        version = parse_version(line)
        if version is not None:
            return version, line.strip()
    said = text.strip().splitlines()
    return None, said[0] if said else "nothing"


def show(version: Version | None) -> str:
    if version is None:
        return "an unknown OpenSSH"
    major, minor, patch = version
    return f"OpenSSH {major}.{minor}" + (f"p{patch}" if patch else "")


def at_least(version: Version | None, wanted: Version) -> bool:
    """Does ``version`` have what ``wanted`` brought? An unknown one is judged the newest."""
    return (version or NEWEST) >= wanted


# -- sshd -T ---------------------------------------------------------------------------


class SshdConfig(Mapping[str, list[str]]):
    """sshd's effective configuration: keyword -> its values, one per line of ``sshd -T``
    (AcceptEnv, ListenAddress and the like repeat). Keywords are looked up without case,
    as sshd reads them."""

    def __init__(self, values: Mapping[str, list[str]] | None = None) -> None:
        self._values: dict[str, list[str]] = {}
        for keyword, said in (values or {}).items():
            self._values.setdefault(keyword.lower(), []).extend(said)

    @classmethod
    def parse(cls, text: str) -> SshdConfig:
        config = cls()
        for line in text.splitlines():
            keyword, _, value = line.strip().partition(" ")
            if keyword:
                config._values.setdefault(keyword.lower(), []).append(value.strip())
        return config

    def __getitem__(self, keyword: str) -> list[str]:
        return self._values[keyword.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def first(self, keyword: str, default: str = "") -> str:
        """The keyword's first value (the one sshd uses), else ``default``."""
        values = self._values.get(keyword.lower())
        return values[0] if values else default

    def words(self, keyword: str) -> list[str]:
        """Every word of every value: AcceptEnv, AuthorizedKeysFile, ChannelTimeout."""
        return " ".join(self._values.get(keyword.lower(), [])).split()

    def replaced(self, keyword: str, *values: str) -> SshdConfig:
        """A copy with ``keyword`` set to ``values`` (for what-if judgements)."""
        copy = SshdConfig(self._values)
        copy._values[keyword.lower()] = list(values)
        return copy


def find_sshd() -> str | None:
    return shutil.which("sshd", path=SSHD_PATH)


def read_sshd_config(
    sshd: str, config: str | None = None, connection: str | None = "user=root"
) -> SshdConfig:
    """``sshd -T``: the effective configuration for ``connection`` (``-C``: its Match
    blocks apply; ``None``: the global settings, no Match block applied). Raises
    TunhelperError with one line (sshd's last) when sshd cannot say."""
    argv = [sshd, "-T"]
    if connection is not None:
        argv += ["-C", connection]
    if config is not None:
        argv += ["-f", config]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TunhelperError(f"cannot run {' '.join(argv)}: {e}") from None
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise TunhelperError(f"{' '.join(argv)} failed: {said}")
    return SshdConfig.parse(result.stdout)


def authorized_keys_paths(config: SshdConfig) -> list[str]:
    """Root's authorized_keys files, as sshd would expand AuthorizedKeysFile."""
    home = pwd.getpwuid(0).pw_dir
    default = [".ssh/authorized_keys"]  # sshd's
    values = config.words("AuthorizedKeysFile") if "AuthorizedKeysFile" in config else default
    tokens = {"%h": home, "%u": "root", "%U": "0", "%%": "%"}  # sshd's, for root
    paths = []
    for value in values:
        if value == "none":
            continue
        path = re.sub(r"%[huU%]", lambda m: tokens[m.group(0)], value)
        paths.append(path if os.path.isabs(path) else os.path.join(home, path))
    return paths


# -- authorized_keys -------------------------------------------------------------------


@dataclass(frozen=True)
class Restriction:
    """One option of the restriction list, and what a tunhelper key without it may also do
    (empty: nothing a client controls, so doctor does not ask for it)."""

    option: str
    without: str


# What `restrict` stands for today, spelled out: unlike `restrict`, a future OpenSSH
# cannot widen it to tunnel forwarding (10.5 did). Every line `client add` writes
# carries it; doctor asks for each one with a reason.
RESTRICTIONS = (
    Restriction("no-pty", "a client may ask for a terminal, which mangles the announcement"),
    Restriction(
        "no-port-forwarding",
        "the key may also forward TCP ports, for example to services listening only on "
        "the gateway's localhost",
    ),
    Restriction("no-agent-forwarding", "the key may also forward an ssh agent"),
    Restriction("no-X11-forwarding", "the key may also forward X11"),
    Restriction("no-user-rc", ""),  # root's ~/.ssh/rc is root's own file
)
RESTRICTION_LIST = ",".join(r.option for r in RESTRICTIONS)

KEY_TYPE = re.compile(
    r"(ssh-(rsa|dss|ed25519|ed448|xmss)|ecdsa-sha2-nistp(256|384|521)"
    r"|sk-ecdsa-sha2-nistp256|sk-ssh-ed25519)(-cert-v01)?(@openssh\.com)?"
)
BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def split_key_line(line: str) -> tuple[str, str] | None:
    """``(options, key...)`` of an authorized_keys line, or ``None`` for a comment/blank.

    As sshd reads it: a line that starts with a key (a key type, then base64) has no
    options; otherwise the options field runs to the first space or tab outside double
    quotes, and inside quotes ``\\"`` is a quote that does not end them.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split(None, 2)
    if len(words) >= 2 and KEY_TYPE.fullmatch(words[0]) and BASE64.fullmatch(words[1]):
        return "", text
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted and text[i + 1 : i + 2] == '"':
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            break
        i += 1
    if quoted:
        raise ValueError("an option's double quote is never closed")
    return text[:i], text[i:].strip()


def parse_options(text: str) -> list[tuple[str, str | None]]:
    """``no-pty,command="a \\"b\\", c"`` -> ``[("no-pty", None), ("command", 'a "b", c')]``.

    Names are lower-cased (sshd compares them without case); a value is always quoted.
    """
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(text):
        m = re.match(r"[A-Za-z0-9_-]+", text[i:])
        if m is None:
            raise ValueError(f"bad option syntax at {text[i : i + 20]!r}")
        name = m.group(0).lower()
        i += m.end()
        value = None
        if text[i : i + 1] == "=":
            if text[i + 1 : i + 2] != '"':
                raise ValueError(f"the value of {name} must be in double quotes")
            value, i = _quoted(text, i + 2, name)
        options.append((name, value))
        if i < len(text):
            if text[i] != ",":
                raise ValueError(f"expected a comma after {name}")
            i += 1
    return options


def _quoted(text: str, i: int, name: str) -> tuple[str, int]:
    """The value that starts at ``text[i]`` (after its opening quote), and where it ends."""
    chars = []
    while True:
        if i >= len(text):
            raise ValueError(f"the value of {name} has no closing quote")
        if text[i] == "\\" and text[i + 1 : i + 2] == '"':
            chars.append('"')
            i += 2
            continue
        if text[i] == '"':
            return "".join(chars), i + 1
        chars.append(text[i])
        i += 1


def tunhelper_args(command: str) -> tuple[str, list[str]] | None:
    """``(program, arguments)`` when a forced command runs tunhelper, else ``None``.

    ``program`` is what root's shell looks up (``exec`` skipped); the arguments are
    those after the word naming tunhelper (``/usr/bin/tunhelper``, ``python3 -m
    tunhelper``). Raises ValueError for a command that names tunhelper but cannot be
    split into words.
    """
    try:
        argv = shlex.split(command)
    except ValueError as e:
        if "tunhelper" in command:
            raise ValueError(f"command={command!r} cannot be split into words ({e})") from None
        return None
    for i, word in enumerate(argv):
        if os.path.basename(word) == "tunhelper":
            words = argv[1:] if argv[0] == "exec" and len(argv) > 1 else argv
            return words[0], argv[i + 1 :]
    return None


@dataclass(frozen=True)
class TunhelperLine:
    """An authorized_keys line whose forced command runs tunhelper, in its parts."""

    options: list[tuple[str, str | None]]  # lower-cased names, as parse_options gives
    program: str  # what root's shell runs
    args: list[str]  # the helper's arguments
    key: str  # what follows the options: type, base64, comment

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.options}


def tunhelper_line(line: str) -> TunhelperLine | None:
    """The parts of a line that runs tunhelper; ``None`` for any other line (blank,
    comment, no forced command, another program). Raises ValueError for a line that
    cannot be read."""
    split = split_key_line(line)
    if split is None:
        return None
    options = parse_options(split[0])
    commands = [value for name, value in options if name == "command" and value is not None]
    found = tunhelper_args(commands[0]) if commands else None
    if found is None:
        return None
    return TunhelperLine(options, found[0], found[1], split[1])


def key_line(command: list[str], key_type: str, blob: str, comment: str) -> str:
    """The line ``client add`` writes: the restriction list, ``command`` forced, the key."""
    quoted = shlex.join(command).replace('"', '\\"')  # sshd's quoting: only \" is special
    return f'{RESTRICTION_LIST},command="{quoted}" {key_type} {blob} {comment}\n'
