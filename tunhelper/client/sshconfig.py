"""The user's ssh configuration, as ssh itself resolves it (``ssh -G``), and the options
``connect`` adds to it.

``ssh -G`` evaluates ``Host`` and ``Match`` blocks, ``Include``, ``-F`` and the ``-o``
options of the ssh command exactly as the real connection will, so we never parse
ssh_config ourselves. What ``connect`` adds (ssh keeps the *first* value it is given,
and command-line options come before the configuration files):

- ``-S none -o ControlMaster=no``: always its own connection. Over a multiplexed
  master, ``-w`` is asked of the master's sshd session, and the server finds no tunnel
  device for the forced command's session. ``--multiplex`` keeps the user's choice.
- ``ServerAliveInterval=10``/``ServerAliveCountMax=3``: a dead path is noticed in
  about 30 s, unless the configuration sets an interval itself.
- ``Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com`` when the CPU has AES
  and the configuration names no ciphers: about 1.7x the default cipher's throughput.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass

from tunhelper.errors import TunhelperError

ALIVE = ["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
OWN_CONNECTION = ["-S", "none", "-o", "ControlMaster=no"]
AES_FIRST = ["-o", "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com"]


@dataclass(frozen=True)
class Effective:
    """What ``ssh -G`` says for one destination (lower-case keys, first value kept)."""

    values: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def first_hop(self) -> tuple[str, int]:
        """The host and port ssh opens its TCP connection to: ProxyJump's first jump."""
        jump = self.get("proxyjump")
        if jump and jump.lower() != "none":
            first = jump.split(",")[0]
            if "://" in first:  # ssh://[user@]host[:port]
                first = first.split("://", 1)[1]
            first = first.rsplit("@", 1)[-1]
            host, _, port = first.partition(":")
            if first.startswith("["):
                host, _, rest = first[1:].partition("]")
                port = rest.lstrip(":")
            return host, int(port or 22)
        return self.get("hostname"), int(self.get("port", "22") or 22)


def parse(text: str) -> Effective:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            values.setdefault(key.lower(), value.strip())
    return Effective(values)


def resolve(ssh_cmd: list[str], destination: str, timeout: float = 10.0) -> Effective:
    """``ssh ... -G DESTINATION``: the configuration the real connection will use."""
    argv = [*ssh_cmd, "-G", "--", destination]
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TunhelperError(
            f"cannot run {ssh_cmd[0]!r} -G to read the ssh configuration: {e}"
        ) from None
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()
        raise TunhelperError(
            f"ssh cannot read its configuration for {destination}: "
            f"{message[-1] if message else result.returncode}"
        )
    return parse(result.stdout)


def default_ciphers(ssh_cmd: list[str]) -> str | None:
    """ssh's built-in cipher list (``-F none``), to tell whether the user chose one."""
    try:
        result = subprocess.run(
            [ssh_cmd[0], "-F", "none", "-G", "tunhelper.invalid"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(result.stdout).get("ciphers") or None


def added_options(
    effective: Effective, *, multiplex: bool, cpu_aes: bool, builtin_ciphers: str | None
) -> list[str]:
    """The options ``connect`` puts before the user's own (see the module's docstring)."""
    argv: list[str] = []
    if not multiplex:
        argv += OWN_CONNECTION
    if effective.get("serveraliveinterval", "0") in ("0", ""):
        argv += ALIVE
    ciphers = effective.get("ciphers")
    if cpu_aes and builtin_ciphers is not None and ciphers == builtin_ciphers:
        argv += AES_FIRST
    return argv


def peer_addresses(effective: Effective) -> list[tuple[str, int]]:
    """Every address the first hop resolves to, with its port (the kill-switch allows
    them before any connection exists, so they are resolved up front)."""
    host, port = effective.first_hop
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({(str(info[4][0]), port) for info in infos})


def pinned(effective: Effective, addresses: list[tuple[str, int]]) -> list[str]:
    """Options that make ssh connect to an address resolved before the kill-switch
    blocked DNS, checking the host key under the name known_hosts has it by.

    ``HostName=ADDRESS`` with ``HostKeyAlias=NAME`` (``[NAME]:PORT`` off port 22, as
    known_hosts writes it), unless the configuration already names an alias. Nothing
    with ProxyJump (the jump's own ssh resolves its host) or when the host is already
    an address.
    """
    jump = effective.get("proxyjump")
    if (jump and jump.lower() != "none") or not addresses:
        return []
    host, port = effective.first_hop
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return []  # already an address: nothing to resolve
    except OSError:
        pass
    argv = ["-o", f"HostName={addresses[0][0]}"]
    if not effective.get("hostkeyalias") or effective.get("hostkeyalias") == "none":
        argv += ["-o", f"HostKeyAlias={host if port == 22 else f'[{host}]:{port}'}"]
    return argv
