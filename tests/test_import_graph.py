"""The import graph of the product: no cycle, and the layers import only downwards.

Every import statement counts, wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING`` (a cycle dodged by a late import is still a cycle of concepts).

    python3 tests/test_import_graph.py          # prints the modules, edges and any cycle

Layers (docs/DESIGN.md): virtio/ (driver side, layouts, clauses) knows nothing above it; targets/
(transports, models, mutants) stands on virtio/; fixtures/ and suites/ on both; reports/ on
virtio/ only. Product code never imports tests/; a transport never imports pytest.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("virtio", "targets", "fixtures", "suites", "reports")
# What each top-level package may import from the others.
ALLOWED = {
    "virtio": set(),
    "targets": {"virtio"},
    "reports": {"virtio"},
    "fixtures": {"virtio", "targets", "reports"},
    "suites": {"virtio", "fixtures"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    if not level:
        return target or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph(roots=PRODUCT) -> dict[str, set[str]]:
    """module -> the product modules it imports (``from pkg import name`` counts name when it is a
    module, else pkg)."""
    files = {module_name(p): p for r in roots for p in sorted((ROOT / r).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in files:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def external_imports(roots=PRODUCT) -> dict[str, set[str]]:
    """module -> top-level names of what it imports from outside the product."""
    out: dict[str, set[str]] = {}
    for r in roots:
        for path in sorted((ROOT / r).rglob("*.py")):
            names = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names.add(node.module.split(".")[0])
            out[module_name(path)] = names
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_import_downwards():
    bad = []
    for mod, deps in import_graph().items():
        top = mod.split(".")[0]
        for d in deps:
            other = d.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{mod} imports {d}")
    assert not bad, "\n".join(bad)


def test_product_never_imports_tests_and_transports_never_pytest():
    ext = external_imports()
    bad = [f"{m} imports tests" for m, names in ext.items() if "tests" in names]
    bad += [f"{m} imports pytest" for m, names in ext.items()
            if m.split(".")[0] in ("virtio", "targets") and "pytest" in names]
    assert not bad, "\n".join(bad)


if __name__ == "__main__":
    g = import_graph()
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges among them")
    found = cycles(g)
    for c in found:
        print("cycle:", " <-> ".join(c))
    print("no import cycle" if not found else f"{len(found)} cycle(s)")
    sys.exit(1 if found else 0)
