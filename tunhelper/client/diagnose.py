"""Why a tunnel never came up, in one line, from what ssh said and how it ended.

When the server's tunhelper cannot speak (the key's ``command=`` names a program that
is not there) or sshd refuses the tunnel before tunhelper runs, the only evidence is
ssh's stderr ("No such file or directory" from the server's shell, OpenSSH's "Tunnel
forwarding failed") and its exit status: connect keeps what ssh wrote, and
:func:`explain` turns it into the likely cause and what to do. Pure text in, text
out, so it is tested without a network.
"""

from __future__ import annotations

import re

END_WAIT = 1.0  # for ssh's exit status once the session's stdout closed

# The server's shell could not run the forced command (sh, bash and dash wordings).
_NO_PROGRAM = re.compile(
    r"(No such file or directory|command not found|not found|Permission denied"
    r"|cannot execute|Exec format error)",
)
_TUNNEL_FAILED = re.compile(r"Tunnel forwarding failed|tunnel forward(ing)? setup failed", re.I)
_KEY_REFUSED = re.compile(r"Permission denied \((publickey|[a-z,-]+)\)")


def explain(stderr: str, status: int | None, tap: bool = False) -> str | None:
    """The likely cause of a session that ended without an announcement, or ``None``.

    ``status`` is ssh's exit status, ``None`` while it still runs (ssh stays on an open
    tunnel after the server's command ended).
    """
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    if any(x.startswith("tunhelper:") for x in lines):
        return None  # the server said why itself, in its own line above
    if _TUNNEL_FAILED.search(stderr):
        mode = "ethernet (tap)" if tap else "point-to-point (tun)"
        return (
            f"the server refused the {mode} tunnel: PermitTunnel is no there, or allows "
            f"only the other kind ({'drop --tap, or ' if tap else ''}set PermitTunnel yes), "
            "or DisableForwarding yes, or the key's line has 'restrict' (OpenSSH >= 10.5 "
            "then refuses tunnels) or no-port-forwarding where that blocks tunnels; "
            "'tunhelper doctor' on the server says which"
        )
    if _KEY_REFUSED.search(stderr):
        return "the server refused the login: is this key in the server's authorized_keys?"
    if status in (126, 127) or any(_NO_PROGRAM.search(x) for x in lines if "tunhelper" in x):
        return (
            "the server could not run the key's forced command: its command= names a "
            "program that is not there or not executable (the package installs "
            "/usr/bin/tunhelper; for pip, 'command -v tunhelper' on the server)"
        )
    return None


_FINGERPRINT = re.compile(
    r"The fingerprint for the (\S+) key sent by the remote host is\s+"
    r"(SHA256:[A-Za-z0-9+/=]+|MD5:[0-9a-f:]+)"
)
_OFFENDING = re.compile(r"Offending (\S+) key in (\S+)")
_UNKNOWN = re.compile(r"No (\S+) host key is known for (\S+)")


def host_key(stderr: str, destination: str) -> tuple[str, str] | None:
    """``(what is wrong, what to do)`` when ssh refused the gateway's host key, else
    ``None``. A changed key is a possible attack, never a wrong password: the
    sentence says which key and that the network may be hostile."""
    if "Host key verification failed" not in stderr and "IDENTIFICATION HAS CHANGED" not in stderr:
        return None
    if "IDENTIFICATION HAS CHANGED" in stderr:
        seen = _FINGERPRINT.search(stderr)
        key = f"{seen.group(1)} key {seen.group(2)}" if seen else "key"
        where = _OFFENDING.search(stderr)
        known = f" (known_hosts has another: {where.group(2)})" if where else ""
        return (
            f"the host key of {destination} has CHANGED: it sent the {key}{known}; "
            "the network may be hostile (someone may be posing as the gateway)",
            "traffic stays blocked; check the key with the gateway's admin before "
            "replacing it (ssh-keygen -R), then 'tunhelper disconnect' and connect again",
        )
    unknown = _UNKNOWN.search(stderr)
    key = f"no {unknown.group(1)} key is known for {unknown.group(2)}" if unknown else "unknown key"
    return (
        f"the host key of {destination} could not be verified ({key})",
        "traffic stays blocked; add the gateway's key to known_hosts (checked with its "
        "admin), then 'tunhelper disconnect' and connect again",
    )
