"""What ``tunhelper doctor`` asks of a FreeBSD host: each answer a verdict and one line."""

from __future__ import annotations

from tunhelper.platform.freebsd import command
from tunhelper.platform.freebsd.command import KLDSTAT, SYSCTL


def tun_node() -> tuple[bool, str]:
    """Is the tun/tap driver there (loaded, or built into the kernel)?"""
    if command.runner([KLDSTAT, "-q", "-m", "if_tuntap"]).returncode == 0:
        return True, "the tun/tap driver (if_tuntap) is there"
    return False, "the tun/tap driver is not loaded: kldload if_tuntap"


def persistent_devices() -> list[tuple[str, str]]:
    """Nothing to report: every tun/tap on FreeBSD persists once made, and no flag tells
    an admin's from one a session left (docs/platforms.md)."""
    return []


def source_validation() -> tuple[bool, str]:
    """Not enforced on FreeBSD yet (see :func:`.sysctl.strict_rp_filter`)."""
    return False, (
        "source filtering is not implemented on FreeBSD: a client can send packets in "
        "another client's name"
    )


def forwarding(version: int) -> tuple[bool, str]:
    """``net.inet.ip.forwarding`` / ``net.inet6.ip6.forwarding`` (unverified here)."""
    name = "net.inet.ip.forwarding" if version == 4 else "net.inet6.ip6.forwarding"
    result = command.runner([SYSCTL, "-n", name])
    value = result.stdout.strip() if result.returncode == 0 else b""
    if value == b"1":
        return True, f"{name} = 1: IPv{version} packets are forwarded"
    return False, (
        f"{name} is not 1: IPv{version} packets are not forwarded, so routes beyond the "
        f"gateway reach nothing; set {name}=1 in /etc/sysctl.conf"
    )
