"""The README's server section, followed as written, in the lab (issue 19).

Package-independent steps only (the package install is tools/test-deb.sh's): the
sshd settings the README lists, the `tunhelper client add` line it shows, then the
client's `tunhelper connect root@gateway` and a ping to the gateway. Each step is read
from README.md, so the docs cannot drift from the product unnoticed. Where the lab
must differ, it says so: its sshd listens in a namespace and reads its own config
and authorized_keys (--authorized-keys), and its leases live in the lab's state
directory, not the host's /var/lib/tunhelper (--state-dir appended).
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.lab import REPO, Client, run, tunhelper_command

pytestmark = pytest.mark.installation  # the README's commands, as installed

README = (REPO / "README.md").read_text()
SERVER = README.split("\n## On the server\n", 1)[1].split("\n## ", 1)[0]
CLIENT = README.split("\n## On the client\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str) -> list[list[str]]:
    """Every indented block of a README section, as its lines without the indent."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current and line.strip():
            blocks.append(current)
            current = []
    return [*blocks, current] if current else blocks


def sshd_settings() -> dict[str, str]:
    (block,) = [b for b in code_blocks(SERVER) if b[0].startswith("PermitTunnel ")]
    return dict(line.split(None, 1) for line in block)


def client_add_line() -> list[str]:
    (line,) = [x for b in code_blocks(SERVER) for x in b if x.startswith("tunhelper client add")]
    return shlex.split(line.replace('"$(cat laptop.pub)"', "KEY"))


def test_the_readme_server_section_works_as_written(make_lab) -> None:
    settings = sshd_settings()
    assert {"PermitTunnel", "PermitRootLogin", "ExposeAuthInfo"} <= set(settings)
    contrib = (REPO / "contrib" / "sshd_config.d" / "tunhelper.conf.example").read_text()
    for key, value in settings.items():  # the drop-in the README points to says the same
        assert re.search(rf"^{key} {re.escape(value)}$", contrib, re.M), key
    lab = make_lab(sshd_options=settings)
    assert "sshd -t && systemctl reload ssh" in SERVER  # the lab starts its sshd afresh

    laptop = Client(lab, "laptop", 2)
    lab.clients.append(laptop)
    laptop.setup()
    argv = client_add_line()
    assert argv[:4] == ["tunhelper", "client", "add", "laptop"]
    argv = [laptop.public_key if a == "KEY" else a for a in argv]
    cut = argv.index("--")
    argv[cut:cut] = ["--authorized-keys", str(lab.dir / "authorized_keys")]
    added = run(tunhelper_command(), *argv[1:], "--state-dir", lab.state_dir, check=False)
    assert added.returncode == 0, added.stderr
    assert (
        'command="' + tunhelper_command() + " --pool 192.168.3.0/24"
        in (lab.dir / "authorized_keys").read_text()
    )

    (shown,) = [x for b in code_blocks(CLIENT) for x in b if "tunhelper connect" in x]
    assert shown.startswith("# tunhelper connect root@gateway")
    (status_line,) = [x for b in code_blocks(CLIENT) for x in b if x.startswith("tun0 ")]
    gateway = status_line.split()[3]
    conn = laptop.tunhelper_connect()  # root@gateway is the lab's server
    status = conn.status()
    assert status is not None and " gateway " in status, conn.stderr()
    assert status.split()[3] == gateway  # the README's gateway: the pool's first host
    assert laptop.sessions[-1].ping(gateway), "the README's link does not carry traffic"
    assert conn.interrupt() == 0
