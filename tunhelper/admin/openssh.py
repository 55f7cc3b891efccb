"""What recent OpenSSH releases changed for tunnels, as ``tunhelper doctor`` judges it.

Read from openssh-portable's history: from 10.4, ``DisableForwarding yes`` also refuses
tun forwarding, whatever ``PermitTunnel`` says; from 10.5, ``restrict`` in
authorized_keys blocks it and no option re-enables it (up to 10.4 it does not: checked
on 9.2p1 and 10.0p2); 9.8 added ``PerSourcePenalties``; ``ChannelTimeout``'s
``session`` and ``tun-connection`` types close idle channels. The findings depend on the
version of the sshd asked, so they are computed from ``sshd -V`` and ``sshd -T``; an
unknown version is judged as the newest (doctor is for today's gateways).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunhelper.admin.doctor import Finding, KeyLine

Version = tuple[int, int, int]
NEWEST: Version = (99, 0, 0)  # what an unknown version is judged as
DISABLE_FORWARDING_TUN: Version = (10, 4, 0)
RESTRICT_BLOCKS_TUN: Version = (10, 5, 0)
PENALTIES: Version = (9, 8, 0)
EXPLICIT_OPTIONS = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc"
_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)(?:p(\d+))?")
_TIMEOUT = 30.0


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


def _at_least(version: Version | None, wanted: Version) -> bool:
    return (version or NEWEST) >= wanted


def restrict_finding(where: str, version: Version | None) -> Finding:
    """``restrict`` on a tunhelper key: fatal from 10.5, a time bomb below."""
    from tunhelper.admin.doctor import error, warning

    if _at_least(version, RESTRICT_BLOCKS_TUN):
        return error(
            f"{where}: 'restrict' blocks tunnel forwarding on {show(version)} (10.5 and "
            f"later; no option re-enables it): list {EXPLICIT_OPTIONS} instead"
        )
    return warning(
        f"{where}: 'restrict' still lets tunnels through on {show(version)}, but blocks "
        f"them from OpenSSH 10.5 on: list {EXPLICIT_OPTIONS} instead, which stays valid"
    )


def _one(settings: dict[str, list[str]], key: str) -> str | None:
    values = settings.get(key)
    return values[0] if values else None


def check(settings: dict[str, list[str]], version: Version | None, said: str) -> list[Finding]:
    """Findings for the settings recent OpenSSH releases made matter for tunnels."""
    from tunhelper.admin.doctor import error, ok, warning

    out = []
    if version is None:
        out.append(
            warning(
                f"sshd -V: cannot tell OpenSSH's version ({said}); judged as the newest release"
            )
        )
    else:
        out.append(ok(f"sshd: {show(version)} ({said})"))

    disable = _one(settings, "disableforwarding")
    instead = (
        "set DisableForwarding no and turn the others off one by one (AllowTcpForwarding "
        "no, AllowAgentForwarding no, AllowStreamLocalForwarding no, X11Forwarding no)"
    )
    if disable == "yes":
        if _at_least(version, DISABLE_FORWARDING_TUN):
            out.append(
                error(
                    f"sshd: DisableForwarding yes refuses every tunnel on {show(version)} "
                    f"(10.4 and later), whatever PermitTunnel says; {instead}"
                )
            )
        else:
            out.append(
                warning(
                    f"sshd: DisableForwarding yes: {show(version)} still lets tunnels "
                    f"through, but 10.4 and later refuse them; {instead}"
                )
            )

    penalties = _one(settings, "persourcepenalties")
    if penalties is not None and penalties != "no":
        longest = re.search(r"\bmax:(\S+)", penalties)
        exempt = _one(settings, "persourcepenaltyexemptlist") or "none"
        out.append(
            ok(
                f"sshd: PerSourcePenalties {penalties}: a client that keeps failing to "
                "authenticate (a removed key, a reconnect loop) gets its source address "
                f"refused for up to {longest.group(1) if longest else 'the max penalty'}, "
                "and with it every client behind the same NAT; clients should back off "
                "between retries, and known client networks can be exempted with "
                f"PerSourcePenaltyExemptList (now {exempt})"
            )
        )

    for timeout in " ".join(settings.get("channeltimeout", [])).split():
        kind, _, interval = timeout.partition("=")
        if interval in ("", "0", "none"):
            continue
        hit = [t for t in ("session", "tun-connection") if fnmatch.fnmatchcase(t, kind)]
        if hit:
            out.append(
                warning(
                    f"sshd: ChannelTimeout {timeout}: sshd closes {' and '.join(hit)} "
                    f"channels idle for {interval}: a tunnel that carries nothing that long "
                    "ends and its address is released (a tunhelper session's own channel "
                    "is idle once the address is printed); remove "
                    f"{'/'.join(hit)} from ChannelTimeout (in a Match block for root if "
                    "other logins need it)"
                )
            )
    return out


def check_tunnel_modes(settings: dict[str, list[str]], lines: list[KeyLine]) -> list[Finding]:
    """``PermitTunnel`` must let through the kind of device the keys' pools expect."""
    from tunhelper.admin.doctor import error, warning

    mode = _one(settings, "permittunnel")
    out = []
    for line in lines:
        if mode == "point-to-point" and line.tap:
            out.append(
                error(
                    f"{line.where}: the pool has a bridge for tap sessions, but PermitTunnel "
                    "point-to-point refuses tap (ssh -o Tunnel=ethernet); set PermitTunnel "
                    "yes (or ethernet)"
                )
            )
        elif mode == "ethernet" and not line.tap:
            out.append(
                warning(
                    f"{line.where}: PermitTunnel ethernet refuses plain 'ssh -w any' (tun): "
                    "its clients must use -o Tunnel=ethernet; set PermitTunnel yes to "
                    "serve both"
                )
            )
    return out
