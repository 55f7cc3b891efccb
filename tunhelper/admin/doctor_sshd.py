"""Doctor's judgement of sshd's effective configuration for root, and of what recent
OpenSSH releases changed for tunnels.

Read from openssh-portable's history and Debian's 10.6p1 manual pages (docs/platforms.md
lists what each release changed): from 10.4, ``DisableForwarding yes`` also refuses tun
forwarding, whatever ``PermitTunnel`` says; from 10.5, ``restrict`` in authorized_keys
blocks it and no option re-enables it (up to 10.4 it does not: checked on 9.2p1 and
10.0p2), and a Match block's ``ChannelTimeout`` is in force (before, the global one
is); 9.8 added ``PerSourcePenalties``; ``ChannelTimeout``'s ``session`` and
``tun-connection`` types close idle channels. The findings depend on the version of
the sshd asked (``sshd -V``); an unknown version is judged as the newest (doctor is
for today's gateways). The formats themselves are :mod:`tunhelper.admin.openssh`'s.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from tunhelper.admin import openssh
from tunhelper.admin.findings import Finding, error, ok, warning
from tunhelper.admin.openssh import SshdConfig, Version, at_least, show

# Names a client must never be able to set in a root session: each one runs code of
# the client's choosing before tunhelper can defend itself (the dynamic linker, the
# login shell that runs the forced command, Python), or forges its identity.
DANGEROUS_ENV = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "BASH_FUNC_tunhelper%%",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "SSH_USER_AUTH",
)


def accept_env_risks(patterns: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Each AcceptEnv pattern that lets a dangerous name through, with those names.

    sshd's patterns know only ``*`` and ``?``; a ``[`` is a plain character to sshd.
    """
    risky = []
    for pattern in patterns:
        glob = pattern.replace("[", "[[]")
        names = [n for n in DANGEROUS_ENV if fnmatch.fnmatchcase(n, glob)]
        if names:
            risky.append((pattern, names))
    return risky


# -- what every release asks of a tunhelper gateway ---------------------------------


def check_sshd(config: SshdConfig) -> list[Finding]:
    """PermitTunnel, PermitRootLogin, ExposeAuthInfo, MaxStartups, AcceptEnv and the
    client-alive settings, one finding each (AcceptEnv: one per risky pattern)."""
    return [*_logins(config), *_environment(config), *_liveness(config)]


def _logins(config: SshdConfig) -> list[Finding]:
    out = []
    tunnel = config.first("PermitTunnel", "no")
    if tunnel == "no":
        out.append(error("sshd: PermitTunnel no: clients get no tunnel; set PermitTunnel yes"))
    else:
        serves = {"yes": "tun and tap", "point-to-point": "tun only", "ethernet": "tap only"}
        out.append(ok(f"sshd: PermitTunnel {tunnel} ({serves.get(tunnel, tunnel)})"))

    root = config.first("PermitRootLogin")
    if root == "forced-commands-only":
        out.append(ok("sshd: PermitRootLogin forced-commands-only"))
    elif root == "no":
        out.append(
            error(
                "sshd: PermitRootLogin no: tunhelper cannot run as root's forced command; "
                "set PermitRootLogin forced-commands-only"
            )
        )
    else:
        out.append(
            warning(
                f"sshd: PermitRootLogin {root}: root may log in without a forced command; "
                "set PermitRootLogin forced-commands-only"
            )
        )

    if config.first("ExposeAuthInfo", "no") == "yes":
        out.append(ok("sshd: ExposeAuthInfo yes: clients are told apart by their keys"))
    else:
        out.append(
            warning(
                "sshd: ExposeAuthInfo no: clients are identified by --client or, failing it, "
                "all share the login's identity (sticky addresses, --max-leases); "
                "set ExposeAuthInfo yes"
            )
        )
    return out


def _environment(config: SshdConfig) -> list[Finding]:
    risky = accept_env_risks(config.words("AcceptEnv"))
    out = [
        error(
            f"sshd: AcceptEnv {pattern} lets a client set {', '.join(names)} in a root "
            "session (code run as root before tunhelper starts, or a forged identity); "
            "narrow AcceptEnv to LANG LC_*"
        )
        for pattern, names in risky
    ]
    if not risky:
        accepted = " ".join(config.words("AcceptEnv")) or "nothing"
        out.append(ok(f"sshd: AcceptEnv {accepted}: no dangerous variable gets through"))
    return out


def _liveness(config: SshdConfig) -> list[Finding]:
    out = []
    startups = config.first("MaxStartups", "10:30:100")
    first = startups.split(":")[0]
    if first.isdigit() and int(first) < 10:
        out.append(
            warning(
                f"sshd: MaxStartups {startups}: more than {first} clients connecting at once "
                "(after a gateway restart) are dropped at random; raise it (e.g. 100:30:200)"
            )
        )
    else:
        out.append(
            ok(
                f"sshd: MaxStartups {startups}: beyond {first} clients authenticating at once, "
                "sshd refuses new connections at random"
            )
        )

    interval = config.first("ClientAliveInterval", "0")
    if interval in ("0", ""):
        out.append(
            warning(
                "sshd: ClientAliveInterval 0: a client whose network vanishes keeps its "
                "address until TCP gives up (hours); set ClientAliveInterval 15"
            )
        )
    else:
        count = config.first("ClientAliveCountMax", "3")
        out.append(
            ok(
                f"sshd: ClientAliveInterval {interval}, ClientAliveCountMax {count}: a vanished "
                "client's session ends on its own"
            )
        )
    return out


# -- what recent releases changed -------------------------------------------------------


def restrict_finding(where: str, version: Version | None) -> Finding:
    """``restrict`` on a tunhelper key: fatal from 10.5, a time bomb below."""
    instead = openssh.RESTRICTION_LIST
    if at_least(version, openssh.RESTRICT_BLOCKS_TUN):
        return error(
            f"{where}: 'restrict' blocks tunnel forwarding on {show(version)} (10.5 and "
            f"later; no option re-enables it): list {instead} instead"
        )
    return warning(
        f"{where}: 'restrict' still lets tunnels through on {show(version)}, but blocks "
        f"them from OpenSSH 10.5 on: list {instead} instead, which stays valid"
    )


def check_releases(
    config: SshdConfig, version: Version | None, said: str, unmatched: SshdConfig | None = None
) -> list[Finding]:
    """Findings for the settings recent OpenSSH releases made matter for tunnels.

    ``unmatched``: the global settings (``sshd -T`` without ``-C``), which hold the
    ChannelTimeout in force before 10.5, whatever root's Match block says.
    """
    out = [_version(version, said)]
    out += _disable_forwarding(config, version)
    out += _penalties(config)
    if unmatched is not None and not at_least(version, openssh.MATCH_CHANNEL_TIMEOUT):
        out += _channel_timeouts(unmatched, version, matched=config)
    else:
        out += _channel_timeouts(config, version)
    return out


def _version(version: Version | None, said: str) -> Finding:
    if version is None:
        return warning(
            f"sshd -V: cannot tell OpenSSH's version ({said}); judged as the newest release"
        )
    if version[:2] > openssh.KNOWN[:2]:
        return warning(
            f"sshd: {show(version)} ({said}) is newer than the releases doctor knows "
            f"({show(openssh.KNOWN)}): check its release notes for changes to tunnel "
            "forwarding, forced commands and authorized_keys options"
        )
    return ok(f"sshd: {show(version)} ({said})")


def _disable_forwarding(config: SshdConfig, version: Version | None) -> list[Finding]:
    if config.first("DisableForwarding") != "yes":
        return []
    instead = (
        "set DisableForwarding no and turn the others off one by one (AllowTcpForwarding "
        "no, AllowAgentForwarding no, AllowStreamLocalForwarding no, X11Forwarding no)"
    )
    if at_least(version, openssh.DISABLE_FORWARDING_TUN):
        return [
            error(
                f"sshd: DisableForwarding yes refuses every tunnel on {show(version)} "
                f"(10.4 and later), whatever PermitTunnel says; {instead}"
            )
        ]
    return [
        warning(
            f"sshd: DisableForwarding yes: {show(version)} still lets tunnels "
            f"through, but 10.4 and later refuse them; {instead}"
        )
    ]


def _seconds(text: str) -> str:
    """``600`` (before 10.3) or ``600.000000`` (10.3 and later) -> ``600s``."""
    try:
        return f"{float(text):g}s"
    except ValueError:
        return text


def _penalties(config: SshdConfig) -> list[Finding]:
    penalties = config.first("PerSourcePenalties")
    if penalties in ("", "no"):
        return []
    longest = re.search(r"\bmax:(\S+)", penalties)
    exempt = config.first("PerSourcePenaltyExemptList") or "none"
    return [
        ok(
            f"sshd: PerSourcePenalties {penalties}: a client that keeps failing to "
            "authenticate (a removed key, a reconnect loop) gets its source address "
            f"refused for up to {_seconds(longest.group(1)) if longest else 'the max penalty'}, "
            "and with it every client behind the same NAT; clients should back off "
            "between retries, and known client networks can be exempted with "
            f"PerSourcePenaltyExemptList (now {exempt})"
        )
    ]


# The names sshd gives a tunhelper session's channels, which ChannelTimeout's patterns
# are matched against (channels.c, lookup_timeout): the session is session:shell
# (``ssh -w any HOST``) or session:command (a client command, as ``tunhelper connect``
# sends), the tunnel is tun. sshd_config(5) names them ``session`` and
# ``tun-connection``, which sshd's own channels never carry once labelled (read in the
# source up to 10.5, run here on 9.2); sid's 10.6 did close a channel for them.
SESSION_CHANNELS = ("session:shell", "session:command")
TUNNEL_CHANNEL = "tun"
DOCUMENTED = ("session", "tun-connection")


def _channel_timeouts(
    config: SshdConfig, version: Version | None, matched: SshdConfig | None = None
) -> list[Finding]:
    """``matched``: root's Match result, when it is not what is in force (before 10.5)."""
    where = "in a Match block for root if other logins need it"
    if matched is not None:
        where = "globally: before OpenSSH 10.5 a Match block's ChannelTimeout is not in force"
        root = " ".join(matched.words("ChannelTimeout"))
        if matched.words("ChannelTimeout") != config.words("ChannelTimeout"):
            where += f"; {show(version)} ignores root's ChannelTimeout {root}"
    out = []
    for timeout in config.words("ChannelTimeout"):
        kind, _, interval = timeout.partition("=")
        if interval in ("", "0", "none"):
            continue
        if kind == "global" and at_least(version, openssh.GLOBAL_CHANNEL_TIMEOUT):
            closes = "every channel of the connection, the tunnel's too"
        elif fnmatch.fnmatchcase(TUNNEL_CHANNEL, kind):
            closes = "the tunnel's channel"
        elif any(fnmatch.fnmatchcase(name, kind) for name in SESSION_CHANNELS):
            closes = "the session's own channel (idle once the address is printed)"
        elif at_least(version, openssh.DOCUMENTED_CHANNEL_NAMES) and any(
            fnmatch.fnmatchcase(name, kind) for name in DOCUMENTED
        ):  # 10.6 closed a channel for these (seen on sid; which one was not looked at)
            closes = "the tunnel's or the session's channel"
        else:
            closes = ""
        if closes:
            ends = (
                "the tunnel stays, but the client hears nothing more from the helper (why "
                "its session ends)"
                if closes.startswith("the session")
                else "a tunnel that carries nothing that long ends"
            )
            out.append(
                warning(
                    f"sshd: ChannelTimeout {timeout}: after {interval} without traffic sshd "
                    f"closes {closes}: {ends}; remove it from ChannelTimeout ({where})"
                )
            )
        elif any(fnmatch.fnmatchcase(name, kind) for name in DOCUMENTED):
            out.append(
                ok(
                    f"sshd: ChannelTimeout {timeout}: sshd names a tunhelper session's "
                    f"channels {', '.join(SESSION_CHANNELS)} and {TUNNEL_CHANNEL}, not "
                    "as sshd_config(5) does, so this closes none of them"
                )
            )
    return out
