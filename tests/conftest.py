"""Shared fixtures. In CI (``CI`` set) an end-to-end test that cannot run fails, never skips.

Tests marked ``installed`` check the installed Debian package (its launcher, files and
libraries). They are collected only when ``TUNHELPER_TEST_COMMAND`` names that launcher
(tools/test-deb.sh does, and CI runs it); otherwise they are deselected and counted in
the summary, not skipped: there is nothing they could check.

The suite runs in pytest-xdist workers (tools/test.sh): each worker collects, runs and
reports its share, and the controller sees every report, so a skip anywhere fails CI.
"""

from __future__ import annotations

import fcntl
import os

import pytest

from tests.lab import COMMAND_VARIABLE, Lab, installed_command, missing_prerequisites

_skipped: list[str] = []
_not_installed: list[str] = []


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run every end-to-end test)")
    pytest.skip(message)


def require_lab_prerequisites() -> None:
    missing = missing_prerequisites()
    if missing:
        _unavailable(f"this test needs: {', '.join(missing)}")


@pytest.fixture
def make_lab():
    """Factory for labs (sshd in a namespace); every lab is torn down after the test."""
    require_lab_prerequisites()
    labs: list[Lab] = []

    def factory(*args, **kwargs) -> Lab:
        lab = Lab(*args, **kwargs)
        labs.append(lab)
        lab.start()
        return lab

    yield factory
    for lab in labs:
        lab.close()


# Modules that drive pyroute2, psutil and netaddr in-process, through the platform layer
# and the pool: with the tests marked ``installation``, what CI runs in its Debian 13
# venv (PyPI's latest libraries on that release's CPython; .ci/run says why not more).
LIBRARY_MODULES = ("test_linux.py", "test_platform_contract.py", "test_pool.py")
# Tests that run alone, never side by side with another: their bursts of a hundred
# processes at once (100 clients, 500 cycles) starve the timing of tests beside them.
ALONE = ("test_load_e2e.py",)


@pytest.fixture(autouse=True)
def _alone_or_side_by_side(request: pytest.FixtureRequest, tmp_path_factory):
    """One lock file per run, in the temporary directory its xdist workers share: ALONE
    tests hold it exclusively, every other test shared."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if hasattr(request.config, "workerinput") else base
    with open(shared / "side-by-side.lock", "a") as lock:
        alone = request.node.path.name in ALONE
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in LIBRARY_MODULES:
            item.add_marker(pytest.mark.libraries)
    if installed_command() is not None:
        return
    keep = [item for item in items if item.get_closest_marker("installed") is None]
    dropped = [item for item in items if item.get_closest_marker("installed") is not None]
    if dropped:
        _not_installed.extend(item.nodeid for item in dropped)
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist's controller collects nothing: a worker tells it what was deselected."""
    output = getattr(node, "workeroutput", {})
    if not _not_installed:
        _not_installed.extend(output.get("not_installed", []))


def pytest_terminal_summary(terminalreporter) -> None:
    if _not_installed:
        terminalreporter.write_line(
            f"{len(_not_installed)} test(s) of the installed package not run: they need "
            f"{COMMAND_VARIABLE}=/usr/bin/tunhelper after installing the .deb "
            "(bash tools/test-deb.sh does both)"
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its controller reports
        workeroutput["not_installed"] = list(_not_installed)
        return
    if os.environ.get("CI") and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped, which CI does not allow: {_skipped}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole test session (tests/pg.py)."""
    from tests import pg

    why = pg.missing()
    if why is not None:
        _unavailable(f"this test needs {why}")
    if os.geteuid() != 0:
        _unavailable("this test needs root (initdb runs as the postgres user)")
    server = pg.PostgresServer().start()
    yield server
    server.stop()
