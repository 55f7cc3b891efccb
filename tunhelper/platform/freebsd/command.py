"""FreeBSD's commands: every one through :data:`runner`, as an argv list (no shell).

The tests put a fake runner in its place and pin the exact commands against sample
outputs. Names and addresses are checked here before they reach a command's argv.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import subprocess
from collections import namedtuple
from collections.abc import Callable, Sequence

from tunhelper.platform.base import DeviceInfo, PlatformError

IFCONFIG = "/sbin/ifconfig"
PROCSTAT = "/usr/bin/procstat"
SYSCTL = "/sbin/sysctl"
ROUTE = "/sbin/route"
NETSTAT = "/usr/bin/netstat"
KLDSTAT = "/sbin/kldstat"

# The commands get this environment and no other: nothing a client may have put into
# ours (sshd's AcceptEnv) reaches them. LIBXO_OPTIONS, for one, would turn procstat's
# table into JSON.
COMMAND_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "LC_ALL": "C"}
COMMAND_TIMEOUT = 10.0

DEVICE_NAME = re.compile(r"(?:tun|tap)\d{1,5}")
IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,14}")


# Named tuples, not dataclasses: the keeper imports this module on FreeBSD.
class Completed(namedtuple("Completed", ["returncode", "stdout", "stderr"])):
    """What a command did: exit status, raw stdout (bytes), stderr as text."""

    __slots__ = ()

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


Runner = Callable[[Sequence[str]], Completed]


def run_command(argv: Sequence[str]) -> Completed:
    """Run one command: argv list, no shell, clean environment, stdin from /dev/null."""
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=COMMAND_ENV,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Completed(127, b"", str(e))
    return Completed(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


runner: Runner = run_command
"""Every command goes through this; the tests put a fake in its place."""


class CommandFailed(PlatformError):
    """A command exited non-zero; the message is one line: the command and its error."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


def failure(argv: Sequence[str], result: Completed) -> CommandFailed:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit status {result.returncode}"
    return CommandFailed(f"{' '.join(argv)}: {why}")


def check(argv: Sequence[str]) -> Completed:
    result = runner(argv)
    if result.returncode != 0:
        raise failure(argv, result)
    return result


def device_name(device: DeviceInfo) -> str:
    if not DEVICE_NAME.fullmatch(device.name):
        raise ValueError(f"not a tun/tap device name: {device.name!r}")
    return device.name


def ifname(name: str) -> str:
    if not IFNAME.fullmatch(name):
        raise ValueError(f"not an interface name: {name!r}")
    return name


def refuse_ipv6(*addresses: str | None) -> None:
    """IPv6 is not verified on FreeBSD yet (docs/platforms.md): one line, before any command."""
    if any(a is not None and ":" in a for a in addresses):
        raise PlatformError(
            errno.EAFNOSUPPORT,
            "IPv6 pools are not supported on FreeBSD yet: give this key an IPv4 --pool only",
        )


def ipv4(text: str) -> str:
    """The address in canonical form, so nothing but an address reaches ifconfig."""
    return str(ipaddress.IPv4Address(text))


def ip(text: str) -> str:
    """As :func:`ipv4`, of either family (a route's gateway)."""
    return str(ipaddress.ip_address(text))
