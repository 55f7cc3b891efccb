"""Shared fixtures. In CI (``CI`` set) an end-to-end test that cannot run fails, never skips."""

from __future__ import annotations

import os

import pytest

from tests.lab import Lab, missing_prerequisites

_skipped: list[str] = []


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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped, which CI does not allow: {_skipped}")
        session.exitstatus = 1
