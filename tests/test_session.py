"""The session's unwinding, with the OS parts replaced: every failure gives back what it took.

Only the platform calls and discovery are faked; the lease store is the real one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import syslog
from pathlib import Path

import pytest

from tunhelper import log
from tunhelper import settings as settings_module
from tunhelper.link import discover
from tunhelper.link.bridge import BridgePlan
from tunhelper.platform import DeviceInfo
from tunhelper.pool import Pool
from tunhelper.server import policy, session, teardown
from tunhelper.settings import Settings
from tunhelper.signals import Interrupted
from tunhelper.store import ACTIVE, RELEASED, liveness, open_store

DEVICE = DeviceInfo("tun0", 42, "tun")
BRIDGE = BridgePlan("thbrtest", managed=True, address="192.168.3.1", prefixlen=24)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake session process and device; records what was configured and ended."""
    events: list[str] = []
    found = discover.SessionDevice(DEVICE, os.getpid(), 0.0)
    monkeypatch.setattr(discover, "find_device", lambda wait, env: found)
    monkeypatch.setattr(session, "end_connection", lambda f: events.append("end connection"))
    monkeypatch.setattr(session, "local_addresses", lambda: [])
    monkeypatch.setattr(
        "tunhelper.platform.configure_p2p", lambda *a: events.append(f"configure {a[1:3]}")
    )
    monkeypatch.setattr(
        "tunhelper.platform.deconfigure_p2p", lambda *a: events.append(f"deconfigure {a[1:3]}")
    )
    monkeypatch.setattr("tunhelper.platform.boot_id", lambda: "boot")
    monkeypatch.setattr(
        "tunhelper.platform.filter_sources", lambda d: events.append(f"filter {d.name}")
    )
    monkeypatch.setattr(
        "tunhelper.platform.guard_link", lambda d, s, g: events.append(f"guard {d.name} {s}")
    )
    monkeypatch.setattr("tunhelper.platform.unguard_link", lambda d: events.append("unguard"))
    # Nothing here may touch the real network: the bridge is faked too.
    monkeypatch.setattr(
        "tunhelper.link.bridge.join", lambda d, plan, mtu, sd: events.append(f"join {plan.name}")
    )
    monkeypatch.setattr(
        "tunhelper.link.bridge.leave", lambda d, plan, sd: events.append(f"leave {plan.name}")
    )
    monkeypatch.setattr(
        "tunhelper.server.session.announce",
        lambda a, describe: events.append(f"announce {a.address}"),
    )
    # The real helper re-executes itself as the keeper here; in-process instead.
    monkeypatch.setattr("tunhelper.server.session.become_keeper", lambda record, label: None)
    monkeypatch.setattr(
        "tunhelper.server.session.hold",
        lambda f: events.append("hold") or ("process", "ended", None),
    )
    settings = Settings(
        pool=Pool.parse("192.168.3.0/24"),
        state_dir=str(tmp_path / "state"),
        wait=0.1,
        mtu=None,
        bridge=BRIDGE,
        client="alice",
    )
    return settings, events, monkeypatch


def leases(settings) -> list:
    store = open_store(settings.state_dir)
    try:
        return store.leases()
    finally:
        store.close()


def test_full_session_in_order_and_everything_given_back(world) -> None:
    settings, events, _ = world
    assert session.serve(settings, {}) == 0
    assert events == [
        "configure ('192.168.3.1', '192.168.3.2')",
        "filter tun0",
        "guard tun0 ['192.168.3.2']",
        "announce 192.168.3.2",
        "hold",
        "unguard",
        "deconfigure ('192.168.3.1', '192.168.3.2')",
        "end connection",
    ]
    assert [x.state for x in leases(settings)] == [RELEASED]


def _fail(error: BaseException):
    def raiser(*_args):
        raise error

    return raiser


@pytest.mark.parametrize(
    ("target", "error", "undone"),
    [
        ("tunhelper.platform.configure_p2p", OSError("netlink said no"), True),
        ("tunhelper.server.session.announce", session.TunhelperError("client gone"), True),
        ("tunhelper.server.session.hold", Interrupted(15), True),
        ("tunhelper.platform.configure_p2p", Interrupted(1), True),
    ],
)
def test_failure_at_any_step_releases_and_deconfigures(world, capfd, target, error, undone) -> None:
    settings, events, monkeypatch = world
    monkeypatch.setattr(target, _fail(error))
    code = session.serve(settings, {})
    assert code == 1
    assert [x.state for x in leases(settings)] == [RELEASED]  # nothing leaked
    assert ("deconfigure ('192.168.3.1', '192.168.3.2')" in events) is undone
    assert events[-1] == "end connection"
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("tunhelper: ") and "Traceback" not in err


def test_exhausted_pool_takes_nothing(world, capfd) -> None:
    settings, events, _ = world
    settings = Settings(
        pool=Pool.parse("192.168.3.0/30"),
        state_dir=settings.state_dir,
        wait=0.1,
        mtu=None,
        bridge=BRIDGE,
        client="bob",
    )
    store = open_store(settings.state_dir)
    from tunhelper.store import Owner, Request

    me, started = os.getpid(), liveness.process_start(os.getpid())  # a live holder
    holder = Owner(liveness.this_host(), "boot", me, started, me, started, "tun9")
    pool = settings.pool
    store.allocate(
        Request(pool.name, pool.first, pool.last, pool.excluded([]), "alice", holder, pool.address),
        liveness.Liveness(),
    )
    store.close()
    assert session.serve(settings, {}) == 1
    assert "exhausted" in capfd.readouterr().err
    assert not any(e.startswith("configure") for e in events)
    assert [x.state for x in leases(settings)] == [ACTIVE]  # alice's lease untouched


def test_tap_session_joins_the_pool_bridge_and_leaves_it(world, monkeypatch) -> None:
    settings, events, _ = world
    tap = discover.SessionDevice(DeviceInfo("tap0", 7, "tap"), os.getpid(), 0.0)
    monkeypatch.setattr(discover, "find_device", lambda wait, env: tap)
    announced = []
    monkeypatch.setattr(
        "tunhelper.server.session.announce", lambda a, describe: announced.append(a)
    )
    assert session.serve(settings, {}) == 0
    assert events == [
        "join thbrtest",
        "guard tap0 ['192.168.3.2']",
        "hold",
        "unguard",
        "leave thbrtest",
        "end connection",
    ]
    (ann,) = announced
    assert (ann.address, ann.prefix, ann.gateway, ann.mode) == (
        "192.168.3.2",
        24,
        "192.168.3.1",
        "tap",
    )
    assert [x.state for x in leases(settings)] == [RELEASED]


def test_tun_refused_on_a_pool_without_gateway(world, capfd) -> None:
    settings, events, _ = world
    settings = Settings(
        pool=Pool.parse("192.168.3.0/24", None, gateway_optional=True),
        state_dir=settings.state_dir,
        wait=0.1,
        mtu=None,
        client="bob",
        bridge=BridgePlan("lan0", managed=False, address=None, prefixlen=24),
    )
    assert session.serve(settings, {}) == 1
    assert "serves ethernet links only" in capfd.readouterr().err
    assert leases(settings) == []
    assert events == ["end connection"]


def test_dual_stack_takes_one_lease_per_family_and_gives_both_back(world) -> None:
    settings, events, monkeypatch = world
    announced = []
    monkeypatch.setattr(
        "tunhelper.server.session.announce", lambda a, describe: announced.append(a)
    )
    settings = Settings(
        pool=Pool.parse("192.168.3.0/24"),
        pool6=Pool.parse("fd00:3::/112"),
        state_dir=settings.state_dir,
        wait=0.1,
        mtu=None,
        bridge=BRIDGE,
        client="alice",
    )
    for _ in range(2):  # sticky per family: the second session gets the same two
        assert session.serve(settings, {}) == 0
        (ann,) = announced[-1:]
        assert (ann.address, ann.gateway, ann.prefix) == ("192.168.3.2", "192.168.3.1", 32)
        assert (ann.address6, ann.gateway6, ann.prefix6) == ("fd00:3::2", "fd00:3::1", 128)
    assert events[:8] == [
        "configure ('192.168.3.1', '192.168.3.2')",
        "configure ('fd00:3::1', 'fd00:3::2')",
        "filter tun0",
        "guard tun0 ['192.168.3.2', 'fd00:3::2']",
        "hold",
        "unguard",
        "deconfigure ('fd00:3::1', 'fd00:3::2')",
        "deconfigure ('192.168.3.1', '192.168.3.2')",
    ]
    rows = leases(settings)
    assert sorted((x.pool, x.address, x.client, x.state) for x in rows) == [
        ("192.168.3.0/24", "192.168.3.2", "alice", RELEASED),
        ("fd00:3::/112", "fd00:3::2", "alice", RELEASED),
    ]


def test_a_failed_ipv6_configuration_undoes_ipv4_and_releases_both(world, capfd) -> None:
    settings, events, monkeypatch = world

    def configure(device, local, peer, mtu) -> None:
        if ":" in local:
            raise OSError("no IPv6 here")
        events.append(f"configure {(local, peer)}")

    monkeypatch.setattr("tunhelper.platform.configure_p2p", configure)
    settings = Settings(
        pool=Pool.parse("192.168.3.0/24"),
        pool6=Pool.parse("fd00:3::/112"),
        state_dir=settings.state_dir,
        wait=0.1,
        mtu=None,
        bridge=BRIDGE,
        client="alice",
    )
    assert session.serve(settings, {}) == 1
    assert "deconfigure ('192.168.3.1', '192.168.3.2')" in events
    assert [x.state for x in leases(settings)] == [RELEASED, RELEASED]
    assert "no IPv6 here" in capfd.readouterr().err


@pytest.mark.parametrize("dual", [False, True])
def test_the_keeper_gives_back_from_the_record_the_session_wrote(world, dual) -> None:
    """The record handed to the keeper is the session's one list of what it took."""
    settings, events, monkeypatch = world
    captured: list[dict] = []
    monkeypatch.setattr(
        "tunhelper.server.session.become_keeper", lambda r, label: captured.append(r)
    )
    settings = Settings(
        pool=Pool.parse("192.168.3.0/24"),
        pool6=Pool.parse("fd00:3::/112") if dual else None,
        state_dir=settings.state_dir,
        wait=0.1,
        mtu=None,
        bridge=BRIDGE,
        client="alice",
    )
    found = discover.SessionDevice(DEVICE, os.getpid(), 0.0)
    taken = teardown.Taken(settings.state_dir, settings.db_timeout)
    session._run(settings, {}, found, taken)
    taken.store.close()  # the keeper, not this process, gives things back
    (record,) = captured
    kinds = [x["kind"] for x in record["taken"]]
    assert kinds == ["lease"] * (1 + dual) + ["configured"] * (1 + dual) + ["guard"]
    assert [x.state for x in leases(settings)] == [ACTIVE] * (2 if dual else 1)
    events.clear()
    assert teardown.finish(record, found, "ended") == 0
    assert [x.state for x in leases(settings)] == [RELEASED] * (2 if dual else 1)
    assert sum(e.startswith("deconfigure") for e in events) == 1 + dual
    assert events.count("unguard") == 1


def _live_lease_for(settings, client: str) -> None:
    """A lease held by a live session (this test process) for ``client``."""
    from tunhelper.store import Owner, Request

    me, started = os.getpid(), liveness.process_start(os.getpid())
    holder = Owner(liveness.this_host(), "boot", me, started, me, started, "tun9")
    pool = settings.pool
    store = open_store(settings.state_dir)
    store.allocate(
        Request(pool.name, pool.first, pool.last, pool.excluded([]), client, holder, pool.address),
        liveness.Liveness(),
    )
    store.close()


def test_a_client_at_its_limit_is_refused_and_takes_nothing(world, capfd) -> None:
    settings, events, _ = world
    limited = dataclasses.replace(settings, max_leases=1, max_sessions=5)  # no takeover
    _live_lease_for(settings, "alice")
    assert session.serve(limited, {}) == 1
    err = capfd.readouterr().err
    assert "--max-leases 1" in err and len(err.splitlines()) == 1
    assert not any(e.startswith("configure") for e in events)
    assert sorted(x.state for x in leases(settings)) == [ACTIVE, RELEASED]  # ours given back


def test_the_limit_counts_only_this_clients_live_sessions(world) -> None:
    settings, events, _ = world
    _live_lease_for(settings, "bob")  # someone else's session does not count
    assert session.serve(dataclasses.replace(settings, max_leases=1, max_sessions=5), {}) == 0
    assert "announce 192.168.3.3" in events


def _burst(settings, client: str, n: int) -> list:
    """``n`` live leases of ``client``, as sessions of one key that allocated at once."""
    from tunhelper.store import Owner, Request

    me, started = os.getpid(), liveness.process_start(os.getpid())
    holder = Owner(liveness.this_host(), "boot", me, started, me, started, "tun9")
    pool = settings.pool
    store = open_store(settings.state_dir)
    try:
        return [
            store.allocate(
                Request(
                    pool.name,
                    pool.first,
                    pool.last,
                    pool.excluded([]),
                    client,
                    holder,
                    pool.address,
                ),
                liveness.Liveness(),
            )
            for _ in range(n)
        ]
    finally:
        store.close()


@pytest.mark.parametrize(("refuse", "me", "verdict"), [
    (False, 2, "end 192.168.3.2 192.168.3.3"),  # the newest ends the older ones
    (False, 0, "keep"),  # an older one leaves it to the newest
    (True, 0, "keep"),  # the oldest stays
    (True, 2, "refuse"),  # a newer one is refused
])  # fmt: skip
def test_a_burst_of_one_keys_sessions_settles_on_the_limit(world, refuse, me, verdict) -> None:
    """Counted after allocating, so that sessions that all passed the first count agree."""
    settings, _, monkeypatch = world
    ended: list[str] = []
    monkeypatch.setattr(liveness, "end", lambda lease: ended.append(lease.address))
    burst = _burst(settings, "alice", 3)
    limited = dataclasses.replace(settings, max_sessions=1, refuse_extra=refuse)
    store = open_store(settings.state_dir)
    try:
        policy.settle_sessions(store, limited, "alice", liveness.Liveness(), burst[me])
        outcome = f"end {' '.join(ended)}" if ended else "keep"
    except session.TunhelperError as e:
        assert "the most --max-sessions 1 allows" in str(e) and not ended
        outcome = "refuse"
    finally:
        store.close()
    assert outcome == verdict


def test_sources_not_filtered_is_a_warning_not_a_refusal(world) -> None:
    """A read-only /proc/sys (a container) must not stop the service; syslog says why."""
    settings, events, monkeypatch = world
    monkeypatch.setattr("tunhelper.platform.filter_sources", _fail(OSError(30, "Read-only")))
    warned = []
    monkeypatch.setattr("tunhelper.log.warning", warned.append)
    assert session.serve(settings, {}) == 0
    assert "announce 192.168.3.2" in events
    assert len(warned) == 1 and "another client's name" in warned[0]


def test_what_the_session_took_survives_the_handover_to_the_slim_holder() -> None:
    import json

    from tunhelper.link import configure

    for applied in (
        configure.PointToPoint(DEVICE, "192.168.3.1", "192.168.3.2"),
        configure.BridgePort(DeviceInfo("tap0", 7, "tap"), BRIDGE, "/var/lib/tunhelper"),
        configure.PrefixAddress(DeviceInfo("tap1", 8, "tap"), "192.168.3.9", 24),
        configure.Routes(DEVICE, ("10.1.0.0/16", "10.2.0.0/16"), None),
    ):
        record = json.loads(json.dumps(configure.to_record(applied)))
        assert configure.from_record(record) == applied


@pytest.fixture
def syslog_records(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str]]:
    """What tunhelper hands to syslog(3): (ident, priority, message)."""
    records: list[tuple[str, int, str]] = []
    ident: list[str] = []
    monkeypatch.setattr(log, "_opened", False)
    monkeypatch.setattr(syslog, "openlog", lambda name, *a: ident.append(name))
    monkeypatch.setattr(syslog, "syslog", lambda p, m: records.append((ident[-1], p, m)))
    return records


def test_syslog_tells_the_admin_start_address_end_and_reason(world, syslog_records) -> None:
    """``journalctl -t tunhelper`` must find every session's start and end, with why."""
    settings, _, _ = world
    assert session.serve(settings, {}) == 0
    lines = [(p, m) for ident, p, m in syslog_records if ident == "tunhelper"]
    assert len(lines) == len(syslog_records)
    (start,) = [m for p, m in lines if m.startswith("session start:")]
    assert "client alice" in start and "address 192.168.3.2" in start and "device tun0" in start
    (end,) = [m for p, m in lines if m.startswith("session end:")]
    assert end == "session end: address 192.168.3.2 device tun0: ended"
    assert {p for p, _ in lines} == {syslog.LOG_INFO}


def test_syslog_records_every_refusal_with_its_reason(world, syslog_records, capfd) -> None:
    settings, _, _ = world
    gatewayless = dataclasses.replace(
        settings,
        pool=Pool.parse("192.168.3.0/24", None, gateway_optional=True),
        bridge=BridgePlan("lan0", managed=False, address=None, prefixlen=24),
    )
    assert session.serve(gatewayless, {}) == 1
    ((ident, priority, message),) = syslog_records
    assert (ident, priority) == ("tunhelper", syslog.LOG_ERR)
    assert "serves ethernet links only" in message
    assert message in capfd.readouterr().err  # the client is told the same reason


@pytest.mark.parametrize("elsewhere", [False, True])
def test_ending_a_session_signals_only_a_process_of_this_host(elsewhere) -> None:
    """A fleet shares one store: another gateway's pid and start time mean nothing here."""
    import subprocess

    from tunhelper import platform
    from tunhelper.store import Lease, liveness

    # The process's own signal state, not the one earlier tests left to this one's
    # children (a serve() that ran here ignores SIGTERM from its end on).
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL);"
        "signal.pthread_sigmask(signal.SIG_SETMASK, []); print('ready', flush=True);"
        "time.sleep(30)"
    )
    sleeper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline().strip() == "ready"
        start = liveness.process_start(sleeper.pid)
        host = "another-gateway" if elsewhere else liveness.this_host()
        lease = Lease(
            "192.168.3.0/24", 2, "192.168.3.2", "alice", ACTIVE, "t", 0.0, None,
            host, platform.boot_id(), sleeper.pid, start, sleeper.pid, start, "tun9",
        )  # fmt: skip
        liveness.end(lease)
        with contextlib.suppress(subprocess.TimeoutExpired):
            sleeper.wait(2)
        assert (sleeper.poll() is None) == elsewhere
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dual_stack_tap_session_announces_the_ipv6_pools_prefix(world, monkeypatch) -> None:
    """On tap the client joins the bridge's segment: prefix6 is the IPv6 pool's, not /128."""
    settings, events, _ = world
    tap = discover.SessionDevice(DeviceInfo("tap0", 7, "tap"), os.getpid(), 0.0)
    monkeypatch.setattr(discover, "find_device", lambda wait, env: tap)
    announced = []
    monkeypatch.setattr(
        "tunhelper.server.session.announce", lambda a, describe: announced.append(a)
    )
    plan = dataclasses.replace(BRIDGE, address6="fd00:3::1", prefixlen6=112)
    settings = dataclasses.replace(settings, pool6=Pool.parse("fd00:3::/112"), bridge=plan)
    assert session.serve(settings, {}) == 0
    assert events == [
        "join thbrtest",
        "guard tap0 ['192.168.3.2', 'fd00:3::2']",
        "hold",
        "unguard",
        "leave thbrtest",
        "end connection",
    ]
    (ann,) = announced
    assert (ann.address, ann.prefix, ann.gateway, ann.mode) == (
        "192.168.3.2",
        24,
        "192.168.3.1",
        "tap",
    )
    assert (ann.address6, ann.prefix6, ann.gateway6) == ("fd00:3::2", 112, "fd00:3::1")
    assert sorted(x.state for x in leases(settings)) == [RELEASED, RELEASED]


def test_a_dual_stack_pool_without_an_ipv6_gateway_refuses_tun(world, capfd) -> None:
    settings, events, _ = world
    settings = dataclasses.replace(
        settings,
        pool6=Pool.parse("fd00:3::/112", None, gateway_optional=True),
        bridge=BridgePlan("lan0", managed=False, address=None, prefixlen=24),
    )
    assert session.serve(settings, {}) == 1
    assert "serves ethernet links only" in capfd.readouterr().err
    assert leases(settings) == [] and events == ["end connection"]


def test_the_managed_bridge_plan_carries_one_gateway_per_family() -> None:

    dual = settings_module.serve_settings(
        ["--pool", "192.168.3.0/24", "--pool", "fd00:3::/112"]
    ).bridge
    assert dual.managed and dual.gateways() == [("192.168.3.1", 24), ("fd00:3::1", 112)]
    only6 = settings_module.serve_settings(["--pool", "fd00:3::/112"]).bridge
    assert only6.gateways() == [("fd00:3::1", 112)]
    admins = settings_module.serve_settings(["--pool", "fd00:3::/112", "--bridge", "lan0"]).bridge
    assert not admins.managed and admins.gateways() == []
    # a record an older helper wrote (no IPv6 fields) still reads
    from tunhelper.link import configure

    old = {"name": "thbrx", "managed": True, "address": "192.168.3.1", "prefixlen": 24}
    record = {"kind": "bridge", "device": DEVICE._asdict(), "plan": old, "state_dir": "/x"}
    assert configure.from_record(record).plan.gateways() == [("192.168.3.1", 24)]
