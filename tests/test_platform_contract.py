"""Every backend provides every name of every concern, the same way; the boundary
turns whatever a backend raises into the one error type.

Both backends import on Linux (FreeBSD's runs its commands through a runner the
FreeBSD tests fake), so both are held to the contract here.
"""

from __future__ import annotations

import errno
import inspect
import signal
import subprocess
import sys
import types

import pytest

import tunhelper.platform as platform
from tunhelper.platform import PlatformError, contract, freebsd, linux, wrap_errors
from tunhelper.platform.contract import CONCERNS

BACKENDS = [linux, freebsd]


def _contract(concern: type, name: str) -> inspect.Signature:
    """The provider method's signature as a backend function has it (without self)."""
    signature = inspect.signature(getattr(concern, name))
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def test_the_names_are_listed_once_by_concern_and_exported() -> None:
    names = [n for concern in CONCERNS.values() for n in contract.names(concern)]
    assert len(names) == len(set(names)), "a name is listed under two concerns"
    assert names == list(platform.NAMES)
    assert set(names) <= set(platform.__all__)
    for name in names:
        assert callable(getattr(platform, name)), name
    every = {n for c in CONCERNS.values() for n in vars(c) if not n.startswith("_")}
    assert every == set(names), "a provider method is not abstract, so not in the contract"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_every_backend_provides_every_name_with_the_contracts_signature(backend) -> None:
    for key, concern in CONCERNS.items():
        for name in contract.names(concern):
            assert hasattr(backend, name), f"{backend.__name__} lacks {name} ({key})"
            ours = inspect.signature(getattr(backend, name))
            reference = _contract(concern, name)
            assert ours == reference, f"{backend.__name__}.{name}{ours} != {reference}"
    assert all(issubclass(e, Exception) for e in backend.NATIVE_ERRORS)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_every_backend_declares_its_capabilities_among_the_optional_ones(backend) -> None:
    assert isinstance(backend.CAPABILITIES, frozenset)
    assert set(contract.OPTIONAL) >= backend.CAPABILITIES


def test_a_wrong_signature_or_a_missing_name_would_fail_the_contract() -> None:
    """Control: the comparison above sees a backend that drifted."""

    def configure_p2p(device, local, peer):  # the mtu forgotten
        pass

    assert inspect.signature(configure_p2p) != _contract(contract.Addresses, "configure_p2p")
    assert not hasattr(types.SimpleNamespace(), "guard_link")


def test_lacks_names_each_missing_capability_in_one_line(monkeypatch) -> None:
    monkeypatch.setattr(platform, "CAPABILITIES", frozenset({"dns"}))
    lines = platform.lacks("ipv6", "dns", "source_guard")
    assert len(lines) == 2
    assert lines[0].startswith("IPv6 pools") and "not supported on" in lines[0]
    assert all("\n" not in line for line in lines)
    assert platform.lacks("dns") == []


def test_the_exports_have_the_contracts_signatures() -> None:
    for concern in CONCERNS.values():
        for name in contract.names(concern):
            assert inspect.signature(getattr(platform, name)) == _contract(concern, name)


class Native(Exception):
    """A backend's own error, declared to the boundary."""


class Interrupted(Exception):
    """What a signal handler raises: never translated."""


@pytest.mark.parametrize(
    ("raised", "code", "text"),
    [
        (OSError(errno.ENODEV, "No such device"), errno.ENODEV, "No such device"),
        (FileNotFoundError(errno.ENOENT, "No such file", "/x/y"), errno.ENOENT, "/x/y: No such"),
        (OSError("resolvectl failed:\n  bad"), None, "resolvectl failed: bad"),
        (ValueError("bad interface name 'a b'"), errno.EINVAL, "bad interface name"),
        (Native("netlink said no"), None, "netlink said no"),
    ],
)
def test_the_boundary_turns_backend_errors_into_platform_errors(raised, code, text) -> None:
    def step(device: str) -> None:
        raise raised

    wrapped = wrap_errors(step, (Native,))
    with pytest.raises(PlatformError) as e:
        wrapped("tun0")
    assert isinstance(e.value, OSError)
    assert e.value.errno == code
    assert str(e.value).startswith(text) and "\n" not in str(e.value)
    assert e.value.__cause__ is raised


def test_the_boundary_lets_other_exceptions_through_untouched() -> None:
    mine = PlatformError(errno.EPERM, "already translated")

    def raising(error: BaseException):
        def step() -> None:
            raise error

        return wrap_errors(step)

    with pytest.raises(PlatformError) as e:
        raising(mine)()
    assert e.value is mine
    for error in (Interrupted("SIGTERM"), KeyboardInterrupt(), RuntimeError("a bug")):
        with pytest.raises(type(error)) as caught:
            raising(error)()
        assert caught.value is error


def test_a_real_backend_error_arrives_as_platform_error(tmp_path) -> None:
    """Through the real exports: a bad name (ValueError) and a kernel refusal (OSError)."""
    with pytest.raises(PlatformError) as e:
        platform.strict_rp_filter(platform.DeviceInfo("../../x", 1, "tun"))
    assert e.value.errno == errno.EINVAL
    gone = platform.DeviceInfo("thnone0", 999999, "tun")
    with pytest.raises(PlatformError) as e:
        platform.configure_p2p(gone, "192.168.3.1", "192.168.3.2", 1500)
    assert e.value.errno in (errno.ENODEV, errno.EPERM)


def test_a_signal_handler_interrupts_the_watch_untouched() -> None:
    """wait_for_end through the boundary: a handler's exception is not a PlatformError."""
    code = r"""
import os, signal, subprocess, sys, threading
import tunhelper.platform as p
class Stop(Exception): pass
def handler(signum, frame): raise Stop
signal.signal(signal.SIGUSR1, handler)
sleeper = subprocess.Popen(["sleep", "30"])
start = p.process_start(sleeper.pid)
dev = p.DeviceInfo("lo", 1, "tun")
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
try:
    p.wait_for_end(sleeper.pid, start, dev)
except Stop:
    print("stopped")
finally:
    sleeper.kill()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "stopped", out.stderr


@pytest.mark.parametrize("backend", ["linux", "freebsd"])
def test_importing_the_boundary_stays_lean(backend: str) -> None:
    """The slim holder imports the platform for the life of a session."""
    code = (
        f"import sys; sys.platform = {backend!r}; import tunhelper.platform;"
        "heavy = ('psutil', 'pyroute2', 'netaddr', 'dataclasses', 'typing', 'psycopg');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_same_process_agrees_across_backends() -> None:
    """Linux reads /proc, FreeBSD asks psutil: the same answers for the same process."""
    import os

    start = linux.process_start(os.getpid())
    assert start is not None
    for backend in BACKENDS:
        assert backend.same_process(os.getpid(), start)
        assert not backend.same_process(os.getpid(), start - 10)
        assert backend.process_start(os.getpid()) == pytest.approx(start, abs=0.02)


def test_end_process_signals_only_the_same_process() -> None:
    """A reused pid (another start time) is never signalled; the same process is."""
    for backend in BACKENDS:
        # SIGTERM's default action in the child, whatever an earlier test in this
        # process left (a serve() ignores SIGTERM from its end on)
        sleeper = subprocess.Popen(
            ["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)
        )
        try:
            start = linux.process_start(sleeper.pid)
            assert not backend.end_process(sleeper.pid, start - 10)
            assert sleeper.poll() is None
            assert backend.end_process(sleeper.pid, start)
            assert sleeper.wait(10) == -signal.SIGTERM
            assert not backend.end_process(sleeper.pid, start)  # reaped: gone
        finally:
            sleeper.kill()
            sleeper.wait()
    assert signal.SIGUSR1  # the handler test above needs it on this platform
