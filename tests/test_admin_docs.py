"""The paths and steps a new admin copies must exist and work (issue 19, items 3, 6, 7, 9)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import require_lab_prerequisites
from tests.lab import REPO
from tests.test_contrib import DROP_IN, effective_sshd_config
from tunhelper.options import DESCRIPTION

README = (REPO / "README.md").read_text()
MAN = (REPO / "man" / "tunhelper.8").read_text()
SAMPLE = (REPO / "contrib" / "authorized_keys.sample").read_text()


def commands(text: str) -> list[str]:
    """Every command="..." of a text (man page escapes removed)."""
    return re.findall(r'command="([^"]*)"', text.replace("\\-", "-"))


def test_every_example_names_the_package_path_never_a_bare_name() -> None:
    for name, text in [
        ("README", README),
        ("man", MAN),
        ("sample", SAMPLE),
        ("--help", DESCRIPTION),
    ]:
        found = commands(text)
        assert found, name
        for command in found:
            program = command.split()[0]
            assert program.startswith("/"), (name, command)
            assert program != "/usr/local/bin/tunhelper", (name, command)
        assert 'command="/usr/bin/tunhelper ' in text.replace("\\-", "-"), name


def test_pip_installs_are_told_how_to_find_the_path() -> None:
    for text in (README, MAN.replace("\\-", "-"), SAMPLE, DESCRIPTION):
        assert "command -v tunhelper" in text


def test_deb_install_line_names_the_file_where_the_build_puts_it() -> None:
    assert "apt-get install ./dist/tunhelper_*_all.deb" in README
    assert "apt-get install ./tunhelper_" not in README
    build = (REPO / "tools" / "build-deb.sh").read_text()
    assert "dist" in build


def test_plain_ssh_examples_ask_for_no_terminal() -> None:
    assert "ssh -T -w any root@gateway" in README
    assert "ssh \\-T \\-w any root@gateway" in MAN
    assert "ssh -T -w any root@gateway" in SAMPLE
    assert "`PTY allocation request failed`" in " ".join(README.split())


def test_drop_in_is_current_and_says_to_reload() -> None:
    text = DROP_IN.read_text()
    assert "refuses\n# tap" not in text and "refuses tap" not in text
    assert "tap" in text and "systemctl reload ssh" in text
    assert "systemctl reload ssh" in README and "reload ssh" in MAN


def test_drop_in_silences_doctors_client_alive_warning(tmp_path: Path) -> None:
    require_lab_prerequisites()
    from tunhelper.admin.doctor_sshd import check_sshd

    effective = effective_sshd_config(DROP_IN, tmp_path)
    assert effective.first("ClientAliveInterval") == "15"
    assert effective.first("ClientAliveCountMax") == "3"
    texts = [str(f) for f in check_sshd(effective)]
    assert not [t for t in texts if "ClientAlive" in t and not t.startswith("ok:")], texts


def binary_field(name: str) -> str:
    control = (REPO / "debian" / "control").read_text()
    binary = control.split("\nPackage: tunhelper\n", 1)[1]
    found = re.search(rf"^{name}:(.*?)^\S", binary, re.S | re.M)
    return "" if found is None else found.group(1)


def test_package_depends_on_what_a_client_runs_and_only_suggests_the_server() -> None:
    # connect runs ssh and `client add` ssh-keygen (both openssh-client); a gateway needs
    # openssh-server, but a client must not get it (and its ~50 packages) pulled in.
    assert "openssh-client" in binary_field("Depends")
    assert "openssh-server" not in binary_field("Depends") + binary_field("Recommends")
    assert "openssh-server" in binary_field("Suggests")
    assert "apt-get install openssh-server" in README


def test_readme_nftables_lines_are_valid_nftables(tmp_path: Path) -> None:
    require_lab_prerequisites()
    import shutil
    import subprocess

    nft = shutil.which("nft") or "/usr/sbin/nft"
    block = re.search(r"\n(    table inet tunhelper_nat \{\n.*?\n    \}\n)", README, re.S)
    assert block is not None
    path = tmp_path / "readme.nft"
    path.write_text("\n".join(x[4:] for x in block.group(1).splitlines()) + "\n")
    result = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
