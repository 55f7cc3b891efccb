"""debian/ stays in step with the Python project: version and dependency lower bounds."""

from __future__ import annotations

import configparser
import re

from tests.lab import REPO
from tunhelper import __version__

DEBIAN = REPO / "debian"


def lower_bounds_in_setup_cfg() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    out = {}
    for line in config["options"]["install_requires"].split("\n"):
        if line.strip():
            name, version = re.fullmatch(r"\s*([\w.-]+)>=([\w.]+)\s*", line).groups()
            out[name.lower()] = version
    return out


def package_depends() -> dict[str, str]:
    """``Depends`` of the binary package: Debian name -> minimum version."""
    control = (DEBIAN / "control").read_text()
    binary = control.split("\nPackage: tunhelper\n", 1)[1]
    field = re.search(r"^Depends:(.*?)^\S", binary, re.S | re.M).group(1)
    return dict(re.findall(r"([\w.+-]+) \(>= ([\w.~+-]+)\)", field))


def test_debian_version_is_the_package_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"tunhelper ({__version__}) "), first  # native: no revision


def test_debian_depends_on_debian_12s_libraries_at_setup_cfgs_lower_bounds() -> None:
    wanted = {f"python3-{name}": version for name, version in lower_bounds_in_setup_cfg().items()}
    assert wanted == package_depends()
