"""A client link's DNS servers, handed to the system's resolver manager."""

from __future__ import annotations

from tunhelper.platform.base import DeviceInfo, PlatformError

_TIMEOUT = 10


def apply_dns(device: DeviceInfo, servers: list[str]) -> str | None:
    """Give the link's DNS servers to the system's resolver manager, if it has one.

    systemd-resolved (``resolvectl dns DEV ...``) or resolvconf (``resolvconf -a DEV``
    with ``nameserver`` lines on stdin). Returns what was done, or ``None`` if the
    system offers neither; a failure is an error.
    """
    import shutil
    import subprocess

    if shutil.which("resolvectl"):
        argv = ["resolvectl", "dns", device.name, *servers]
        stdin = None
    elif shutil.which("resolvconf"):
        argv = ["resolvconf", "-a", f"{device.name}.tunhelper"]
        stdin = "".join(f"nameserver {s}\n" for s in servers)
    else:
        return None
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise PlatformError(None, f"{argv[0]} did not answer in {_TIMEOUT}s") from e
    if result.returncode != 0:
        raise PlatformError(None, f"{argv[0]} failed: {result.stderr.strip() or result.returncode}")
    return argv[0]


def revert_dns(device: DeviceInfo, tool: str) -> None:
    """Undo :func:`apply_dns` with the tool that applied it."""
    import subprocess

    argv = (
        ["resolvectl", "revert", device.name]
        if tool == "resolvectl"
        else ["resolvconf", "-d", f"{device.name}.tunhelper"]
    )
    try:
        subprocess.run(argv, capture_output=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise PlatformError(None, f"{argv[0]} did not answer in {_TIMEOUT}s") from e
