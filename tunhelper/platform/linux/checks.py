"""What ``tunhelper doctor`` asks of a Linux host: each answer is a verdict and one line.

The paths are module attributes so that the tests can point them at a fake tree.
"""

from __future__ import annotations

import os
import re
import stat

from tunhelper.platform.linux import proc

TUN_NODE = "/dev/net/tun"
ALL_RP_FILTER = "/proc/sys/net/ipv4/conf/all/rp_filter"
FORWARDING = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}
_SYSCTL_NAME = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
_SSHD_NAME = re.compile(r"(tun|tap)[0-9]+")  # what sshd names the devices it creates


def tun_node() -> tuple[bool, str]:
    """Can sshd create tun/tap devices here? ``(usable, what was found or what to do)``."""
    try:
        st = os.stat(TUN_NODE)
    except OSError as e:
        return False, f"{TUN_NODE}: {e.strerror}: load the tun module (modprobe tun)"
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != proc.TUN_RDEV:
        return False, f"{TUN_NODE} is not the tun device (character device 10:200)"
    return True, f"{TUN_NODE} is there"


def persistent_devices() -> list[tuple[str, str]]:
    """Persistent devices named as sshd names its own, each with the command that renames
    it: a client can make sshd attach to one with ``-w any:N``."""
    try:
        names = sorted(os.listdir(proc.SYSFS_NET))
    except OSError:
        return []
    out = []
    for name in names:
        if not _SSHD_NAME.fullmatch(name):
            continue
        flags = proc.tun_flags(name, proc.SYSFS_NET)
        if flags is not None and flags & proc.IFF_PERSIST:
            out.append((name, f"ip link set {name} name vpn0"))
    return out


def source_validation() -> tuple[bool, str]:
    """Does the per-device filtering hold? ``(holds, one line)``.

    Source validation needs nft (sessions are refused without it);

    for ``strict_rp_filter`` the kernel applies the larger of a device's ``rp_filter`` and
    ``all``'s, and loose (2) lets a client send as another over IPv4.
    """
    from tunhelper.platform.linux.sourcefilter import nft_missing

    missing = nft_missing()
    if missing:
        return False, missing
    try:
        with open(ALL_RP_FILTER, encoding="ascii") as f:
            value = f.read().strip()
    except OSError as e:
        return (
            False,
            f"{ALL_RP_FILTER}: {e.strerror}: cannot tell whether clients can send as others",
        )
    if value == "2":
        return False, (
            "net.ipv4.conf.all.rp_filter is 2 (loose): it overrides the strict filtering "
            "tunhelper sets on each session's tun, so a client can send packets in another "
            "client's name; set it to 1 (or 0)"
        )
    return True, f"net.ipv4.conf.all.rp_filter is {value}: session devices filter strictly"


def forwarding(version: int) -> tuple[bool, str]:
    """Does this host forward packets of IP ``version``? ``(on, one line)``."""
    path, name = FORWARDING[version], _SYSCTL_NAME[version]
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
    except OSError as e:
        return False, f"{path}: {e.strerror}: cannot tell whether IPv{version} is forwarded"
    if value == "1":
        return True, f"{name} = 1: IPv{version} packets are forwarded"
    return False, (
        f"{name} = {value}: IPv{version} packets are not forwarded, so routes beyond the "
        f"gateway reach nothing; set {name} = 1 in /etc/sysctl.d/ (contrib/ has a file)"
    )
