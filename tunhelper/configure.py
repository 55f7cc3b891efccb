"""Put the session's addresses on its device, and take them off again.

Each ``apply`` returns an undo record, so that every path out of a session,
including a failure half-way, removes exactly what was applied:

- tun, either end: a point-to-point address (local, peer/32), MTU, up;
- tap, server: the tap becomes a port of the pool's bridge (see :mod:`bridge`);
- tap, client: its address with the pool's prefix, MTU, up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tunhelper import bridge, lock, log, platform
from tunhelper.announce import Announcement
from tunhelper.errors import TunhelperError
from tunhelper.platform import DeviceInfo

# The most one packet of each kind an OpenSSH channel carries: sshd and ssh read a
# tun/tap packet into a 16 KiB buffer (CHAN_RBUF), and a tun packet also carries a
# 4-byte address family in the channel, a tap frame its 14-byte Ethernet header.
# One byte more and every full-size packet is silently dropped. Per-packet cost
# dominates the tunnel's throughput, so the default is the largest that works.
MAX_MTU = {"tun": 16380, "tap": 16370}


def choose_mtu(mode: str, requested: int | None, plan: bridge.BridgePlan) -> int:
    """The link's MTU: ``--mtu`` if it fits the channel, else the most the channel carries.

    On an admin's bridge that is smaller, a tap would have its large frames dropped by
    the bridge: the default follows the bridge (and says so), an explicit larger
    ``--mtu`` is refused.
    """
    limit = MAX_MTU[mode]
    if requested is not None and requested > limit:
        raise TunhelperError(
            f"--mtu {requested} is above what an ssh {mode} channel carries ({limit}); "
            "lower it in authorized_keys"
        )
    mtu = limit if requested is None else requested
    if mode == "tap":
        ceiling = bridge.mtu_ceiling(plan)
        if ceiling is not None and ceiling < mtu:
            if requested is not None:
                raise TunhelperError(
                    f"--mtu {requested} is above the MTU of bridge {plan.name} ({ceiling}): "
                    "lower --mtu or raise the bridge's MTU"
                )
            log.warning(
                f"bridge {plan.name} has MTU {ceiling}, below the {limit} a tap channel "
                f"carries: using {ceiling}; raise the bridge's MTU for faster tap links"
            )
            mtu = ceiling
    return mtu


class Applied(Protocol):
    device: DeviceInfo

    def undo(self) -> None: ...


@dataclass(frozen=True)
class PointToPoint:
    device: DeviceInfo
    local: str
    peer: str

    def undo(self) -> None:
        platform.deconfigure_p2p(self.device, self.local, self.peer)


@dataclass(frozen=True)
class BridgePort:
    device: DeviceInfo
    plan: bridge.BridgePlan
    state_dir: str

    def undo(self) -> None:
        bridge.leave(self.device, self.plan, self.state_dir)


@dataclass(frozen=True)
class PrefixAddress:
    device: DeviceInfo
    address: str
    prefixlen: int

    def undo(self) -> None:
        platform.deconfigure_address(self.device, self.address, self.prefixlen)


@dataclass(frozen=True)
class Routes:
    device: DeviceInfo
    networks: tuple[str, ...]
    via: str | None

    def undo(self) -> None:
        for network in self.networks:
            platform.delete_route(self.device, network, self.via)


def _applying(applied: Applied, step, *args) -> Applied:
    try:
        step(*args)
    except TunhelperError:
        applied.undo()
        raise
    except Exception as e:
        applied.undo()  # part of it may be on while a later step failed
        raise TunhelperError(f"could not configure {applied.device.name}: {e}") from e
    return applied


def point_to_point(
    device: DeviceInfo, local: str, peer: str, mtu: int, worker: Worker | None = None
) -> Applied:
    """``local``, ``peer``/32, MTU, up (the server's local is the gateway)."""
    step = platform.configure_p2p if worker is None else worker.configure_p2p
    return _applying(PointToPoint(device, local, peer), step, device, local, peer, mtu)


def bridge_port(
    device: DeviceInfo,
    plan: bridge.BridgePlan,
    mtu: int,
    state_dir: str,
    worker: Worker | None = None,
) -> Applied:
    """The server end of a tap session: a port of the pool's bridge."""
    step = bridge.join if worker is None else worker.join_bridge
    return _applying(BridgePort(device, plan, state_dir), step, device, plan, mtu, state_dir)


def client_networks(
    device: DeviceInfo, networks: list[str], via: str | None, state_dir: str
) -> Applied:
    """Route the networks behind a client to it, unless another live session has them.

    The kernel's routing table is the record: tunhelper's routes carry its own protocol
    number and vanish with their session's device. Checking and adding happen under a
    lock, so two sessions cannot both claim one network.
    """
    import netaddr

    with lock.held(state_dir, "routes"):
        for network in networks:
            mine = netaddr.IPNetwork(network)
            for other, other_device in platform.our_routes():
                theirs = netaddr.IPNetwork(other)
                if mine.first <= theirs.last and theirs.first <= mine.last:
                    raise TunhelperError(
                        f"--client-net {network} overlaps {other}, routed to another live "
                        f"session ({other_device}); give each client its own networks"
                    )
        return routes(device, networks, via)


def routes(device: DeviceInfo, networks: list[str], via: str | None) -> Applied:
    """Routes to ``networks`` through the device (the client's announced routes, too)."""
    return _applying(Routes(device, tuple(networks), via), _add_routes, device, networks, via)


def _add_routes(device: DeviceInfo, networks: list[str], via: str | None) -> None:
    for network in networks:
        platform.add_route(device, network, via)


class Worker:
    """Configures in a child process that loads the netlink library from the start.

    Loading pyroute2 costs more than everything else the helper does before it can
    announce. Forked as the session starts, the child loads it on the second core
    while the parent discovers the device and leases an address; the parent then
    hands it exactly one step and waits for its answer. Undoing happens later, in
    whichever process ends the session. If the fork fails, steps run in-process.
    """

    def __init__(self) -> None:
        self._pid: int | None = None
        try:
            request_r, request_w = os.pipe()
            reply_r, reply_w = os.pipe()
            pid = os.fork()
        except OSError:
            return
        if pid == 0:  # the child
            os.close(request_w)
            os.close(reply_r)
            _serve_one(request_r, reply_w)  # never returns
        os.close(request_r)
        os.close(reply_w)
        self._pid, self._request, self._reply = pid, request_w, reply_r

    def configure_p2p(self, device: DeviceInfo, local: str, peer: str, mtu: int) -> None:
        self._call("p2p", [device._asdict(), local, peer, mtu])

    def join_bridge(
        self, device: DeviceInfo, plan: bridge.BridgePlan, mtu: int, state_dir: str
    ) -> None:
        self._call("bridge", [device._asdict(), asdict(plan), mtu, state_dir])

    def _call(self, op: str, args: list[Any]) -> None:
        if self._pid is None:
            return _run_op(op, args)
        try:
            os.write(self._request, json.dumps({"op": op, "args": args}).encode())
            os.close(self._request)
            self._request = -1
            with os.fdopen(self._reply, "rb") as f:
                self._reply = -1
                data = f.read()
        finally:
            self.close()
        reply = json.loads(data) if data else {"error": "the configuring process died"}
        if "error" in reply:
            raise TunhelperError(reply["error"])

    def close(self) -> None:
        """Reap the child; one that was never asked anything is killed, not waited for."""
        unused = getattr(self, "_request", -1) >= 0
        for fd in (getattr(self, "_request", -1), getattr(self, "_reply", -1)):
            if fd >= 0:
                os.close(fd)
        self._request = self._reply = -1
        if self._pid is not None:
            if unused:  # a refusal should not wait for the library to finish loading
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None


def _run_op(op: str, args: list[Any]) -> None:
    device = DeviceInfo(**args[0])
    if op == "p2p":
        platform.configure_p2p(device, *args[1:])
    else:
        bridge.join(device, bridge.BridgePlan(**args[1]), *args[2:])


def _serve_one(request_fd: int, reply_fd: int) -> None:
    """The child: load, wait for one request (or EOF), carry it out, answer, exit."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # never hold sshd's pipes open, never write to the client
        for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        with contextlib.suppress(Exception):  # if loading fails, the request reports why
            platform.preload()
        with os.fdopen(request_fd, "rb") as f:
            data = f.read()
        if data:
            request = json.loads(data)
            try:
                _run_op(request["op"], request["args"])
                reply: dict[str, Any] = {"ok": True}
            except TunhelperError as e:
                reply = {"error": str(e)}
            except Exception as e:  # noqa: BLE001 - reported to the parent as one line
                reply = {"error": f"could not configure: {e}"}
            os.write(reply_fd, json.dumps(reply).encode())
    finally:
        os._exit(0)


def apply_local(device: DeviceInfo, ann: Announcement) -> Applied:
    """The client's end, from the server's announcement."""
    if ann.mode != device.mode:
        raise TunhelperError(
            f"the server announced a {ann.mode} link but ssh opened {device.name}, "
            f"a {device.mode} device"
        )
    if ann.mode == "tap":
        return _applying(
            PrefixAddress(device, ann.address, ann.prefix),
            platform.configure_address,
            device,
            ann.address,
            ann.prefix,
            ann.mtu,
        )
    if ann.gateway is None:
        raise TunhelperError("the server announced a tun link without a gateway")
    return point_to_point(device, ann.address, ann.gateway, ann.mtu)


def undo(applied: Applied) -> None:
    applied.undo()


_KINDS: dict[str, type] = {
    "p2p": PointToPoint,
    "bridge": BridgePort,
    "prefix": PrefixAddress,
    "routes": Routes,
}


def to_record(applied: Applied) -> dict[str, Any]:
    """A JSON-able form, so another process (the slim holder) can undo it."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(applied, cls))
    record = asdict(applied)  # type: ignore[call-overload]
    return {"kind": kind, **record, "device": applied.device._asdict()}


def from_record(record: dict[str, Any]) -> Applied:
    fields = dict(record)
    cls = _KINDS[fields.pop("kind")]
    fields["device"] = DeviceInfo(**fields["device"])
    if "plan" in fields:
        fields["plan"] = bridge.BridgePlan(**fields["plan"])
    if "networks" in fields:
        fields["networks"] = tuple(fields["networks"])
    return cls(**fields)
