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
import shutil
import socket
import subprocess
from typing import Any

from tunhelper.platform.linux.links import RTPROT_TUNHELPER, _rtnl

TABLE = 7468  # "th"
PREF_PEER, PREF_SUPPRESS, PREF_TUNNEL = 7460, 7461, 7462
MAIN = 254
NFT_TABLE_PREFIX = "tunhelper_ks_"
RESOLV_CONF = "/etc/resolv.conf"

Record = dict[str, Any]


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


def full_tunnel(device_index: int, families: list[int], peer: str | None) -> list[Record]:
    """Send everything of ``families`` (4, 6) through the device, the peer excepted.

    Returns the records in the order they were applied; on failure, what was applied
    is taken off again before the error propagates.
    """
    IPRoute, _ = _rtnl()
    done: list[Record] = []
    try:
        with IPRoute() as ipr:
            for version in families:
                family = socket.AF_INET6 if version == 6 else socket.AF_INET
                default = "::/0" if version == 6 else "0.0.0.0/0"
                route = {"dst": default, "oif": device_index, "table": TABLE, "family": family}
                ipr.route("add", proto=RTPROT_TUNHELPER, **route)
                done.append({"kind": "route", **route})
                if peer is not None and _family(peer) == family:
                    rule = {"family": family, "priority": PREF_PEER, "table": MAIN}
                    rule.update(dst=peer, dst_len=128 if version == 6 else 32)
                    ipr.rule("add", **rule)
                    done.append({"kind": "rule", **rule})
                rule = {"family": family, "priority": PREF_SUPPRESS, "table": MAIN}
                ipr.rule("add", suppress_prefixlen=0, **rule)
                done.append({"kind": "rule", "suppress_prefixlen": 0, **rule})
                rule = {"family": family, "priority": PREF_TUNNEL, "table": TABLE}
                ipr.rule("add", **rule)
                done.append({"kind": "rule", **rule})
    except BaseException:
        for record in reversed(done):
            undo(record)
        raise
    return done


def undo(record: Record) -> None:
    """Take off what a record describes; what is already gone is not an error."""
    fields = dict(record)
    kind = fields.pop("kind")
    if kind == "nft":
        _nft(["delete", "table", "inet", fields["table"]], check=False)
        return
    if kind == "resolv":
        restore_resolv_conf(record)
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


def swap_resolv_conf(servers: list[str], path: str = RESOLV_CONF) -> Record:
    """Write the link's servers into resolv.conf in place; the record holds the old text.

    In place (the same inode) rather than a rename: ``ip netns exec`` and containers
    bind-mount resolv.conf, and a rename onto a mount point fails. A symlink means some
    manager owns the file: refused (OSError) rather than written through.
    """
    if os.path.islink(path):
        raise OSError(f"{path} is a symlink to {os.readlink(path)}: a resolver manager owns it")
    with open(path, "rb") as f:
        old = f.read()
    new = "# written by tunhelper connect for the tunnel's life; restored after\n"
    new += "".join(f"nameserver {s}\n" for s in servers)
    _write_in_place(path, new.encode())
    return {"kind": "resolv", "path": path, "old": old.decode("utf-8", "replace"), "new": new}


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


# -- kill-switch -------------------------------------------------------------------


def kill_switch(name: str, device: str | None, peers: list[tuple[str, int]]) -> Record:
    """An nftables table that drops all output but loopback, the tunnel and the peers.

    Re-applied as a whole (delete + add in one ``nft -f`` transaction) whenever the
    device or the peers change, so there is never a moment without it.
    """
    if shutil.which("nft") is None:
        raise OSError("--kill-switch needs nftables (the nft command): apt install nftables")
    table = f"{NFT_TABLE_PREFIX}{name}"
    lines = [
        f"table inet {table} {{}}",  # so that the delete below never fails
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain output {",
        "    type filter hook output priority 0; policy drop;",
        '    oifname "lo" accept',
    ]
    if device is not None:
        lines.append(f'    oifname "{device}" accept')
    for address, port in peers:
        family = "ip6" if ":" in address else "ip"
        lines.append(f"    {family} daddr {address} tcp dport {port} accept")
    lines += ["    counter drop", "  }", "}"]
    _nft(["-f", "-"], stdin="\n".join(lines) + "\n")
    return {"kind": "nft", "table": table}


def _nft(args: list[str], stdin: str | None = None, check: bool = True) -> None:
    argv = ["nft", *args]
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise OSError(f"nft failed: {result.stderr.strip() or result.returncode}")
