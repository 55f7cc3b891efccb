"""The layout holds: imports run one way down the layers, no import cycles, and no OS
specifics outside the platform layer.

The layer contract (BRIEF.md, docs/architecture.md) is :data:`LAYERS`: every top-level
module or package of tunhelper sits in exactly one layer, and may import only from its
own layer or the ones below it. Within a layer, imports between its members must not
form a cycle, and members joined by :data:`INDEPENDENT` must not import each other at
all. Imports inside functions count, as they run; imports only for type checking do not
count for cycles (they never run) but do for the direction between layers (they still
tie a lower layer to a higher one). The known violations are :data:`EXCEPTIONS`, each
named with the issue that removes it: an exception that no longer happens fails the
test too, so the list can only shrink.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tunhelper"

# Top to bottom. A member is a top-level module or package of tunhelper. ``commands``,
# the command table, is data that names its parsers and entry points as strings and
# imports them only when a command runs, so that any layer may read it (the parsers'
# epilog, doctor's and ``client add``'s command words): it sits at the bottom, which
# also means it may import nothing of tunhelper but the ground.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "cli"),
    ("admin", "client", "server"),
    ("settings", "options", "conffile", "protocol", "pool", "link", "liveness"),
    ("store", "platform"),
    ("errors", "log", "defaults", "family", "signals", "statedir", "commands"),
)
# Members of one layer that must not import each other at all: the lease store is free
# of OS code, and the platform knows nothing of leases; the client and the server share
# code only through the core (link/).
INDEPENDENT: tuple[frozenset[str], ...] = (
    frozenset({"store", "platform"}),
    frozenset({"client", "server"}),
)
# (importer, imported) -> the issue that removes it. Whole module names, as imported.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def _imports(path: Path, root: Path = PACKAGE, *, typing: bool = False) -> set[str]:
    """Every tunhelper module this file imports, at any depth (functions included);
    with ``typing``, the imports made only for type checking too."""
    tree = ast.parse(path.read_text())
    skip = set() if typing else _type_checking_nodes(tree)
    known = {_module(p, root) for p in root.rglob("*.py")}
    this = _module(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import submodule" needs the submodule; anything else, the module
            subs = [f"{base}.{a.name}" for a in node.names]
            names = [n for n in subs if n in known] or [base]
        else:
            continue
        out.update(n for n in names if n in known and n.startswith("tunhelper"))
    return out - {"tunhelper", this}


def import_graph(root: Path = PACKAGE, *, typing: bool = False) -> dict[str, set[str]]:
    """Module -> the tunhelper modules it imports, for the package at ``root``."""
    return {_module(p, root): _imports(p, root, typing=typing) for p in root.rglob("*.py")}


def _member(module: str) -> str:
    """The top-level module or package of tunhelper that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*stack, nxt])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    return cycles


def layer_violations(
    graph: Mapping[str, Iterable[str]],
    layers: tuple[tuple[str, ...], ...] = LAYERS,
    independent: tuple[frozenset[str], ...] = INDEPENDENT,
) -> list[str]:
    """Every import against the contract, as "importer -> imported: why"; empty if none."""
    rank = {member: i for i, layer in enumerate(layers) for member in layer}
    found = []
    for module in sorted(graph):
        if _member(module) and _member(module) not in rank:
            found.append(f"{module}: {_member(module)} is in no layer (add it to LAYERS)")
    same_layer: dict[str, set[str]] = {}
    for module, imported in sorted(graph.items()):
        a = _member(module)
        for target in sorted(imported):
            b = _member(target)
            if not a or not b or a == b or a not in rank or b not in rank:
                continue
            if rank[b] < rank[a]:
                found.append(f"{module} -> {target}: {b} is a layer above {a}")
            elif rank[b] == rank[a]:
                if frozenset({a, b}) in independent:
                    found.append(f"{module} -> {target}: {a} and {b} are independent")
                same_layer.setdefault(a, set()).add(b)
    for cycle in _cycles(same_layer):
        found.append(f"{' -> '.join(cycle)}: a cycle within one layer")
    return found


def _without_exceptions(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in EXCEPTIONS} for m, ts in graph.items()}


def test_imports_follow_the_layers() -> None:
    graph = import_graph(typing=True)
    violations = layer_violations(_without_exceptions(graph))
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_every_exception_to_the_layers_still_happens() -> None:
    """A fixed violation leaves the list: it cannot be taken again unnoticed."""
    graph = import_graph(typing=True)
    stale = [
        f"{a} -> {b} ({why})" for (a, b), why in EXCEPTIONS.items() if b not in graph.get(a, ())
    ]
    assert not stale, "no longer imported, remove from EXCEPTIONS: " + "; ".join(stale)
    # and each is a violation indeed, not an allowed import listed for nothing
    allowed = _without_exceptions(graph)
    for a, b in EXCEPTIONS:
        with_it = {**allowed, a: allowed.get(a, set()) | {b}}
        assert set(layer_violations(with_it)) - set(layer_violations(allowed)), (a, b)


def test_every_member_of_the_package_is_in_one_layer() -> None:
    members = [m for layer in LAYERS for m in layer]
    assert len(members) == len(set(members)), members
    present = {_member(m) for m in import_graph()} - {""}
    assert present <= set(members), sorted(present - set(members))


def test_a_wrong_import_fails_the_contract(tmp_path: Path) -> None:
    """Control: an upward import inside a function, in a copy of the package, is seen;
    so is a cycle within a layer and an import between independent members."""
    copy = tmp_path / "tunhelper"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert not layer_violations(_without_exceptions(import_graph(copy, typing=True)))
    with open(copy / "errors.py", "a") as f:
        f.write("\n\ndef _wrong():\n    from tunhelper.server import session  # noqa\n")
    with open(copy / "pool.py", "a") as f:
        f.write("\n\nfrom . import settings  # noqa\n")
    violations = layer_violations(_without_exceptions(import_graph(copy, typing=True)))
    assert "tunhelper.errors -> tunhelper.server.session: server is a layer above errors" in (
        violations
    )
    cycles = [v for v in violations if v.endswith("a cycle within one layer")]
    assert any("pool -> settings" in v for v in cycles), violations
    synthetic = {"tunhelper.store.base": {"tunhelper.platform.linux"}}
    assert layer_violations(synthetic) == [
        "tunhelper.store.base -> tunhelper.platform.linux: store and platform are independent"
    ]
    assert layer_violations({"tunhelper.newthing": set()}) == [
        "tunhelper.newthing: newthing is in no layer (add it to LAYERS)"
    ]


def test_no_import_cycles() -> None:
    # a package's modules may be reached through it: importing tunhelper.x.y runs x/__init__
    cycles = _cycles(import_graph())
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
