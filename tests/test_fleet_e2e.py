"""A fleet end to end: three gateways, each its own namespace, hostname, sshd and
tunhelper, sharing one pool in one real PostgreSQL reached over a shared underlay.

Each gateway runs ``tunhelper renew`` every RENEW_EVERY seconds, as its systemd timer
would; a lease lives LIFETIME seconds unless renewed.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.conftest import _unavailable, require_lab_prerequisites
from tests.lab import Lab, fixed_mac, run, tunhelper_command, wait_until

GATEWAY = "192.168.3.1"
POOL = "192.168.3.0/24"
LIFETIME = 20.0  # long enough to ask, on a loaded CI machine, before it runs out
RENEW_EVERY = 2.0
UNDERLAY = "10.232.0"  # the fleet's shared network: PostgreSQL on .1, gateways .11 up


class Fleet:
    """The shared namespace and its PostgreSQL, the gateways, and their renew timers."""

    def __init__(self, lifetime: float = LIFETIME, shipped_renew: bool = False) -> None:
        """``shipped_renew``: each gateway runs the shipped renew service's command (its
        loop, on its own schedule) instead of this test's timer."""
        self.lifetime = lifetime
        self.shipped_renew = shipped_renew
        self.loops: list[subprocess.Popen] = []
        self.tag = uuid.uuid4().hex[:6]
        self.ns = f"th-{self.tag}-db"
        self.bridge = f"thf{self.tag}"
        self.gateways: list[Lab] = []
        self.renewing: list[Lab] = []
        self.server: pg.PostgresServer | None = None
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._renew_loop, daemon=True)

    def start(self, count: int) -> None:
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "set", "lo", "up", ns=self.ns)
        run("ip", "link", "add", self.bridge, "address", fixed_mac(), "type", "bridge", ns=self.ns)
        run("ip", "addr", "add", f"{UNDERLAY}.1/24", "dev", self.bridge, ns=self.ns)
        run("ip", "link", "set", self.bridge, "up", ns=self.ns)
        self.server = pg.PostgresServer(listen=f"{UNDERLAY}.1", netns=self.ns).start()
        for i in range(count):
            lab = Lab(
                ("--pool", POOL, "--db-timeout", "8"),
                hostname=f"gw{i + 1}-{self.tag}",
                uplink=(self.ns, self.bridge, f"{UNDERLAY}.{11 + i}/24"),
            )
            self.gateways.append(lab)
            lab.start()
            config = lab.dir / "tunhelper.conf"
            config.write_text(
                "[store]\nbackend = postgresql\n"
                f"conninfo = {self.server.conninfo(f'{UNDERLAY}.1')}\n"
                f"lifetime = {self.lifetime:g}\n"
            )
            os.chmod(config, 0o600)  # it holds a password
            lab.helper_args += ["--config", str(config)]
            self.renewing.append(lab)
        if self.shipped_renew:
            self.loops = [self.renew_service(lab) for lab in self.gateways]
        else:
            self._timer.start()

    def renew_service(self, lab: Lab) -> subprocess.Popen:
        """The shipped tunhelper-renew.service's command, run in ``lab``'s namespaces; it
        finds the stores from the lab's authorized_keys (sshd's AuthorizedKeysFile)."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(Path(__file__).parent.parent / "debian" / "tunhelper.tunhelper-renew.service")
        argv = shlex.split(unit["Service"]["ExecStart"])
        assert argv[0] == "/usr/bin/tunhelper"
        assert lab.sshd is not None
        log = open(lab.dir / "renew.log", "wb")  # noqa: SIM115 - the process keeps it
        return subprocess.Popen(
            # --root and --wd: the target's root, as lab.in_server_mounts does (CI's
            # Debian 13 runs in a chroot, whose paths the mount namespace alone lacks)
            ["nsenter", "--mount", "--net", "--uts", "--root", "--wd",
             "--target", str(lab.sshd.pid), tunhelper_command(), *argv[1:],
             "--authorized-keys", str(lab.dir / "authorized_keys"),
             "--state-dir", lab.state_dir],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop_renewing(self) -> None:
        for loop in self.loops:
            loop.terminate()
            loop.wait(10)

    def renew(self, lab: Lab) -> str:
        """``tunhelper renew`` on ``lab``, in its namespaces (hostname included)."""
        result = lab.in_server_mounts(
            tunhelper_command(), "renew", "--config", str(lab.dir / "tunhelper.conf"),
            "--state-dir", lab.state_dir, check=False,
        )  # fmt: skip
        return result.stdout + result.stderr

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            for lab in list(self.renewing):
                with contextlib.suppress(Exception):  # the database may be away on purpose
                    self.renew(lab)

    def admin(self, lab: Lab, *args: str) -> subprocess.CompletedProcess:
        """A ``tunhelper`` admin command on ``lab``'s gateway, with its config and state."""
        return lab.in_server_mounts(
            tunhelper_command(), *args, "--config", str(lab.dir / "tunhelper.conf"),
            "--state-dir", lab.state_dir, check=False,
        )  # fmt: skip

    def leases(self) -> list[dict]:
        assert self.server is not None
        rows = self.server.sql(
            "SELECT address, state, host, client, token, expires FROM leases", db=pg.DB
        )
        keys = ("address", "state", "host", "client", "token", "expires")
        return [dict(zip(keys, row)) for row in rows]

    def active(self) -> list[dict]:
        return [x for x in self.leases() if x["state"] == "active"]

    def close(self) -> None:
        self.stop_renewing()
        self._stop.set()
        if self._timer.is_alive():
            self._timer.join(30)
        for lab in self.gateways:
            lab.close()
        if self.server is not None:
            self.server.stop()
        run("ip", "netns", "del", self.ns, check=False)


@contextlib.contextmanager
def running_fleet(count: int, **kw) -> Iterator[Fleet]:
    """A fleet of ``count`` gateways for one test (``kw``: :class:`Fleet`'s)."""
    require_lab_prerequisites()
    why = pg.missing()
    if why is not None:
        _unavailable(f"this test needs {why}")
    f = Fleet(**kw)
    try:
        f.start(count)
        yield f
    finally:
        f.close()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with running_fleet(3) as f:
        yield f


def connected(client, gateway: str = GATEWAY):
    session = client.connect()
    address = session.read_address(timeout=60)
    assert address is not None, f"no address announced; ssh said: {session.stderr()}"
    session.configure_client_side(gateway)
    return session


def same_key_on(lab: Lab, other) -> object:
    """A client host on ``lab``'s network that uses ``other``'s key (the same identity)."""
    client = lab.add_client()
    lab.authorize(other.public_key)
    client.key, client.public_key = other.key, other.public_key
    return client


def test_no_duplicates_across_gateways_and_the_key_keeps_its_address(fleet: Fleet) -> None:
    sessions = []
    for lab in fleet.gateways:
        for _ in range(2):
            sessions.append(connected(lab.add_client()))
    addresses = [s.address for s in sessions]
    assert len(set(addresses)) == len(addresses), addresses
    active = fleet.active()
    assert sorted(x["address"] for x in active) == sorted(addresses)
    assert len({x["host"] for x in active}) == 3  # each gateway's leases carry its name
    for s in sessions:
        assert s.ping(GATEWAY, count=2), f"{s.address}: no ping through the tunnel"
    doctor = fleet.gateways[2].doctor().stdout  # over the underlay, as the helpers connect
    store_lines = [x for x in doctor.splitlines() if "tunhelper.conf" in x]
    assert any("the lease database answers" in x for x in store_lines), doctor
    assert any("schema version 2, as this tunhelper expects" in x for x in store_lines), doctor
    assert not [x for x in store_lines if x.startswith("error:")], doctor

    # The same key on another gateway: its address back once the first session ends.
    first = fleet.gateways[0].clients[0]
    old = sessions[0].address
    sessions[0].close()
    assert wait_until(lambda: old not in [x["address"] for x in fleet.active()], 20)
    again = connected(same_key_on(fleet.gateways[1], first))
    assert again.address == old
    assert again.ping(GATEWAY, count=2)

    # --max-sessions 1 across gateways: a new session of that key on the first gateway
    # is refused at once, in one line naming the gateway that holds its session.
    started = time.monotonic()
    refused = first.connect()
    assert refused.read_address(timeout=30) is None
    refused.wait(30)
    assert time.monotonic() - started < 20
    errors = [x for x in refused.stderr().splitlines() if x.startswith("tunhelper:")]
    assert len(errors) == 1 and f"live on gateway gw2-{fleet.tag}" in errors[0], errors
    assert again.ping(GATEWAY, count=2)  # the held session is untouched

    # The admin commands see the whole fleet from any gateway.
    third = fleet.gateways[2]
    listed = json.loads(fleet.admin(third, "leases", "--json").stdout)
    held = {x["address"]: x["host"] for x in listed if x["state"] == "active"}
    assert held == {x["address"]: x["host"] for x in fleet.active()}
    table = fleet.admin(third, "leases").stdout.splitlines()
    assert table[1].split()[:3] == ["address", "state", "gateway"], table
    row = next(x.split() for x in table if x.startswith(f"{again.address} "))
    assert row[1:3] == ["active", f"gw2-{fleet.tag}"], table
    refused_release = fleet.admin(third, "release", again.address)
    assert refused_release.returncode != 0
    assert f"held by gateway gw2-{fleet.tag}" in refused_release.stderr, refused_release.stderr
    assert again.ping(GATEWAY, count=2)


def test_a_destroyed_gateways_leases_are_reclaimed_after_one_lifetime(fleet: Fleet) -> None:
    doomed, survivor = fleet.gateways[0], fleet.gateways[1]
    held = connected(doomed.add_client())
    address = held.address
    time.sleep(RENEW_EVERY * 1.5)  # renewed at least once
    fleet.renewing.remove(doomed)
    doomed.close()  # every process of the namespace killed, the namespace deleted
    (lease,) = [x for x in fleet.active() if x["address"] == address]
    expires = lease["expires"]

    # Another client asks the survivor for exactly that address: refused while the
    # lease has its lifetime, granted once it ran out.
    taker = survivor.add_client(helper_args=[*survivor.helper_args, "--address", address])
    if expires - time.time() > 3:  # time enough to ask before the lifetime ends
        early = taker.connect()
        assert early.read_address(timeout=30) is None
        early.wait(30)
        asked = time.time()
        assert asked < expires, "the refusal came only after the lifetime; inconclusive"
        assert "held by another live session" in early.stderr(), early.stderr()
    else:
        pytest.fail(f"the lease expires {expires - time.time():.1f}s after its gateway died")
    time.sleep(max(0.0, expires - time.time()) + 0.5)
    late = connected(taker)
    assert late.address == address
    assert late.ping(GATEWAY, count=2)
    hosts = {x["host"] for x in fleet.active() if x["address"] == address}
    assert hosts == {f"gw2-{fleet.tag}"}


def test_sessions_outlive_a_database_restart_and_releases_wait_for_it(fleet: Fleet) -> None:
    assert fleet.server is not None
    b, c = fleet.gateways[1], fleet.gateways[2]
    ending = connected(b.add_client())
    staying = connected(c.add_client())
    ending_lease = next(x for x in fleet.active() if x["address"] == ending.address)

    fleet.server.pause()
    try:
        assert ending.ping(GATEWAY, count=2) and staying.ping(GATEWAY, count=2)
        ending.close()  # its keeper cannot reach the database: the release is queued
        queue = os.path.join(b.state_dir, "pending-releases")
        assert wait_until(lambda: os.path.exists(queue), 30), "no release queued"
        assert staying.ping(GATEWAY, count=2)
    finally:
        fleet.server.resume()
    assert staying.ping(GATEWAY, count=2)
    out = fleet.renew(b)  # the timer's next run does the queued release
    assert "renewed" in out, out
    assert not os.path.exists(queue)
    (row,) = [x for x in fleet.leases() if x["token"] == ending_lease["token"]]
    assert row["state"] == "released"
    assert [x["address"] for x in fleet.active()] == [staying.address]
