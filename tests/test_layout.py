"""The layout holds: no import cycles, and no OS specifics outside the platform layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tunhelper"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every tunhelper module this file imports, at any depth, except for type checking."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    known = {_module(p) for p in PACKAGE.rglob("*.py")}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import submodule" needs the submodule; anything else, the module
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in subs if n in known] or [node.module]
        else:
            continue
        out.update(n for n in names if n in known and n.startswith("tunhelper"))
    return out - {"tunhelper", _module(path)}


def test_no_import_cycles() -> None:
    graph = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # a package's modules may be reached through it: importing tunhelper.x.y runs x/__init__
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*stack, nxt])
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# Linux specifics: kernel paths, netlink and ioctl constants, sysctls.
_OS_SPECIFIC = re.compile(r"\"/(proc|sys)/|/dev/net/tun\"|NETLINK_|RTM_[A-Z]|IFF_[A-Z]|ioctl")


def test_nothing_outside_the_platform_layer_names_linux_internals() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "platform" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _OS_SPECIFIC.search(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
