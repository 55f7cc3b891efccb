"""Linux, client side: full-tunnel policy routing, the nftables kill-switch, the
resolv.conf fallback, and the CPU's AES flag.

Everything a function here adds is described by a JSON-able *record* that
:func:`undo` takes off again, so ``tunhelper connect`` can write its records to a state
file and a later ``connect`` or ``disconnect`` can replay them after a SIGKILL.

Full tunnel is done as wg-quick does it, with policy routing rather than a host route:

    pref 7460  to PEER lookup main                  (the ssh connection stays outside)
    pref 7461  lookup main suppress_prefixlength 0  (the LAN and specific routes win)
    pref 7462  lookup 7468                          (default dev tunN, in table 7468)

The peer's rule looks up ``main`` at every packet, so when the underlying default route
changes (roaming, a new DHCP lease) the ssh connection follows it with nothing to redo:
a pinned host route (OpenVPN's def1) would keep pointing at the old gateway.
"""

from __future__ import annotations

import os
import socket

from tunhelper.platform.clientbase import Capabilities, Record
from tunhelper.platform.linux import dns, killswitch
from tunhelper.platform.linux.links import RTPROT_TUNHELPER, _rtnl

TABLE = 7468  # "th"
PREF_PEER, PREF_SUPPRESS, PREF_TUNNEL = 7460, 7461, 7462
MAIN = 254
RESOLV_CONF = "/etc/resolv.conf"

CAPABILITIES = Capabilities(firewall=True, full_tunnel=True, resolv_conf=True)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def full_tunnel_active() -> list[int]:
    """Priorities of tunhelper's full-tunnel rules present now (either family)."""
    IPRoute, _ = _rtnl()
    found = []
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for rule in ipr.get_rules(family=family):
                pref = rule.get_attr("FRA_PRIORITY")
                if pref in (PREF_PEER, PREF_SUPPRESS, PREF_TUNNEL):
                    found.append(pref)
    return found


def full_tunnel_plan(device_index: int, families: list[int], peer: str) -> list[Record]:
    """The routes and rules that send everything of ``families`` (4, 6) through the
    device, the peer excepted, in the order they are applied; nothing applied yet."""
    plan: list[Record] = []
    for version in families:
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        default = "::/0" if version == 6 else "0.0.0.0/0"
        plan.append(
            {"kind": "route", "dst": default, "oif": device_index, "table": TABLE, "family": family}
        )
        if _family(peer) == family:
            rule = {"kind": "rule", "family": family, "priority": PREF_PEER, "table": MAIN}
            plan.append({**rule, "dst": peer, "dst_len": 128 if version == 6 else 32})
        plan.append(
            {"kind": "rule", "family": family, "priority": PREF_SUPPRESS, "table": MAIN,
             "suppress_prefixlen": 0}
        )  # fmt: skip
        plan.append({"kind": "rule", "family": family, "priority": PREF_TUNNEL, "table": TABLE})
    return plan


def apply(record: Record) -> None:
    """Make the change ``record`` describes (recorded by the caller beforehand)."""
    fields = dict(record)
    kind = fields.pop("kind")
    if kind == "resolv":
        _write_in_place(record["path"], record["new"].encode())
        return
    if kind == "dns":
        dns.apply(record)
        return
    IPRoute, _ = _rtnl()
    with IPRoute() as ipr:
        if kind == "route":
            ipr.route("add", proto=RTPROT_TUNHELPER, **fields)
        elif kind == "rule":
            ipr.rule("add", **fields)
        else:
            raise ValueError(f"unknown change {kind!r}")


def undo(record: Record) -> None:
    """Take off what a record describes; what is already gone is not an error."""
    fields = dict(record)
    kind = fields.pop("kind")
    if kind == "nft":
        killswitch.firewall(fields["table"], None)
        return
    if kind == "resolv":
        restore_resolv_conf(record)
        return
    if kind == "dns":
        dns.revert(record)
        return
    IPRoute, NetlinkError = _rtnl()
    try:
        with IPRoute() as ipr:
            if kind == "route":
                ipr.route("del", **fields)
            elif kind == "rule":
                ipr.rule("del", **fields)
    except NetlinkError as e:
        if e.code not in (2, 3, 19):  # ENOENT, ESRCH, ENODEV: already gone
            raise


def cpu_has_aes() -> bool:
    """Whether the CPU advertises AES instructions (x86 ``aes``, arm64 ``aes``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features") and "aes" in value.split():
                    return True
    except OSError:
        pass
    return False


# -- DNS without a resolver manager ------------------------------------------------


def resolv_conf_plan(servers: list[str], path: str = RESOLV_CONF) -> Record:
    """Replacing resolv.conf with the link's servers, as a record holding the old text
    (read now, so the record is complete before anything is written).

    Written in place (the same inode) rather than by a rename: ``ip netns exec`` and
    containers bind-mount resolv.conf, and a rename onto a mount point fails. A symlink
    means some manager owns the file: refused (OSError) rather than written through.
    """
    if os.path.islink(path):
        raise OSError(f"{path} is a symlink to {os.readlink(path)}: a resolver manager owns it")
    with open(path, "rb") as f:
        old = f.read()
    new = "# written by tunhelper connect for the tunnel's life; restored after\n"
    new += "".join(f"nameserver {s}\n" for s in servers)
    return {"kind": "resolv", "path": path, "old": old.decode("utf-8", "replace"), "new": new}


def dns_plan(device: str, servers: list[str], full: bool) -> Record | None:
    """The resolver manager's record (systemd-resolved, resolvconf); without one, a full
    tunnel replaces resolv.conf (the old resolvers are outside the tunnel) and a split
    tunnel gets ``None`` (the caller says so)."""
    record = dns.plan(device, servers, full)
    if record is None and full:
        return resolv_conf_plan(servers)
    return record


def restore_resolv_conf(record: Record) -> None:
    """Put the old text back, unless someone rewrote the file since (then leave theirs)."""
    path = record["path"]
    try:
        with open(path, "rb") as f:
            current = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        current = None
    if current not in (record["new"], None):
        raise OSError(f"{path} changed since tunhelper wrote it: left as it is now")
    _write_in_place(path, record["old"].encode())


def _write_in_place(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- kill-switch: see killswitch.py ------------------------------------------------

firewall = killswitch.firewall


# -- ssh's life tied to its connect -------------------------------------------------

_PR_SET_PDEATHSIG = 1


def ssh_preexec():
    """A function for ``Popen(preexec_fn=)``: the child gets SIGTERM when its parent
    dies, so a SIGKILLed connect never leaves its ssh (and the server's lease) behind.
    libc is loaded here, before the fork; the child makes one system call."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def tie() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return tie


def netns(pid: int | None = None) -> int:
    """The inode of ``/proc/PID/ns/net`` (0 if it cannot be read)."""
    try:
        return os.stat(f"/proc/{'self' if pid is None else int(pid)}/ns/net").st_ino
    except (OSError, ValueError):
        return 0
