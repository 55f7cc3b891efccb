"""A client link's DNS servers, handed to the system's resolver manager.

systemd-resolved: the servers are the link's (``resolvectl dns DEV ...``). A full
tunnel also makes the link the default DNS route (``resolvectl domain DEV ~.`` and
``default-route DEV yes``), so every query goes through it and none to the LAN's
resolver; a split tunnel sets ``default-route DEV no``: the servers answer only for the
link (the protocol announces no search domains). ``resolvectl revert DEV`` undoes
all of it, and resolved forgets a link that disappears anyway.

resolvconf: ``resolvconf -a DEV.tunhelper`` with ``nameserver`` lines; ``-d`` restores
the file resolvconf writes exactly as the other interfaces' records make it.
"""

from __future__ import annotations

import shutil

from tunhelper.platform.base import DeviceInfo, PlatformError

_TIMEOUT = 10


def plan(device: str, servers: list[str], full: bool) -> dict | None:
    """The record for this host's resolver manager, or ``None`` if it has none."""
    for tool in ("resolvectl", "resolvconf"):
        if shutil.which(tool):
            return {"kind": "dns", "tool": tool, "device": device, "servers": servers, "full": full}
    return None


def commands(record: dict) -> list[tuple[list[str], str | None]]:
    """The commands (argv, stdin) that apply ``record``: pure, for the tests."""
    device, servers = record["device"], list(record["servers"])
    if record["tool"] == "resolvectl":
        steps = [(["resolvectl", "dns", device, *servers], None)]
        if record["full"]:
            steps.append((["resolvectl", "domain", device, "~."], None))
        flag = "yes" if record["full"] else "no"
        return [*steps, (["resolvectl", "default-route", device, flag], None)]
    lines = "".join(f"nameserver {s}\n" for s in servers)
    return [(["resolvconf", "-a", f"{device}.tunhelper"], lines)]


def apply(record: dict) -> None:
    for argv, stdin in commands(record):
        _run(argv, stdin)


def revert(record: dict) -> None:
    device = record["device"]
    if record["tool"] == "resolvectl":
        _run(["resolvectl", "revert", device], None, check=False)  # a gone link: forgotten
    else:
        _run(["resolvconf", "-d", f"{device}.tunhelper"], None, check=False)


def _run(argv: list[str], stdin: str | None, check: bool = True) -> None:
    import subprocess  # here: the session and the keeper load this module, never run it

    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise PlatformError(None, f"{argv[0]} did not answer in {_TIMEOUT}s") from e
    if check and result.returncode != 0:
        raise PlatformError(None, f"{argv[0]} failed: {result.stderr.strip() or result.returncode}")


def apply_dns(device: DeviceInfo, servers: list[str]) -> str | None:
    """The platform contract's form (a split link's servers): the tool used, or ``None``."""
    record = plan(device.name, servers, full=False)
    if record is not None:
        apply(record)
    return None if record is None else record["tool"]


def revert_dns(device: DeviceInfo, tool: str) -> None:
    revert({"tool": tool, "device": device.name})
