"""The option types: each checks one value and says what would be right.

A type raises ``argparse.ArgumentTypeError`` with a message that names the value and
what would be right; argparse and the config file (:mod:`tunhelper.conffile`) both
turn it into one line.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex

from tunhelper import defaults, family

_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
_IDENTITY_NAME = re.compile(r"[A-Za-z0-9._@:+-]{1,64}")


def seconds(text: str) -> float:
    """``--wait``, ``--db-timeout``: 0 to a minute."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= defaults.MAX_WAIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 0 to {defaults.MAX_WAIT:g}"
        )
    return value


def mtu(text: str) -> int:
    top = max(defaults.MAX_MTU.values())
    if not text.isdigit() or not defaults.MIN_MTU <= int(text) <= top:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an MTU from {defaults.MIN_MTU} (IPv4's minimum) to {top} "
            "(the most an ssh tun channel carries)"
        )
    return int(text)


def _count(text: str, top: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sessions from 1 to {top}")
    return int(text)


def max_leases(text: str) -> int:
    return _count(text, defaults.MAX_LEASES)


def max_sessions(text: str) -> int:
    return _count(text, defaults.MAX_SESSIONS)


def identity_name(text: str) -> str:
    """A client's identity as the admin names it (``--client NAME``, ``client add NAME``)."""
    if not _IDENTITY_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a client name: use 1-64 letters, digits or ._@:+-"
        )
    return text


def network(text: str) -> str:
    """An IPv4 or IPv6 network; IPv6 in compact form, as routes and the kernel show it."""
    import netaddr

    try:
        net = netaddr.IPNetwork(text) if "/" in text else None
    except (netaddr.AddrFormatError, ValueError):
        net = None
    if net is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a network like 10.1.0.0/16 or fd00:1::/64"
        )
    if net.version == 6:
        if net.ip != net.network:
            raise argparse.ArgumentTypeError(
                f"{text!r} has host bits set; did you mean {net.cidr}?"
            )
        return str(net.cidr)
    if str(net.cidr) != text:
        raise argparse.ArgumentTypeError(f"{text!r} has host bits set; did you mean {net.cidr}?")
    return text


DEFAULT_ROUTE = "default"  # everything: each family's two halves (settings expands it)


def route(text: str) -> str:
    if text == DEFAULT_ROUTE:
        return text
    text = network(text)
    if text.endswith("/0"):
        halves = "::/1 and 8000::/1" if family.of(text) == 6 else "0.0.0.0/1 and 128.0.0.0/1"
        raise argparse.ArgumentTypeError(
            f"{text!r} would route the ssh connection itself into the tunnel; "
            f"use 'default' (or {halves}) for everything else"
        )
    return text


def address(text: str) -> str:
    """An IPv4 (dotted quad) or IPv6 address; IPv6 in compact form, as the lease store
    and the kernel write it."""
    version = family.parse(text)
    if version == 4:
        return text
    if version == 6:
        import netaddr

        return str(netaddr.IPAddress(text, 6))
    raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address")


def _split(text: str) -> list[str]:
    """A command line split as a shell would (it is never given to one)."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def hook(text: str) -> list[str]:
    argv = _split(text)
    if not argv or not os.path.isabs(argv[0]):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the hook as an absolute path (and its arguments)"
        )
    return argv


def hook_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= defaults.MAX_HOOK_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {defaults.MAX_HOOK_TIMEOUT:g}"
        )
    return value


def ifname(text: str) -> str:
    if not _IFNAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an interface name: 1-15 letters, digits or ._-"
        )
    return text


def path(text: str) -> str:
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path")
    return os.path.normpath(text)


def destination(text: str) -> str:
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ssh destination")
    return text


def ssh_command(text: str) -> list[str]:
    argv = _split(text)
    if not argv:
        raise argparse.ArgumentTypeError("the ssh command is empty")
    return argv
