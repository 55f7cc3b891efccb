"""The session's unwinding, with the OS parts replaced: every failure gives back what it took.

Only the platform calls and discovery are faked; the lease store is the real one.
"""

from __future__ import annotations

import os
import syslog
from pathlib import Path

import pytest

from tunhelper import discover, log, session
from tunhelper.hold import Interrupted
from tunhelper.lease import ACTIVE, RELEASED, open_store
from tunhelper.platform import DeviceInfo
from tunhelper.pool import Pool

DEVICE = DeviceInfo("tun0", 42, "tun")


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
    monkeypatch.setattr("tunhelper.session.announce", lambda a: events.append(f"announce {a}"))
    monkeypatch.setattr("tunhelper.session.hold", lambda f: events.append("hold") or "ended")
    settings = session.Settings(
        pool=Pool.parse("192.168.3.0/24"),
        state_dir=str(tmp_path / "state"),
        wait=0.1,
        mtu=None,
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
        "announce 192.168.3.2",
        "hold",
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
        ("tunhelper.session.announce", session.TunhelperError("client gone"), True),
        ("tunhelper.session.hold", Interrupted(15), True),
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
    settings = session.Settings(
        pool=Pool.parse("192.168.3.0/30"),
        state_dir=settings.state_dir,
        wait=0.1,
        mtu=None,
        client="bob",
    )
    store = open_store(settings.state_dir)
    from tunhelper.lease import Holder, Request

    me, started = os.getpid(), session.holder.process_start(os.getpid())  # a live holder
    holder = Holder(session.holder.this_host(), "boot", me, started, me, started, "tun9")
    pool = settings.pool
    store.allocate(
        Request(pool.name, pool.first, pool.last, pool.excluded([]), "alice", holder, pool.address),
        session.holder.Liveness(),
    )
    store.close()
    assert session.serve(settings, {}) == 1
    assert "exhausted" in capfd.readouterr().err
    assert not any(e.startswith("configure") for e in events)
    assert [x.state for x in leases(settings)] == [ACTIVE]  # alice's lease untouched


def test_tap_refused_before_anything_is_leased(world, monkeypatch, capfd) -> None:
    settings, events, _ = world
    tap = discover.SessionDevice(DeviceInfo("tap0", 7, "tap"), os.getpid(), 0.0)
    monkeypatch.setattr(discover, "find_device", lambda wait, env: tap)
    assert session.serve(settings, {}) == 1
    assert "tap (ethernet)" in capfd.readouterr().err
    assert leases(settings) == []
    assert events == ["end connection"]


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
    settings, _, monkeypatch = world
    tap = discover.SessionDevice(DeviceInfo("tap0", 7, "tap"), os.getpid(), 0.0)
    monkeypatch.setattr(discover, "find_device", lambda wait, env: tap)
    assert session.serve(settings, {}) == 1
    ((ident, priority, message),) = syslog_records
    assert (ident, priority) == ("tunhelper", syslog.LOG_ERR)
    assert "tap (ethernet)" in message
    assert message in capfd.readouterr().err  # the client is told the same reason
