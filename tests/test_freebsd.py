"""The FreeBSD platform module, run on Linux against procstat/ifconfig outputs.

Commands go to a fake runner that answers from the texts in tests/data/freebsd/ (see
the README there for where they come from) and records every argv, so the tests pin
the exact commands. Processes are real where the module asks psutil (the test's own
ancestors, a ``sleep``); only kqueue cannot run here, so hold uses its polling path.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest

from tunhelper.errors import TunhelperError
from tunhelper.link import discover
from tunhelper.platform import DeviceInfo, PlatformError, freebsd
from tunhelper.platform.freebsd import IFCONFIG, PROCSTAT, SYSCTL, Completed

DATA = Path(__file__).parent / "data" / "freebsd"
TUN = DeviceInfo("tun100", 7, "tun")
TAP = DeviceInfo("tap100", 8, "tap")


def sample(name: str, pid: int | None = None) -> str:
    """A sample output; procstat rows are moved to ``pid`` (they were made for 812)."""
    text = (DATA / name).read_text()
    if pid is not None:
        text = re.sub(r"(?m)^ *\d+ ", f"{pid:5d} ", text)
    return text


def ok(text: str = "") -> Completed:
    return Completed(0, text.encode(), "")


def fails(stderr: str, code: int = 1) -> Completed:
    return Completed(code, b"", stderr)


class FakeRunner:
    """Answers commands from sample outputs and records every argv it is given.

    procstat rows come from ``procstat``, by pid (a pid not listed holds nothing);
    any other command must be listed in ``answers`` or the test fails.
    """

    def __init__(
        self,
        answers: dict[tuple[str, ...], Completed | Callable[[], Completed]] | None = None,
        procstat: dict[int, str | Callable[[], str]] | None = None,
    ) -> None:
        self.answers = answers or {}
        self.procstat = procstat or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Completed:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] == [PROCSTAT, "-h", "-f"] and len(argv) == 4:
            rows = self.procstat.get(int(argv[3]), "")
            return ok(rows() if callable(rows) else rows)
        answer = self.answers.get(tuple(argv))
        if answer is None:
            raise AssertionError(f"unexpected command: {argv}")
        return answer() if callable(answer) else answer

    def commands(self, program: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == program]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeRunner]:
    """Install a fake runner and a fake interface index (the interfaces do not exist here)."""
    monkeypatch.setattr(freebsd, "_pipe_answers", {})
    monkeypatch.setattr(freebsd, "_holders", {})

    def install(answers=None, procstat=None, indexes=None) -> FakeRunner:
        runner = FakeRunner(answers, procstat)
        monkeypatch.setattr(freebsd, "runner", runner)
        table = {"tun100": 7, "tap100": 8} if indexes is None else indexes
        monkeypatch.setattr(freebsd, "_if_index", lambda name: table.get(name))
        return runner

    return install


def ancestors(at_least: int = 2) -> list[int]:
    """The test process's real ancestors, nearest first (the module walks them)."""
    pids = [p.pid for p in psutil.Process().parents()]
    if len(pids) < at_least:
        pytest.fail(f"these tests need {at_least} ancestors of the test process, not {pids}")
    return pids


# ---------------------------------------------------------------- the command runner


def test_commands_get_a_clean_environment_and_no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBXO_OPTIONS", "json")  # would turn procstat's table into JSON
    code = (
        "import os, sys; print(sorted(os.environ)); print(repr(sys.stdin.read()));"
        "sys.stderr.write('said no'); sys.exit(3)"
    )
    result = freebsd.run_command([sys.executable, "-c", code])
    assert result.returncode == 3
    assert result.text.splitlines() == ["['LC_ALL', 'PATH']", "''"]
    assert result.stderr == "said no"


def test_a_missing_command_is_a_failed_command_not_an_exception() -> None:
    result = freebsd.run_command(["/nonexistent/ifconfig", "tun0"])
    assert result.returncode == 127 and "No such file" in result.stderr


# ---------------------------------------------------------------- discovery


def test_held_devices_reads_sshds_tun_from_procstat(fake) -> None:
    runner = fake(procstat={812: sample("procstat-f-sshd-tun.txt")})
    assert freebsd.held_devices(812) == ["tun100"]
    assert runner.calls == [[PROCSTAT, "-h", "-f", "812"]]


def test_held_devices_reads_sshd_sessions_tap(fake) -> None:
    fake(procstat={812: sample("procstat-f-sshd-session-tap.txt")})
    assert freebsd.held_devices(812) == ["tap100"]


def test_held_devices_lists_every_tunnel_of_a_connection(fake) -> None:
    fake(procstat={812: sample("procstat-f-sshd-two-tunnels.txt")})
    assert freebsd.held_devices(812) == ["tun100", "tun99"]


def test_held_devices_of_the_listener_and_of_a_gone_process_are_empty(fake) -> None:
    fake(procstat={640: sample("procstat-f-sshd-listener.txt")})
    assert freebsd.held_devices(640) == []
    assert freebsd.held_devices(4242) == []  # procstat printed nothing


def test_held_devices_counts_only_tun_tap_character_devices(fake) -> None:
    # A regular file under a dev/ directory, /dev/tunnel0, vmnet, a socket named like
    # a tunnel, a revoked (destroyed) device: none of them is a session's tunnel.
    fake(procstat={901: sample("procstat-f-decoys.txt")})
    assert freebsd.held_devices(901) == []


def test_held_devices_ignores_rows_of_other_processes(fake) -> None:
    fake(procstat={812: sample("procstat-f-sshd-tun.txt", pid=813)})
    assert freebsd.held_devices(812) == []


def test_procstat_rows_are_parsed_field_by_field() -> None:
    rows = freebsd.parse_procstat_files(sample("procstat-f-sshd-tun.txt"))
    assert [r.fd for r in rows[:4]] == ["text", "cwd", "root", "0"]
    tcp = rows[6]
    assert (tcp.type, tcp.vtype, tcp.name) == ("s", "-", "192.0.2.1:22 198.51.100.7:50312")
    tun = rows[8]
    assert (tun.pid, tun.fd, tun.type, tun.vtype, tun.name) == (812, "5", "v", "c", "/dev/tun100")
    assert [r.type for r in rows[-3:]] == ["p", "p", "p"]
    header = "  PID COMM                FD T V FLAGS    REF  OFFSET PRO NAME        "
    assert freebsd.parse_procstat_files(header) == []


def test_device_info_takes_the_mode_from_the_interface_group(fake) -> None:
    runner = fake(
        {
            (IFCONFIG, "tun100"): ok(sample("ifconfig-tun100-opened.txt")),
            (IFCONFIG, "tap100"): ok(sample("ifconfig-tap100-opened.txt")),
            (IFCONFIG, "tun5"): ok(sample("ifconfig-renamed-epair-tun5.txt")),
            (IFCONFIG, "tun7"): fails("ifconfig: interface tun7 does not exist"),
            (IFCONFIG, "tun8"): ok(sample("ifconfig-tap100-opened.txt")),
        },
        indexes={"tun100": 7, "tap100": 8, "tun5": 3, "tun8": 10},
    )
    assert freebsd.device_info("tun100") == TUN
    assert freebsd.device_info("tap100") == TAP
    assert freebsd.device_info("tun5") is None  # an epair renamed tun5 is no tunnel
    assert freebsd.device_info("tun7") is None
    assert freebsd.device_info("tun8") is None  # ifconfig answered about another interface
    assert freebsd.device_info("tun0;reboot") is None
    assert freebsd.device_info("-alias") is None
    assert runner.commands(IFCONFIG) == [
        [IFCONFIG, "tun100"],
        [IFCONFIG, "tap100"],
        [IFCONFIG, "tun5"],
        [IFCONFIG, "tun7"],
        [IFCONFIG, "tun8"],
    ]


def test_device_info_trusts_the_group_over_the_name(fake) -> None:
    renamed = sample("ifconfig-tun100-opened.txt").replace("tun100:", "tap3:")
    fake({(IFCONFIG, "tap3"): ok(renamed)}, indexes={"tap3": 9})
    assert freebsd.device_info("tap3") == DeviceInfo("tap3", 9, "tun")


def test_discovery_finds_the_nearest_ancestors_device_and_never_looks_sideways(
    fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, *further = ancestors()
    sibling = os.getpid() + 1  # not an ancestor: must never be asked
    runner = fake(
        {(IFCONFIG, "tun100"): ok(sample("ifconfig-tun100-opened.txt"))},
        procstat={
            parent: sample("procstat-f-sshd-tun.txt", pid=parent),
            sibling: sample("procstat-f-sshd-session-tap.txt", pid=sibling),
        },
    )
    use_freebsd_platform(monkeypatch)
    found = discover.find_device(0.5, {"SSH_TUNNEL": "tun100"})
    assert found.device == TUN
    assert found.session_pid == parent
    assert found.session_start == psutil.Process(parent).create_time()
    assert runner.calls == [[PROCSTAT, "-h", "-f", str(parent)], [IFCONFIG, "tun100"]]


def test_discovery_walks_past_ancestors_that_hold_nothing(
    fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = ancestors()
    grandparent = chain[1]
    runner = fake(
        {(IFCONFIG, "tap100"): ok(sample("ifconfig-tap100-opened.txt"))},
        procstat={grandparent: sample("procstat-f-sshd-session-tap.txt", pid=grandparent)},
    )
    use_freebsd_platform(monkeypatch)
    found = discover.find_device(0.5, {})
    assert (found.device, found.session_pid) == (TAP, grandparent)
    assert [c[3] for c in runner.commands(PROCSTAT)] == [str(chain[0]), str(grandparent)]


def test_discovery_refuses_several_tunnels_in_one_connection(
    fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = ancestors()[0]
    fake(procstat={parent: sample("procstat-f-sshd-two-tunnels.txt", pid=parent)})
    use_freebsd_platform(monkeypatch)
    with pytest.raises(TunhelperError, match=r"several tunnels \(tun100, tun99\)"):
        discover.find_device(0.5, {})


def use_freebsd_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the portable discovery at the FreeBSD functions (it calls them by name)."""
    monkeypatch.setattr("tunhelper.platform.held_devices", freebsd.held_devices)
    monkeypatch.setattr("tunhelper.platform.device_info", freebsd.device_info)


# ---------------------------------------------------------------- configuration


def ifconfig(*words: str) -> tuple[str, ...]:
    return (IFCONFIG, *words)


P2P = ("inet", "192.168.3.1", "192.168.3.2", "netmask", "255.255.255.255")


def test_configure_tun_is_one_ifconfig_with_peer_netmask_mtu_and_up(fake) -> None:
    runner = fake({ifconfig("tun100", *P2P, "mtu", "16380", "up"): ok()})
    freebsd.configure_p2p(TUN, "192.168.3.1", "192.168.3.2", 16380)
    assert runner.calls == [list(ifconfig("tun100", *P2P, "mtu", "16380", "up"))]


def test_ipv6_is_refused_in_one_line_before_any_ifconfig(fake) -> None:
    runner = fake({})
    with pytest.raises(PlatformError, match="IPv6 pools are not supported on FreeBSD yet"):
        freebsd.configure_p2p(TUN, "fd00:3::1", "fd00:3::2", 16380)
    assert runner.calls == []


def test_configure_tap_client_address_with_prefix(fake) -> None:
    argv = ifconfig("tap100", "inet", "192.168.3.7/24", "mtu", "16370", "up")
    runner = fake({argv: ok()})
    freebsd.configure_address(TAP, "192.168.3.7", 24, 16370)
    assert runner.calls == [list(argv)]


def test_configure_failure_is_one_line_with_ifconfigs_words(fake) -> None:
    error = "ifconfig: ioctl (SIOCAIFADDR): File exists\n"
    fake({ifconfig("tun100", *P2P, "mtu", "1500", "up"): fails(error)})
    with pytest.raises(freebsd.CommandFailed) as e:
        freebsd.configure_p2p(TUN, "192.168.3.1", "192.168.3.2", 1500)
    assert str(e.value) == (
        "/sbin/ifconfig tun100 inet 192.168.3.1 192.168.3.2 netmask 255.255.255.255 mtu 1500 up: "
        "ifconfig: ioctl (SIOCAIFADDR): File exists"
    )


@pytest.mark.parametrize(
    ("device", "local", "peer"),
    [
        (TUN, "192.168.3.1", "delete"),
        (TUN, "192.168.3.1 -alias", "192.168.3.2"),
        (DeviceInfo("tun100 down", 7, "tun"), "192.168.3.1", "192.168.3.2"),
    ],
)
def test_configure_refuses_anything_but_a_device_and_two_addresses(
    fake, device: DeviceInfo, local: str, peer: str
) -> None:
    runner = fake()
    with pytest.raises(ValueError):
        freebsd.configure_p2p(device, local, peer, 1500)
    assert runner.calls == []


UNDO_TUN = [
    [IFCONFIG, "tun100", "inet", "192.168.3.1", "-alias"],
    [IFCONFIG, "tun100", "down"],
]


SSHD = 812  # the session process, as discovery (or the watch) found it holding tun100
HELD_BY_SSHD = [PROCSTAT, "-h", "-f", str(SSHD)]


def seen_held(runner: FakeRunner, name: str = "tun100") -> None:
    """Discovery asks procstat about the session process and finds the device held."""
    assert name in freebsd.held_devices(SSHD)
    runner.calls.clear()


def test_teardown_while_the_session_holds_the_device_undoes_what_was_done(fake) -> None:
    runner = fake(
        {tuple(argv): ok() for argv in UNDO_TUN},
        procstat={SSHD: sample("procstat-f-sshd-tun.txt")},
    )
    seen_held(runner)
    freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")
    assert runner.calls == [HELD_BY_SSHD, *UNDO_TUN]


def test_teardown_after_sshd_closed_the_device_touches_nothing(fake) -> None:
    # The kernel brought it down and purged its addresses on close, and the interface
    # persists for the next open: another session (pid 4242 here) may own it already.
    rows = iter([sample("procstat-f-sshd-tun.txt")])
    runner = fake(
        procstat={
            SSHD: lambda: next(rows, ""),
            4242: sample("procstat-f-sshd-tun.txt", pid=4242),
        }
    )
    seen_held(runner)
    freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")
    assert runner.calls == [HELD_BY_SSHD]  # asks the session's process only, nobody else


def test_teardown_never_touches_a_device_no_session_process_was_seen_holding(fake) -> None:
    # Our session holds tun100; tun99 is not ours, whoever else may hold it. No
    # ancestors are walked: the module asks only the process it saw holding a device.
    runner = fake(
        procstat={
            SSHD: sample("procstat-f-sshd-tun.txt"),
            os.getppid(): sample("procstat-f-sshd-two-tunnels.txt", pid=os.getppid()),
        }
    )
    seen_held(runner)
    freebsd.deconfigure_p2p(DeviceInfo("tun99", 6, "tun"), "192.168.3.1", "192.168.3.2")
    freebsd.remove_port(DeviceInfo("tap99", 9, "tap"), "bridge0")
    assert runner.calls == []


def test_teardown_tolerates_sshd_closing_the_device_midway(fake) -> None:
    rows = iter([sample("procstat-f-sshd-tun.txt")] * 2)
    gone = fails("ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")
    runner = fake({tuple(UNDO_TUN[0]): gone}, procstat={SSHD: lambda: next(rows, "")})
    seen_held(runner)
    freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")
    assert runner.commands(IFCONFIG) == [UNDO_TUN[0]]  # no "down" on what is not ours


def test_teardown_of_an_address_that_never_got_on_still_brings_the_device_down(fake) -> None:
    missing = fails("ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")
    runner = fake(
        {
            tuple(UNDO_TUN[0]): missing,
            (IFCONFIG, "tun100"): ok(sample("ifconfig-tun100-opened.txt")),
            tuple(UNDO_TUN[1]): ok(),
        },
        procstat={SSHD: sample("procstat-f-sshd-tun.txt")},
    )
    seen_held(runner)
    freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")
    assert runner.commands(IFCONFIG) == [UNDO_TUN[0], [IFCONFIG, "tun100"], UNDO_TUN[1]]


def test_teardown_that_cannot_remove_the_address_is_reported(fake) -> None:
    runner = fake(
        {
            tuple(UNDO_TUN[0]): fails("ifconfig: ioctl (SIOCDIFADDR): Operation not permitted"),
            (IFCONFIG, "tun100"): ok(sample("ifconfig-tun100-configured.txt")),
        },
        procstat={SSHD: sample("procstat-f-sshd-tun.txt")},
    )
    seen_held(runner)
    with pytest.raises(freebsd.CommandFailed, match="-alias: .*Operation not permitted") as e:
        freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")
    assert isinstance(e.value, PlatformError)  # the one error the platform raises


def test_teardown_failure_while_still_held_is_reported(fake) -> None:
    runner = fake(
        {tuple(UNDO_TUN[0]): ok(), tuple(UNDO_TUN[1]): fails("ifconfig: something broke")},
        procstat={SSHD: sample("procstat-f-sshd-tun.txt")},
    )
    seen_held(runner)
    with pytest.raises(freebsd.CommandFailed, match="tun100 down: ifconfig: something broke"):
        freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")


def test_ifconfig_status_after_close_shows_what_teardown_relies_on() -> None:
    """The closed state the module leaves alone: down, no address, nobody holds it."""
    closed = sample("ifconfig-tun100-closed.txt")
    assert freebsd.parse_ifconfig(closed) == freebsd.InterfaceStatus("tun100", ("tun",), (), ())
    assert "UP," not in closed and "inet " not in closed and "Opened by" not in closed
    configured = freebsd.parse_ifconfig(sample("ifconfig-tun100-configured.txt"))
    assert configured is not None and configured.inet == ("192.168.3.1",)


# ---------------------------------------------------------------- tap on a bridge


def test_create_bridge_renames_what_ifconfig_creates_and_configures_it(fake) -> None:
    address = (IFCONFIG, "thbr1234", "inet", "192.168.3.1/24", "mtu", "16370", "up")
    runner = fake(
        {
            (IFCONFIG, "bridge", "create"): ok("bridge0\n"),
            (IFCONFIG, "bridge0", "name", "thbr1234"): ok("thbr1234\n"),
            address: ok(),
        }
    )
    freebsd.create_bridge("thbr1234", "192.168.3.1", 24, 16370)
    assert runner.calls == [
        [IFCONFIG, "bridge", "create"],
        [IFCONFIG, "bridge0", "name", "thbr1234"],
        list(address),
    ]


def test_add_address_puts_a_further_ipv4_gateway_on_the_bridge(fake) -> None:
    argv = (IFCONFIG, "thbr1234", "inet", "192.168.3.1/24", "alias")
    runner = fake({argv: ok()})
    freebsd.add_address("thbr1234", "192.168.3.1", 24)
    assert runner.calls == [list(argv)]


@pytest.mark.parametrize(
    "step",
    [
        lambda: freebsd.create_bridge("thbr1234", "fd00:3::1", 112, 16370),
        lambda: freebsd.add_address("thbr1234", "fd00:3::1", 112),
        lambda: freebsd.configure_address(DeviceInfo("tap0", 3, "tap"), "fd00:3::2", 112, 1500),
    ],
)
def test_ipv6_on_tap_is_refused_before_any_command(fake, step) -> None:
    runner = fake({})
    with pytest.raises(PlatformError, match="IPv6 pools are not supported on FreeBSD yet"):
        step()
    assert runner.calls == []


def test_bridge_ports_are_read_from_ifconfig(fake) -> None:
    fake({(IFCONFIG, "bridge0"): ok(sample("ifconfig-bridge0.txt"))})
    assert freebsd.bridge_ports("bridge0") == ["tap101", "tap100"]
    fake({(IFCONFIG, "bridge9"): fails("ifconfig: interface bridge9 does not exist\n")})
    assert freebsd.bridge_ports("bridge9") is None


def test_add_port_sets_the_mtu_then_adds_the_member(fake) -> None:
    empty = "bridge7: flags=8802<BROADCAST,SIMPLEX,MULTICAST> metric 0 mtu 1500\n\tgroups: bridge\n"
    runner = fake(
        {
            (IFCONFIG, "bridge7"): ok(empty),
            (IFCONFIG, "tap100", "mtu", "9000"): ok(),
            (IFCONFIG, "bridge7", "addm", "tap100", "up"): ok(),
        }
    )
    freebsd.add_port(TAP, "bridge7", 9000)
    assert runner.calls == [
        [IFCONFIG, "bridge7"],
        [IFCONFIG, "tap100", "mtu", "9000"],
        [IFCONFIG, "bridge7", "addm", "tap100", "up"],
    ]


def test_add_port_is_idempotent_and_refuses_a_tun(fake) -> None:
    runner = fake({(IFCONFIG, "bridge0"): ok(sample("ifconfig-bridge0.txt"))})
    freebsd.add_port(TAP, "bridge0", 16370)
    assert runner.calls == [[IFCONFIG, "bridge0"]]
    with pytest.raises(ValueError):
        freebsd.add_port(TUN, "bridge0", 16370)


def test_remove_port_only_while_the_session_holds_it(fake) -> None:
    deletem = [IFCONFIG, "bridge0", "deletem", "tap100"]
    runner = fake(
        {tuple(deletem): ok()}, procstat={SSHD: sample("procstat-f-sshd-session-tap.txt")}
    )
    seen_held(runner, "tap100")
    freebsd.remove_port(TAP, "bridge0")
    assert runner.calls == [HELD_BY_SSHD, deletem]

    closed = fake({tuple(deletem): ok()})  # sshd closed the tap: membership is inert
    freebsd.remove_port(TAP, "bridge0")
    assert closed.commands(IFCONFIG) == []


def test_delete_bridge(fake) -> None:
    runner = fake({(IFCONFIG, "bridge0", "destroy"): ok()})
    freebsd.delete_bridge("bridge0")
    assert runner.calls == [[IFCONFIG, "bridge0", "destroy"]]
    with pytest.raises(ValueError):
        freebsd.delete_bridge("-a")


# ---------------------------------------------------------------- boot id, pipes


def test_boot_id_is_kern_boot_id_in_hex(fake) -> None:
    raw = bytes(range(0xA0, 0xB0))
    runner = fake({(SYSCTL, "-b", "kern.boot_id"): Completed(0, raw, "")})
    assert freebsd.boot_id() == "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
    assert runner.calls == [[SYSCTL, "-b", "kern.boot_id"]]


def test_boot_id_without_kern_boot_id_is_constant(fake) -> None:
    fake({(SYSCTL, "-b", "kern.boot_id"): fails("sysctl: unknown oid 'kern.boot_id'")})
    assert freebsd.boot_id() == freebsd.boot_id() == "freebsd-without-kern.boot_id"


def test_boot_id_that_cannot_be_read_is_a_clear_error(fake) -> None:
    fake({(SYSCTL, "-b", "kern.boot_id"): fails("sysctl: kern.boot_id: Device not configured")})
    with pytest.raises(PlatformError, match="could not read the boot id .*Device not configured"):
        freebsd.boot_id()


def test_holds_pipe_sees_any_pipe_and_asks_procstat_at_a_modest_rate(
    fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = fake(
        procstat={
            812: sample("procstat-f-sshd-tun.txt"),
            640: sample("procstat-f-sshd-listener.txt", pid=640),
        }
    )
    assert freebsd.holds_pipe(812, 123456)
    assert freebsd.holds_pipe(812, 123456)  # asked again at once: not run again
    assert not freebsd.holds_pipe(640, 123456)
    assert len(runner.calls) == 2
    monkeypatch.setattr(freebsd, "PIPE_CHECK_INTERVAL", 0.0)
    assert freebsd.holds_pipe(812, 123456)
    assert len(runner.calls) == 3


# ---------------------------------------------------------------- hold


@pytest.fixture
def session_process():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freebsd, "DEVICE_CHECK_INTERVAL", 0.05)
    monkeypatch.setattr(freebsd, "PROCESS_POLL_INTERVAL", 0.02)


class Overdue(Exception):
    pass


def hold(proc: subprocess.Popen, start: float | None = None, limit: float = 10.0) -> str:
    """wait_for_end on ``proc``, failed by a watchdog signal if it has not ended in time."""
    if start is None:
        start = psutil.Process(proc.pid).create_time()

    def overdue(_signum, _frame):
        raise Overdue(f"wait_for_end still waiting after {limit:g}s")

    old = signal.signal(signal.SIGALRM, overdue)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        kind, counters = freebsd.wait_for_end(proc.pid, start, TUN)
        assert counters is None  # a FreeBSD device persists: link_counters reads it
        return kind
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_hold_ends_when_the_session_process_exits(fake, quick, session_process) -> None:
    pid = session_process.pid
    fake(procstat={pid: sample("procstat-f-sshd-tun.txt", pid=pid)})
    threading.Timer(0.3, session_process.kill).start()
    started = time.monotonic()
    assert hold(session_process) == "process"
    assert 0.25 < time.monotonic() - started < 5


def test_hold_ends_at_once_for_a_reused_pid(fake, quick, session_process) -> None:
    runner = fake()
    assert hold(session_process, start=1.0) == "process"
    assert runner.calls == []


def test_hold_ends_when_the_session_closes_the_device(fake, quick, session_process) -> None:
    pid = session_process.pid
    rows = iter([sample("procstat-f-sshd-tun.txt", pid=pid)] * 3)
    closed = sample("procstat-f-sshd-listener.txt", pid=pid)
    runner = fake(procstat={pid: lambda: next(rows, closed)})
    assert hold(session_process) == "device"
    assert runner.calls == [[PROCSTAT, "-h", "-f", str(pid)]] * 4


def test_hold_reports_the_exit_when_process_and_device_go_together(
    fake, quick, session_process
) -> None:
    pid = session_process.pid
    answers = iter([sample("procstat-f-sshd-tun.txt", pid=pid)])

    def procstat() -> str:
        rows = next(answers, None)
        if rows is None:  # the second look: sshd exits, closing its device
            session_process.kill()
            session_process.wait()
            return ""
        return rows

    fake(procstat={pid: procstat})
    assert hold(session_process) == "process"


def test_teardown_after_the_watch_saw_the_device_closed_touches_nothing(
    fake, quick, session_process
) -> None:
    """The watch asks about the session process it is given; teardown then asks it too."""
    pid = session_process.pid
    rows = iter([sample("procstat-f-sshd-tun.txt", pid=pid)] * 2)
    runner = fake(procstat={pid: lambda: next(rows, "")})
    assert hold(session_process) == "device"
    freebsd.deconfigure_p2p(TUN, "192.168.3.1", "192.168.3.2")
    assert runner.commands(IFCONFIG) == []
    assert {c[3] for c in runner.calls} == {str(pid)}


def test_hold_ends_when_the_device_is_destroyed(fake, quick, session_process, monkeypatch) -> None:
    pid = session_process.pid
    fake(procstat={pid: sample("procstat-f-sshd-tun.txt", pid=pid)})
    indexes = iter([7, 7])
    monkeypatch.setattr(freebsd, "_if_index", lambda name: next(indexes, None))
    assert hold(session_process) == "device"


def test_hold_is_interrupted_by_a_signal_handler_that_raises(fake, quick, session_process) -> None:
    pid = session_process.pid
    fake(procstat={pid: sample("procstat-f-sshd-tun.txt", pid=pid)})

    class Stop(Exception):
        pass

    def handler(_signum, _frame):
        raise Stop

    old = signal.signal(signal.SIGUSR1, handler)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    try:
        with pytest.raises(Stop):
            hold(session_process)
    finally:
        signal.signal(signal.SIGUSR1, old)


# ---------------------------------------------------------------- the interface


def run_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip()


def test_freebsd_is_chosen_once_by_sys_platform() -> None:
    code = (
        "import sys; sys.platform = {!r}; import tunhelper.platform as p;"
        "print(p.held_devices.__wrapped__.__module__, p.wait_for_end.__wrapped__.__module__)"
    )
    assert run_python(code.format("freebsd14")) == (
        "tunhelper.platform.freebsd tunhelper.platform.freebsd"
    )
    assert run_python(code.format("linux")) == (
        "tunhelper.platform.linux.proc tunhelper.platform.linux.watch"
    )
    with pytest.raises(subprocess.CalledProcessError) as e:
        run_python(code.format("darwin"))
    assert "does not support darwin (Linux and FreeBSD only)" in e.value.stderr


def test_importing_the_platform_stays_cheap() -> None:
    code = (
        "import sys; import tunhelper.platform.freebsd; import tunhelper.platform;"
        "print(sorted(m for m in ('psutil', 'pyroute2') if m in sys.modules))"
    )
    assert run_python(code) == "[]"
    on_linux = "import sys, tunhelper.platform; print('tunhelper.platform.freebsd' in sys.modules)"
    assert run_python(on_linux) == "False"


# ---------------------------------------------------------------- routes

ROUTE, NETSTAT = freebsd.ROUTE, freebsd.NETSTAT


NETSTAT_EMPTY = "Routing tables\n\nInternet:\nDestination Gateway Flags Netif Expire\n"


def netstat_with(*rows: str) -> Completed:
    return ok(NETSTAT_EMPTY + "".join(f"{row}\n" for row in rows))


@pytest.mark.parametrize(
    ("device", "network", "via", "argv", "row"),
    [
        (TUN, "10.88.0.0/24", None, ["-net", "10.88.0.0/24", "-interface", "tun100"],
         "10.88.0.0/24 link#7 U1 tun100"),
        (TUN, "fd00:8::/64", None, ["-inet6", "-net", "fd00:8::/64", "-interface", "tun100"],
         "fd00:8::/64 link#7 U1 tun100"),
        (TAP, "10.88.0.0/24", "192.168.3.2", ["-net", "10.88.0.0/24", "192.168.3.2"],
         "10.88.0.0/24 192.168.3.2 UG1 tap100"),
        (TAP, "fd00:9::/64", "fd00:3::2", ["-inet6", "-net", "fd00:9::/64", "fd00:3::2"],
         "fd00:9::/64 fd00:3::2 UG1 tap100"),
    ],
)  # fmt: skip
def test_add_and_delete_route_name_the_family_for_ipv6(
    fake, device, network, via, argv, row
) -> None:
    family = "inet6" if argv[0] == "-inet6" else "inet"
    add = (ROUTE, "-n", "add", *argv, "-proto1")
    delete = (ROUTE, "-n", "delete", *argv)
    netstat = (NETSTAT, "-rn", "-f", family)
    runner = fake({add: ok(), delete: ok(), netstat: netstat_with(row)})
    freebsd.add_route(device, network, via)
    freebsd.delete_route(device, network, via)
    assert runner.calls == [list(add), list(netstat), list(delete)]


@pytest.mark.parametrize(
    ("via", "row"),
    [
        (None, "10.88.0.0/24 link#3 US vtnet0"),  # the admin's own (no flag 1)
        (None, "10.88.0.0/24 link#3 U1 tun7"),  # ours, but another session's device
        ("192.168.3.2", "10.88.0.0/24 192.168.3.9 UG1 tap100"),  # another gateway
        (None, "10.88.1.0/24 link#7 U1 tun100"),  # another network
    ],
)
def test_delete_route_leaves_any_route_but_its_own(fake, via, row) -> None:
    device = TUN if via is None else TAP
    runner = fake({(NETSTAT, "-rn", "-f", "inet"): netstat_with(row)})
    freebsd.delete_route(device, "10.88.0.0/24", via)
    assert runner.commands(ROUTE) == []


def test_delete_route_that_fails_while_the_route_stays_is_reported(fake) -> None:
    row = "10.88.0.0/24 link#7 U1 tun100"
    delete = (ROUTE, "-n", "delete", "-net", "10.88.0.0/24", "-interface", "tun100")
    fake({(NETSTAT, "-rn", "-f", "inet"): netstat_with(row), delete: fails("route: busy")})
    with pytest.raises(PlatformError, match="route: busy"):
        freebsd.delete_route(TUN, "10.88.0.0/24", None)


def test_source_filtering_is_refused_with_a_portable_errno() -> None:
    with pytest.raises(PlatformError) as e:
        freebsd.filter_sources(TUN)
    assert e.value.errno == errno.EOPNOTSUPP
    assert str(e.value) == "source filtering is not implemented on FreeBSD"


def test_add_route_refuses_anything_but_a_network_and_an_address(fake) -> None:
    runner = fake({})
    for network, via in (("fd00:8::/64", "-interface"), ("-net", None), ("fd00:8::1/64", None)):
        with pytest.raises(ValueError):
            freebsd.add_route(TUN, network, via)
    assert runner.calls == []


def test_our_routes_are_those_flagged_1_of_both_families(fake) -> None:
    runner = fake(
        {
            (NETSTAT, "-rn", "-f", "inet"): ok(sample("netstat-rn-inet.txt")),
            (NETSTAT, "-rn", "-f", "inet6"): ok(sample("netstat-rn-inet6.txt")),
        }
    )
    assert freebsd.our_routes() == [
        ("10.88.0.0/24", "tun100"),
        ("fd00:8::/64", "tun100"),
        ("fd00:9::/64", "tap100"),
    ]
    assert len(runner.calls) == 2
