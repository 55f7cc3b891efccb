"""FreeBSD: procstat for discovery, ifconfig for configuration, kqueue for hold.

sshd opens ``/dev/tunN`` or ``/dev/tapN`` itself, so the session's device is named by
the path of an fd its process holds. psutil's FreeBSD ``open_files()`` lists regular
files only, never a character device, so the fds come from ``procstat -f``. Every
command goes through :data:`runner` as an argv list (no shell), so the tests can pin
the exact commands against sample outputs.

What FreeBSD does when sshd closes the device (``tundtor`` in if_tuntap.c): the
interface is brought down and its addresses purged, but it is *not* destroyed. It
persists (tun(4)), and the next ``open("/dev/tunN")``, possibly another session's at
once, reuses it. So teardown touches a device only while this helper's own session
still holds it, and never destroys it; docs/platforms.md says why. Which process that
is, the module learns from :func:`held_devices`: discovery finds the session's device
through it, and the watch asks it about the session process it is given.

Importable anywhere (the tests run it on Linux): kqueue is looked up when used, and
psutil is imported only inside the functions that need it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import socket
import subprocess
import time
from collections import namedtuple
from collections.abc import Callable, Sequence

from tunhelper.platform.base import (
    DEVICE_GONE,
    PROCESS_ENDED,
    START_TOLERANCE,
    DeviceInfo,
    PlatformError,
)

IFCONFIG = "/sbin/ifconfig"
PROCSTAT = "/usr/bin/procstat"
SYSCTL = "/sbin/sysctl"
ROUTE = "/sbin/route"
NETSTAT = "/usr/bin/netstat"
KLDSTAT = "/sbin/kldstat"

# The commands get this environment and no other: nothing a client may have put into
# ours (sshd's AcceptEnv) reaches them. LIBXO_OPTIONS, for one, would turn procstat's
# table into JSON.
COMMAND_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "LC_ALL": "C"}
COMMAND_TIMEOUT = 10.0

# hold: the exit of the session process wakes kqueue at once; whether the device is
# still there and still held costs a procstat run, so that is looked at only this often.
DEVICE_CHECK_INTERVAL = 5.0
PROCESS_POLL_INTERVAL = 0.5  # only where there is no kqueue (Linux, in the tests)
PIPE_CHECK_INTERVAL = 0.1  # holds_pipe's caller polls every 10 ms; procstat need not

_DEVICE_NAME = re.compile(r"(?:tun|tap)\d{1,5}")
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,14}")
_NO_BOOT_ID = "freebsd-without-kern.boot_id"


# Named tuples, not dataclasses: the keeper imports this module on FreeBSD.
class Completed(namedtuple("Completed", ["returncode", "stdout", "stderr"])):
    """What a command did: exit status, raw stdout (bytes), stderr as text."""

    __slots__ = ()

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


Runner = Callable[[Sequence[str]], Completed]


def run_command(argv: Sequence[str]) -> Completed:
    """Run one command: argv list, no shell, clean environment, stdin from /dev/null."""
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=COMMAND_ENV,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Completed(127, b"", str(e))
    return Completed(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


runner: Runner = run_command
"""Every command goes through this; the tests put a fake in its place."""


class CommandFailed(PlatformError):
    """A command exited non-zero; the message is one line: the command and its error."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


# This backend's own errors are PlatformErrors already: the boundary has none to translate.
NATIVE_ERRORS: tuple[type[Exception], ...] = ()


def _failure(argv: Sequence[str], result: Completed) -> CommandFailed:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit status {result.returncode}"
    return CommandFailed(f"{' '.join(argv)}: {why}")


def _check(argv: Sequence[str]) -> Completed:
    result = runner(argv)
    if result.returncode != 0:
        raise _failure(argv, result)
    return result


def _device_name(device: DeviceInfo) -> str:
    if not _DEVICE_NAME.fullmatch(device.name):
        raise ValueError(f"not a tun/tap device name: {device.name!r}")
    return device.name


def _ifname(name: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise ValueError(f"not an interface name: {name!r}")
    return name


def _refuse_ipv6(*addresses: str | None) -> None:
    """IPv6 is not verified on FreeBSD yet (docs/platforms.md): one line, before any command."""
    if any(a is not None and ":" in a for a in addresses):
        raise PlatformError(
            errno.EAFNOSUPPORT,
            "IPv6 pools are not supported on FreeBSD yet: give this key an IPv4 --pool only",
        )


def _ipv4(text: str) -> str:
    """The address in canonical form, so nothing but an address reaches ifconfig."""
    return str(ipaddress.IPv4Address(text))


def _ip(text: str) -> str:
    """As :func:`_ipv4`, of either family (a route's gateway)."""
    return str(ipaddress.ip_address(text))


# ---------------------------------------------------------------- procstat -f


OpenFile = namedtuple("OpenFile", ["pid", "fd", "type", "vtype", "name"])
OpenFile.__doc__ = """The fields of one ``procstat -f`` row that tunhelper looks at.

``fd`` is a number or text/cwd/root/jail/trace/ctty; ``type`` v vnode, p pipe, s socket...;
``vtype`` for a vnode: c character device, r regular file, x revoked...; ``name`` the
path, socket addresses, or "-".
"""


# procstat_files.c: PID, COMM (may hold spaces), FD, T, V, FLAGS, REF, OFFSET, PRO, NAME.
_PROCSTAT_ROW = re.compile(
    r"\s*(?P<pid>\d+)\s+(?P<comm>.*?)\s+(?P<fd>\d+|text|cwd|root|jail|trace|ctty)\s+"
    r"(?P<type>\S)\s+(?P<vtype>\S)\s+\S+\s+\S+\s+\S+\s+\S+\s+(?P<name>.*?)\s*"
)
_TUNTAP_PATH = re.compile(r"/dev/((?:tun|tap)\d{1,5})")


def parse_procstat_files(text: str) -> list[OpenFile]:
    """Rows of ``procstat -h -f`` output; lines that are not rows are skipped."""
    rows = []
    for line in text.splitlines():
        m = _PROCSTAT_ROW.fullmatch(line)
        if m:
            rows.append(OpenFile(int(m["pid"]), m["fd"], m["type"], m["vtype"], m["name"]))
    return rows


def _open_files(pid: int) -> list[OpenFile]:
    """``pid``'s open files; empty if it is gone or cannot be read."""
    if pid <= 0:
        return []
    result = runner([PROCSTAT, "-h", "-f", str(pid)])
    return [f for f in parse_procstat_files(result.text) if f.pid == pid]


# Each device's session process: the last one seen holding it (see _held_by_session).
_holders: dict[str, int] = {}


def held_devices(pid: int) -> list[str]:
    """Names of the tun/tap devices ``pid`` holds open (character devices), sorted."""
    names = set()
    for f in _open_files(pid):
        m = _TUNTAP_PATH.fullmatch(f.name)
        if m and f.type == "v" and f.vtype == "c":
            names.add(m[1])
    for name in names:
        _holders[name] = pid
    return sorted(names)


def _held_by_session(name: str) -> bool:
    """Does the session process that held ``name`` hold it still?

    Only then is the device this session's: once sshd closed it, the persisting
    interface may be reopened by another session at any moment. The process is the one
    :func:`held_devices` last saw holding it: discovery (the server's sshd, the client's
    ssh child) and the watch (``wait_for_end``, given the session's pid) both ask it,
    so no rule of who the session is lives here. A device never seen held is not ours.
    """
    pid = _holders.get(name)
    return pid is not None and name in held_devices(pid)


_pipe_answers: dict[int, tuple[float, bool]] = {}


def holds_pipe(pid: int, inode: int) -> bool:
    """Does ``pid`` still hold a pipe? Any pipe: ``inode`` cannot be matched here.

    procstat names no pipe (its NAME is "-"), so another process's pipes cannot be
    told apart by inode on FreeBSD. Counting any pipe errs towards waiting longer,
    never shorter, and the caller bounds the wait. procstat runs at most every
    PIPE_CHECK_INTERVAL seconds per process, however fast the caller asks.
    """
    now = time.monotonic()
    last = _pipe_answers.get(pid)
    if last is not None and now - last[0] < PIPE_CHECK_INTERVAL:
        return last[1]
    held = any(f.type == "p" for f in _open_files(pid))
    _pipe_answers[pid] = (now, held)
    return held


# ---------------------------------------------------------------- ifconfig


InterfaceStatus = namedtuple("InterfaceStatus", ["name", "groups", "inet", "members"])
InterfaceStatus.__doc__ = """What tunhelper reads from ``ifconfig NAME``: its groups, local
IPv4 addresses (``inet``) and a bridge's member interfaces, each a tuple of strings."""


_STATUS_HEAD = re.compile(r"(?P<name>[^\s:]+): flags=[0-9a-f]+<[^>]*>.*")


def parse_ifconfig(text: str) -> InterfaceStatus | None:
    """The first interface in ``ifconfig`` output, or ``None`` if there is none."""
    lines = text.splitlines()
    head = _STATUS_HEAD.fullmatch(lines[0]) if lines else None
    if head is None:
        return None
    groups: list[str] = []
    inet: list[str] = []
    members: list[str] = []
    for line in lines[1:]:
        if not line.startswith("\t"):
            break  # the next interface
        words = line.split()
        if words[:1] == ["groups:"]:
            groups.extend(words[1:])
        elif words[:1] == ["inet"] and len(words) > 1:
            inet.append(words[1])
        elif words[:1] == ["member:"] and len(words) > 1:
            members.append(words[1])
    return InterfaceStatus(head["name"], tuple(groups), tuple(inet), tuple(members))


def interface_status(name: str) -> InterfaceStatus | None:
    """``ifconfig NAME``, parsed; ``None`` if there is no such interface."""
    result = runner([IFCONFIG, _ifname(name)])
    if result.returncode != 0:
        return None
    status = parse_ifconfig(result.text)
    return status if status is not None and status.name == name else None


def _if_index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def device_info(name: str) -> DeviceInfo | None:
    """Index and mode of a tun/tap interface; ``None`` if it is gone or not tun/tap.

    The mode comes from the interface group the cloner gave it ("tun" or "tap"), not
    from the name alone: an interface can be renamed to anything.
    """
    if not _DEVICE_NAME.fullmatch(name):
        return None
    status = interface_status(name)
    if status is None:
        return None
    if "tap" in status.groups:
        mode = "tap"
    elif "tun" in status.groups:
        mode = "tun"
    else:
        return None
    index = _if_index(name)
    if index is None:
        return None
    return DeviceInfo(name, index, mode)


def configure_p2p(device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
    """``ifconfig tunN inet LOCAL PEER netmask 255.255.255.255 mtu N up``.

    One command, as in the guide: ifconfig applies mtu and up while it parses and adds
    the address last, which also marks a tun running.
    """
    _refuse_ipv6(local, peer)
    argv = [IFCONFIG, _device_name(device), "inet", _ipv4(local), _ipv4(peer)]
    _check([*argv, "netmask", "255.255.255.255", "mtu", str(int(mtu)), "up"])


def deconfigure_p2p(device: DeviceInfo, local: str, peer: str) -> None:
    """Undo :func:`configure_p2p` while the session still holds the device; else nothing.

    ``ifconfig tunN inet LOCAL -alias`` then ``ifconfig tunN down``: what the kernel
    itself does when sshd closes the device. Once sshd closed it, the kernel has done
    exactly that already, and the interface, which persists, may be another session's.
    ``peer`` is not needed: a point-to-point address is removed by its local address.
    An address that is not there (configure failed half-way) is not an error.
    """
    _remove_inet(device, _ipv4(local))


def configure_address(device: DeviceInfo, address: str, prefixlen: int, mtu: int) -> None:
    """``ifconfig tapN inet ADDRESS/PREFIX mtu N up`` (the client end of a tap link)."""
    _refuse_ipv6(address)
    cidr = f"{_ipv4(address)}/{int(prefixlen)}"
    _check([IFCONFIG, _device_name(device), "inet", cidr, "mtu", str(int(mtu)), "up"])


def deconfigure_address(device: DeviceInfo, address: str, prefixlen: int) -> None:
    """Undo :func:`configure_address` while the session holds the device (see above)."""
    _remove_inet(device, _ipv4(address))


def _remove_inet(device: DeviceInfo, local: str) -> None:
    """``ifconfig DEV inet LOCAL -alias; ifconfig DEV down`` while this session holds DEV."""
    name = _device_name(device)
    if not _held_by_session(name):
        return
    alias = [IFCONFIG, name, "inet", local, "-alias"]
    result = runner(alias)
    if result.returncode != 0:
        if not _held_by_session(name):
            return  # sshd closed it meanwhile: the kernel did the rest
        status = interface_status(name)
        if status is None:
            return
        if local in status.inet:
            raise _failure(alias, result)
    down = [IFCONFIG, name, "down"]
    result = runner(down)
    if result.returncode != 0 and _held_by_session(name):
        raise _failure(down, result)


# ---------------------------------------------------------------- tap on a bridge


def create_bridge(name: str, address: str | None, prefixlen: int, mtu: int) -> None:
    """``ifconfig bridge create``, renamed to NAME, with the gateway, the MTU and up."""
    _refuse_ipv6(address)
    created = _check([IFCONFIG, "bridge", "create"]).text.strip()
    if not _IFNAME.fullmatch(created):
        raise CommandFailed(f"ifconfig bridge create printed {created!r}, not an interface name")
    _check([IFCONFIG, created, "name", _ifname(name)])
    argv = [IFCONFIG, name]
    if address is not None:
        argv += ["inet", f"{_ipv4(address)}/{int(prefixlen)}"]
    _check([*argv, "mtu", str(int(mtu)), "up"])


def add_address(name: str, address: str, prefixlen: int) -> None:
    """``ifconfig NAME inet ADDRESS/PREFIX alias``: a further gateway on a pool's bridge."""
    _refuse_ipv6(address)
    _check([IFCONFIG, _ifname(name), "inet", f"{_ipv4(address)}/{int(prefixlen)}", "alias"])


def bridge_ports(name: str) -> list[str] | None:
    """The bridge's member interfaces (``member:`` lines); ``None`` if there is no bridge."""
    status = interface_status(_ifname(name))
    return None if status is None else list(status.members)


def add_port(device: DeviceInfo, bridge: str, mtu: int) -> None:
    """``ifconfig tapN mtu N``, ``ifconfig BRIDGE addm tapN up``, unless already a member.

    if_bridge(4): every member must have the bridge's MTU, so a pool's bridge and its
    taps share one, set on the tap before it joins.
    """
    if device.mode != "tap":
        raise ValueError(f"{device.name} is not a tap device")
    tap, bridge = _device_name(device), _ifname(bridge)
    if tap in (bridge_ports(bridge) or []):
        return
    _check([IFCONFIG, tap, "mtu", str(int(mtu))])
    _check([IFCONFIG, bridge, "addm", tap, "up"])


def remove_port(device: DeviceInfo, bridge: str) -> None:
    """``ifconfig BRIDGE deletem tapN`` while this session holds the tap; else nothing.

    After sshd closed the tap the kernel has brought it down and cleared RUNNING, and
    a bridge does not send to a member that is not running: the membership is inert
    until the next session that opens the tap, which owns it then.
    """
    tap, bridge = _device_name(device), _ifname(bridge)
    if not _held_by_session(tap):
        return
    argv = [IFCONFIG, bridge, "deletem", tap]
    result = runner(argv)
    if result.returncode != 0 and _held_by_session(tap):
        raise _failure(argv, result)


def delete_bridge(name: str) -> None:
    """``ifconfig BRIDGE destroy``."""
    _check([IFCONFIG, _ifname(name), "destroy"])


# ---------------------------------------------------------------- routes, DNS
# Routes tunhelper installs carry RTF_PROTO1 (route(8) -proto1, flag "1" in netstat),
# so that its routes can be told from anyone else's.


def filter_sources(device: DeviceInfo) -> None:
    """Not done on FreeBSD yet (it would be a pf/ipfw rule, not a per-device switch):
    the session goes on and the admin is warned, as where /proc/sys is read-only."""
    raise PlatformError(errno.EOPNOTSUPP, "source filtering is not implemented on FreeBSD")


def guard_link(device: DeviceInfo, sources: list[str], gateway_link: str | None) -> None:
    """Not done on FreeBSD (it would be pf/ipfw rules per interface): refused with
    EOPNOTSUPP, so the session goes on with a warning, as with :func:`filter_sources`."""
    raise PlatformError(errno.EOPNOTSUPP, "source validation is not implemented on FreeBSD")


def unguard_link(device: DeviceInfo) -> None:
    """Nothing to remove: :func:`guard_link` never installs anything here."""


def stale_guards() -> list[str]:
    """None can exist (see :func:`guard_link`)."""
    return []


def remove_stale_guards() -> list[str]:
    """None can exist (see :func:`guard_link`)."""
    return []


def _route_family(network: str) -> tuple[str, list[str]]:
    """The network in canonical form and route(8)'s family flag (``-inet6`` for IPv6)."""
    net = ipaddress.ip_network(network)
    return str(net), (["-inet6"] if net.version == 6 else [])


def add_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """``route -n add [-inet6] -net NETWORK (VIA | -interface DEV) -proto1``."""
    net, family = _route_family(network)
    target = [_ip(via)] if via is not None else ["-interface", _device_name(device)]
    _check([ROUTE, "-n", "add", *family, "-net", net, *target, "-proto1"])


def delete_route(device: DeviceInfo, network: str, via: str | None) -> None:
    """Undo :func:`add_route`: ``route -n delete [-inet6] -net NETWORK (VIA | -interface
    DEV)``, only if our route (flag 1) to NETWORK through DEV (and VIA) is there.

    Never by the network alone: an admin's route to the same network is not ours. A
    route gone with its device is not an error.
    """
    net, family = _route_family(network)
    name = _device_name(device)
    gateway = _ip(via) if via is not None else None

    def present() -> bool:
        return any(
            (dst, netif) == (net, name) and (gateway is None or gw == gateway)
            for dst, gw, netif in _flagged_routes("inet6" if family else "inet")
        )

    if not present():
        return
    target = [gateway] if gateway is not None else ["-interface", name]
    argv = [ROUTE, "-n", "delete", *family, "-net", net, *target]
    result = runner(argv)
    if result.returncode != 0 and present():
        raise _failure(argv, result)


def _flagged_routes(family: str) -> list[tuple[str, str, str]]:
    """``(network, gateway, device)`` of the routes flagged 1 (RTF_PROTO1) in
    ``netstat -rn -f FAMILY``."""
    host = 128 if family == "inet6" else 32
    out = []
    for line in _check([NETSTAT, "-rn", "-f", family]).text.splitlines():
        fields = line.split()
        if len(fields) < 4 or "1" not in fields[2]:
            continue
        dst = re.sub(r"%[^/]*", "", fields[0])  # fe80::%lo0/64: the zone is no address
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/{host}", strict=False)
        except ValueError:
            continue  # a header, or "default": tunhelper never installs one
        out.append((str(net), re.sub(r"%.*", "", fields[1]), fields[3]))
    return out


def our_routes() -> list[tuple[str, str]]:
    """``(network, device)`` of the routes flagged 1 (RTF_PROTO1) in ``netstat -rn``, of
    both families (``-f inet``, ``-f inet6``)."""
    return [(net, dev) for family in ("inet", "inet6") for net, _, dev in _flagged_routes(family)]


def link_counters(device: DeviceInfo) -> tuple[int, int] | None:
    """Bytes ``(received, sent)`` now: a FreeBSD tun/tap persists, so its counters stay."""
    import psutil

    counters = psutil.net_io_counters(pernic=True).get(device.name)
    return None if counters is None else (counters.bytes_recv, counters.bytes_sent)


def apply_dns(device: DeviceInfo, servers: list[str]) -> str | None:
    """Not done on FreeBSD yet: ``None`` makes connect say so."""
    return None


def revert_dns(device: DeviceInfo, tool: str) -> None:
    """Nothing to revert (see :func:`apply_dns`)."""


# ---------------------------------------------------------------- doctor's checks


def tun_node() -> tuple[bool, str]:
    """Is the tun/tap driver there (loaded, or built into the kernel)?"""
    if runner([KLDSTAT, "-q", "-m", "if_tuntap"]).returncode == 0:
        return True, "the tun/tap driver (if_tuntap) is there"
    return False, "the tun/tap driver is not loaded: kldload if_tuntap"


def persistent_devices() -> list[tuple[str, str]]:
    """Nothing to report: every tun/tap on FreeBSD persists once made, and no flag tells
    an admin's from one a session left (docs/platforms.md)."""
    return []


def source_filter() -> tuple[bool, str]:
    """Not enforced on FreeBSD yet (see :func:`filter_sources`)."""
    return False, (
        "source filtering is not implemented on FreeBSD: a client can send packets in "
        "another client's name"
    )


def forwarding(version: int) -> tuple[bool, str]:
    """``net.inet.ip.forwarding`` / ``net.inet6.ip6.forwarding`` (unverified here)."""
    name = "net.inet.ip.forwarding" if version == 4 else "net.inet6.ip6.forwarding"
    result = runner([SYSCTL, "-n", name])
    value = result.stdout.strip() if result.returncode == 0 else b""
    if value == b"1":
        return True, f"{name} = 1: IPv{version} packets are forwarded"
    return False, (
        f"{name} is not 1: IPv{version} packets are not forwarded, so routes beyond the "
        f"gateway reach nothing; set {name}=1 in /etc/sysctl.conf"
    )


# ---------------------------------------------------------------- boot id


def open_regular(path: str, sound: Callable[[os.stat_result], bool]) -> int | None:
    """A read-only fd on ``path`` if ``sound`` accepts what it is, else ``None``.

    Without Linux's reopening through an ``O_PATH`` handle, the path is judged with
    ``lstat`` first (a device node or FIFO is never opened) and the opened file is
    checked to be the one judged. Unverified on a FreeBSD host (docs/platforms.md).
    """
    try:
        st = os.lstat(path)
        if not sound(st):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        return None
    again = os.fstat(fd)
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) or not sound(again):
        os.close(fd)
        return None
    return fd


def boot_id() -> str:
    """``kern.boot_id``: 16 random bytes the kernel draws once per boot, as hex.

    Where the kernel has no kern.boot_id, a constant: never wrongly "another boot"
    (which would mark a live lease stale), only never "another boot" at all, and leases
    from before a reboot are still judged dead by pid and start time. kern.boottime is
    no substitute: it moves when the clock is stepped.
    """
    result = runner([SYSCTL, "-b", "kern.boot_id"])
    if result.returncode == 0 and len(result.stdout) == 16:
        return result.stdout.hex()
    if "unknown oid" in result.stderr:
        return _NO_BOOT_ID
    why = _failure([SYSCTL, "-b", "kern.boot_id"], result)
    raise PlatformError(None, f"could not read the boot id ({why}); check that sysctl(8) works")


# ---------------------------------------------------------------- hold


def process_start(pid: int) -> float | None:
    """A process's start time (psutil's ``create_time()``), or ``None`` if it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, start: float) -> bool:
    """Is the process that had ``pid`` at ``start`` still running (alive, not a zombie,
    not a reused pid)?"""
    import psutil

    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - start) <= START_TOLERANCE and p.status() not in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        return False


class _ProcessExit:
    """The end of one process: kqueue ``EVFILT_PROC``/``NOTE_EXIT``, else a modest poll."""

    def __init__(self, pid: int, start_time: float) -> None:
        self.pid, self.start_time = pid, start_time
        self.ended = False
        self._kq = None
        kqueue = getattr(select, "kqueue", None)
        if kqueue is not None:
            kq = kqueue()
            change = select.kevent(
                pid, select.KQ_FILTER_PROC, select.KQ_EV_ADD, select.KQ_NOTE_EXIT
            )
            try:
                kq.control([change], 0, 0)
            except ProcessLookupError:
                kq.close()
                self.ended = True
            else:
                self._kq = kq
        # Subscribed first, checked second: an exit (or a reused pid) from before we
        # listened is seen here, a later one arrives as an event.
        if not self.ended and not same_process(pid, start_time):
            self.ended = True

    def wait(self, timeout: float) -> bool:
        """True once the process has ended; else returns after ``timeout`` seconds."""
        if self.ended:
            return True
        if self._kq is not None:
            self.ended = bool(self._kq.control(None, 1, timeout))
            return self.ended
        deadline = time.monotonic() + timeout
        while same_process(self.pid, self.start_time):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(PROCESS_POLL_INTERVAL, remaining))
        self.ended = True
        return True

    def close(self) -> None:
        if self._kq is not None:
            self._kq.close()


def wait_for_end(
    pid: int, start_time: float, device: DeviceInfo
) -> tuple[str, tuple[int, int] | None]:
    """Sleep in kevent(2) until the session process exits; every DEVICE_CHECK_INTERVAL
    seconds, also check that the device still exists and the process ``pid`` still
    holds it.

    On FreeBSD a closed device stays as an interface, so "gone" means destroyed, or no
    longer held by ``pid``. The counters are always ``None``: the interface and its
    counters persist, for :func:`link_counters`. Signals interrupt kevent(2); their
    handler raises, and the kqueue is closed on the way out.
    """
    ended = _ProcessExit(pid, start_time)
    try:
        timeout = 0.0
        while not ended.wait(timeout):
            if _if_index(device.name) != device.index:
                return DEVICE_GONE, None
            if device.name not in held_devices(pid):
                if ended.wait(0.0):
                    break
                return DEVICE_GONE, None  # closed by the session: the interface persists
            timeout = DEVICE_CHECK_INTERVAL
        return PROCESS_ENDED, None
    finally:
        ended.close()
