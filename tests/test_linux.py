"""The Linux platform module against real tun/tap fds, in a namespace the test makes."""

from __future__ import annotations

import ast
import json
import struct
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

from tests.conftest import require_lab_prerequisites
from tunhelper.platform import linux
from tunhelper.platform.linux import rtnetlink

IFF_TUN_NO_PI, IFF_TAP_NO_PI = 0x1001, 0x1002

# Opens a tun/tap device as sshd does, optionally runs a command as its child, then
# holds the device until its stdin closes.
HOLDER = r"""
import fcntl, os, struct, subprocess, sys
fds = [os.open("/dev/net/tun", os.O_RDWR) for _ in sys.argv[1].split(",")]
for fd, name in zip(fds, sys.argv[1].split(",")):
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), int(sys.argv[2], 0)))
print("ready", flush=True)
if len(sys.argv) > 3:
    r = subprocess.run(sys.argv[3:], capture_output=True, text=True)
    print(repr((r.returncode, r.stdout.strip(), r.stderr.strip())), flush=True)
sys.stdin.read()
"""

FIND = (
    "from tunhelper.link.discover import find_device; import sys;"
    "d = find_device(float(sys.argv[1]), {'SSH_TUNNEL': 'tun9'});"
    "print(d.device.name, d.device.mode, d.session_pid)"
)


@pytest.fixture
def netns():
    require_lab_prerequisites()
    name = f"th-unit-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    procs: list[subprocess.Popen] = []

    def spawn(*argv: str) -> subprocess.Popen:
        p = subprocess.Popen(
            ["ip", "netns", "exec", name, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        p.kill()
        p.wait()
    subprocess.run(["ip", "netns", "del", name], check=True)


def hold(spawn, name: str, flags: int, *command: str) -> subprocess.Popen:
    p = spawn(sys.executable, "-c", HOLDER, name, hex(flags), *command)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_held_devices_reads_fdinfo_of_a_real_tun_fd(netns) -> None:
    p = hold(netns, "thtun7", IFF_TUN_NO_PI)
    assert linux.held_devices(p.pid) == ["thtun7"]
    assert linux.held_devices(psutil.Process().pid) == []


def test_discovery_from_a_child_finds_its_ancestors_device(netns) -> None:
    p = hold(netns, "thtun8", IFF_TUN_NO_PI, sys.executable, "-c", FIND, "1")
    assert p.stdout is not None
    code, out, err = eval(p.stdout.readline())  # noqa: S307 - our own repr() from HOLDER
    assert code == 0, err
    assert out == f"thtun8 tun {p.pid}"


def test_discovery_sees_tap_mode(netns) -> None:
    p = hold(netns, "thtap8", IFF_TAP_NO_PI, sys.executable, "-c", FIND, "1")
    assert p.stdout is not None
    assert eval(p.stdout.readline())[1] == f"thtap8 tap {p.pid}"  # noqa: S307


def test_several_devices_in_one_connection_are_refused_clearly(netns) -> None:
    p = hold(netns, "thtun1,thtun2", IFF_TUN_NO_PI, sys.executable, "-c", FIND, "1")
    assert p.stdout is not None
    code, out, err = eval(p.stdout.readline())  # noqa: S307
    assert code != 0 and out == ""
    assert "several tunnels (thtun1, thtun2)" in err


def test_discovery_never_looks_sideways(netns) -> None:
    hold(netns, "thtun9", IFF_TUN_NO_PI)  # a device held by a process that is not our ancestor
    sibling = netns(sys.executable, "-c", FIND, "0.3")
    out, _ = sibling.communicate(timeout=30)
    assert sibling.returncode != 0 and out == ""


def test_wait_for_end_sees_the_device_disappear(netns) -> None:
    p = hold(netns, "thtun5", IFF_TUN_NO_PI)
    result = run_wait_for_end(netns, "thtun5", watched=psutil.Process(), stop=p)
    assert result == "device"


def test_wait_for_end_sees_the_session_process_exit(netns) -> None:
    p = hold(netns, "thtun6", IFF_TUN_NO_PI)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = run_wait_for_end(
            netns, "thtun6", watched=psutil.Process(sleeper.pid), stop=sleeper
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result == "process"
    assert p.poll() is None  # the device's holder was not touched


def run_wait_for_end(netns, device: str, watched: psutil.Process, stop) -> str:
    """Run wait_for_end inside the namespace (netlink is per namespace), then end ``stop``.

    Returns the kind of end; for a deleted device, also checks that the deletion's
    final counters came back with it.
    """
    code = (
        "import sys; from tunhelper.platform import linux;"
        "d = linux.device_info(sys.argv[1]); print('watching', flush=True);"
        "kind, counters = linux.wait_for_end(int(sys.argv[2]), float(sys.argv[3]), d);"
        "print(kind if kind == 'process' or counters is not None else 'no counters', flush=True)"
    )
    w = netns(sys.executable, "-c", code, device, str(watched.pid), repr(watched.create_time()))
    assert w.stdout is not None and w.stdout.readline().strip() == "watching"
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(w.stdout.readline().strip()))
    reader.start()
    time.sleep(0.2)
    assert not result, "wait_for_end returned before anything ended"
    if isinstance(stop, subprocess.Popen) and stop.stdin is not None:
        stop.stdin.close()  # the holder exits and the kernel deletes its device
    else:
        stop.kill()
    reader.join(10)
    return result[0] if result else "<still waiting>"


def test_link_deleted_parser() -> None:
    nl = rtnetlink

    def message(mtype: int, index: int) -> bytes:
        body = nl.IFINFOMSG.pack(0, 0, index, 0, 0)
        return nl.NLMSG_HDR.pack(nl.NLMSG_HDR.size + len(body), mtype, 0, 0, 0) + body

    new_link, del_link = 16, nl.RTM_DELLINK
    assert nl.link_deleted(message(new_link, 5) + message(del_link, 7), 7) == (True, None)
    assert not nl.link_deleted(message(del_link, 5), 7)[0]
    assert not nl.link_deleted(message(new_link, 7), 7)[0]
    assert not nl.link_deleted(b"\x00" * 3, 7)[0]
    stats = struct.pack("=HH", 4 + 8 * 4, nl.IFLA_STATS64) + struct.pack("=4Q", 1, 2, 300, 400)
    body = nl.IFINFOMSG.pack(0, 0, 7, 0, 0) + stats
    with_stats = nl.NLMSG_HDR.pack(nl.NLMSG_HDR.size + len(body), del_link, 0, 0, 0) + body
    assert nl.link_deleted(with_stats, 7) == (True, (300, 400))


# Configures device A with tunhelper's own rtnetlink requests and device B with pyroute2
# (the library they stand in for), then reports both devices as ``ip -j`` sees them.
CONFIGURE = r"""
import errno, json, subprocess, sys
from tunhelper.platform import DeviceInfo, linux
from tunhelper.platform.linux import links, rtnetlink
a, b, local, peer, mtu = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
linux.configure_p2p(linux.device_info(a), local, peer, mtu)
loaded = sorted(m for m in sys.modules if m.startswith("pyroute2"))
try:
    linux.configure_p2p(linux.device_info(a), local, peer, mtu)
    again = 0
except OSError as e:
    again = e.errno
try:
    linux.configure_p2p(DeviceInfo("gone", 999999, "tun", False), local, peer, mtu)
    missing = 0
except OSError as e:
    missing = e.errno
IPRoute, _ = links._rtnl()
family, prefixlen = rtnetlink.family(local)
with IPRoute() as ipr:
    index = linux.device_info(b).index
    ipr.link("set", index=index, state="up", mtu=mtu)
    ipr.addr("add", index=index, family=family, local=local, address=peer, prefixlen=prefixlen)
def seen(dev):
    (link,) = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", dev],
                                        capture_output=True, check=True).stdout)
    addrs = sorted((i["family"], i["local"], i.get("address"), i["prefixlen"], i["scope"])
                   for i in link["addr_info"] if i.get("scope") != "link")
    return {"mtu": link["mtu"], "up": "UP" in link["flags"], "addrs": addrs}
print(json.dumps({"ours": seen(a), "pyroute2": seen(b), "loaded": loaded,
                  "again": again == errno.EEXIST, "missing": missing == errno.ENODEV}))
"""


@pytest.mark.parametrize(
    ("local", "peer"), [("192.168.3.1", "192.168.3.2"), ("fd00:3::1", "fd00:3::2")]
)
def test_point_to_point_requests_do_what_pyroute2_does(netns, local: str, peer: str) -> None:
    """The connect path's own two rtnetlink requests leave a device as pyroute2 would."""
    p = hold(
        netns, "thp2p1,thp2p2", IFF_TUN_NO_PI, sys.executable, "-c", CONFIGURE,
        "thp2p1", "thp2p2", local, peer, "9000",
    )  # fmt: skip
    assert p.stdout is not None
    code, out, err = ast.literal_eval(p.stdout.readline())
    assert code == 0, err
    result = json.loads(out)
    assert result["ours"] == result["pyroute2"]
    family = "inet6" if ":" in local else "inet"
    prefix = 128 if ":" in local else 32
    assert result["ours"] == {
        "mtu": 9000,
        "up": True,
        "addrs": [[family, local, peer, prefix, "global"]],
    }
    assert result["loaded"] == []  # the path to the announcement never imports pyroute2
    assert result["again"] and result["missing"]  # the kernel's refusals arrive as OSError


def test_acknowledgement_parser() -> None:
    nl = rtnetlink

    def message(kind: int, seq: int, payload: bytes) -> bytes:
        return nl.NLMSG_HDR.pack(nl.NLMSG_HDR.size + len(payload), kind, 0, seq, 0) + payload

    error = struct.pack("=i", -17)
    ok = struct.pack("=i", 0)
    assert nl.acknowledgement(message(nl.NLMSG_ERROR, 5, error), 5) == 17
    assert nl.acknowledgement(message(16, 5, ok) + message(nl.NLMSG_ERROR, 5, ok), 5) == 0
    assert nl.acknowledgement(message(nl.NLMSG_ERROR, 4, error), 5) is None  # not ours
    assert nl.acknowledgement(b"\x00" * 30, 5) is None  # a zero length ends the walk


LEAN_IMPORT = r"""
import sys
from tunhelper.platform.linux import links
IPRoute, NetlinkError = links._rtnl()
lean = sorted(m for m in sys.modules if m.startswith(("pyroute2.ndb", "pyroute2.ipdb")))
stray = "pyroute2" in sys.modules
import pyroute2
print(lean, stray, pyroute2.IPRoute is IPRoute, pyroute2.NetlinkError is NetlinkError)
"""


def test_pyroute2_loads_without_its_whole_library_and_stays_whole() -> None:
    """Only IPRoute's modules load; a later ``import pyroute2`` still gets the whole API."""
    out = subprocess.run(
        [sys.executable, "-c", LEAN_IMPORT], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[] False True True"


# Opens a tun as sshd does, configures it as the session does, and at once looks at what
# the kernel has: the address settled (not tentative) and the route to the peer.
SETTLED = r"""
import fcntl, os, socket, struct, sys
from tunhelper.platform import linux
from tunhelper.platform.linux import rtnetlink
local = socket.inet_pton(10, "fd00:3::1").hex()
peer = socket.inet_pton(10, "fd00:3::4").hex()
bad = 0
for _ in range(int(sys.argv[1])):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"thset0", 0x1001))
    linux.configure_p2p(linux.device_info("thset0"), "fd00:3::1", "fd00:3::4", 16380)
    bad += not (rtnetlink.ipv6_settled("thset0", local)
                and rtnetlink.ipv6_host_route("thset0", peer))
    os.close(fd)
print(bad)
"""


def test_an_ipv6_link_is_usable_when_its_configuration_returns(netns) -> None:
    """Without waiting, about one configuration in seven returned before the kernel had
    the route to the peer: the announcement would send the client's first answers nowhere."""
    p = netns(sys.executable, "-c", SETTLED, "60")
    assert p.stdout is not None and p.stdout.readline().strip() == "0"


def test_same_process_is_pid_and_start_time_without_psutil() -> None:
    """The slim holder's identity check: the live process, not a reused pid, no zombie."""
    me = psutil.Process()
    assert linux.process_start(me.pid) == pytest.approx(me.create_time(), abs=0.01)
    assert linux.same_process(me.pid, me.create_time())
    assert not linux.same_process(me.pid, me.create_time() - 5)  # a reused pid
    zombie = subprocess.Popen(["true"])
    try:
        start = psutil.Process(zombie.pid).create_time()
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not linux.same_process(zombie.pid, start)
    finally:
        zombie.wait()
    assert not linux.same_process(zombie.pid, start)  # reaped: gone
    assert linux.process_start(zombie.pid) is None
