"""The installed Debian package, as an admin gets it from ``apt-get install ./tunhelper_*.deb``.

Run by tools/test-deb.sh with Debian's python3 and ``TUNHELPER_TEST_COMMAND=/usr/bin/tunhelper``;
deselected otherwise (see conftest.py).
"""

from __future__ import annotations

import gzip
import importlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import REPO, tunhelper_command
from tunhelper import __version__

pytestmark = pytest.mark.installed

DIST_PACKAGES = "/usr/lib/python3/dist-packages/"
EXAMPLES = Path("/usr/share/doc/tunhelper/examples")
GATEWAY = "192.168.3.1"


def plant(directory: Path, marker: Path) -> None:
    """Modules a hijacked launcher would import first; each leaves ``marker`` if run."""
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("re", "sitecustomize", "usercustomize"):
        (directory / f"{name}.py").write_text(code)
    package = directory / "tunhelper"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(code)
    (package / "cli.py").write_text(code + "def main():\n    return 0\n")
    os.chmod(directory, 0o755)


def hostile_environment(directory: Path) -> dict[str, str]:
    """PYTHON* variables pointing at the planted modules, as a client could send them."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(directory),
        "PYTHONSTARTUP": str(directory / "re.py"),
        "PYTHONINSPECT": "1",
        "PYTHONUSERBASE": str(directory),
    }


def test_the_suite_runs_on_the_installed_package_and_debians_libraries() -> None:
    """Otherwise this run would test the checkout or a venv's libraries, not the .deb."""
    assert tunhelper_command() == "/usr/bin/tunhelper"
    for name, package in [
        ("tunhelper", "tunhelper"),
        ("pyroute2", "python3-pyroute2"),
        ("psutil", "python3-psutil"),
        ("netaddr", "python3-netaddr"),
    ]:
        path = importlib.import_module(name).__file__
        assert path is not None and path.startswith(DIST_PACKAGES), (name, path)
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
        assert owner.startswith(f"{package}:"), (path, owner)


def test_launcher_ignores_pythonpath_and_other_python_variables(tmp_path: Path) -> None:
    directory, marker = tmp_path / "planted", tmp_path / "ran"
    plant(directory, marker)
    env = hostile_environment(directory)
    # The planted modules do run in a Python that honours the environment...
    subprocess.run([sys.executable, "-c", "import re"], env=env, input="", check=True)
    assert marker.exists()
    marker.unlink()
    # ...and do not in the launcher sshd runs as root.
    result = subprocess.run(
        [tunhelper_command(), "--version"], env=env, input="", capture_output=True, text=True
    )
    assert result.stdout == f"tunhelper {__version__}\n", result.stderr
    assert not marker.exists(), marker.read_text()


@pytest.mark.e2e
def test_client_sent_pythonpath_runs_nothing_in_the_installed_forced_command(
    make_lab,
) -> None:
    """AcceptEnv lets everything through, and the client plants modules to import."""
    lab = make_lab(sshd_options={"AcceptEnv": "*"})
    directory, marker = lab.dir / "planted", lab.dir / "ran"
    plant(directory, marker)
    sent = hostile_environment(directory)
    del sent["PATH"]
    setenv = ["-o", "SetEnv=" + " ".join(f"{k}={v}" for k, v in sent.items())]
    session = lab.add_client().connect(*setenv)
    assert session.read_address() == "192.168.3.2", session.stderr()
    session.configure_client_side()
    assert session.ping(GATEWAY)
    (lease,) = lab.active_leases()
    os.kill(lease["pid"], signal.SIGTERM)
    assert session.wait(10) is not None
    assert not marker.exists(), marker.read_text()


def test_state_directory_is_roots_alone_and_is_the_default() -> None:
    st = os.stat("/var/lib/tunhelper")
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    tmpfiles = Path("/usr/lib/tmpfiles.d/tunhelper.conf").read_text().splitlines()
    assert "d /var/lib/tunhelper 0700 root root -" in tmpfiles
    result = subprocess.run([tunhelper_command(), "leases"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split()[:2] == ["address", "state"]


def test_package_installs_its_files_and_touches_nothing_in_etc() -> None:
    files = subprocess.run(
        ["dpkg", "-L", "tunhelper"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for path in (
        "/usr/bin/tunhelper",
        "/usr/share/man/man8/tunhelper.8.gz",
        "/usr/lib/tmpfiles.d/tunhelper.conf",
        f"{EXAMPLES}/authorized_keys.sample",
        f"{EXAMPLES}/sshd_config.d/tunhelper.conf.example",
    ):
        assert path in files
    assert not [f for f in files if f.startswith("/etc")]
    assert not os.path.exists("/etc/ssh/sshd_config.d/tunhelper.conf")
    shipped = EXAMPLES / "sshd_config.d" / "tunhelper.conf.example"
    source = REPO / "contrib" / "sshd_config.d" / "tunhelper.conf.example"
    assert shipped.read_text() == source.read_text()


def test_man_tunhelper_renders_the_installed_page() -> None:
    installed = gzip.decompress(Path("/usr/share/man/man8/tunhelper.8.gz").read_bytes())
    assert installed.decode() == (REPO / "man" / "tunhelper.8").read_text()
    result = subprocess.run(
        ["man", "--warnings=w", "tunhelper"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "MANWIDTH": "100", "LANG": "C.UTF-8"},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for text in ("TUNHELPER(8)", "--pool NET", "tunhelper leases", "journalctl -t tunhelper"):
        assert text in result.stdout
