"""Import structure of a package: cycles between its modules, and private names imported across modules.

Reads the source with ``ast`` (nothing is imported). Every ``import`` counts,
at module level or inside a function (a lazy import still ties the two
modules together); imports under ``if TYPE_CHECKING:`` do not (they never run).
An import of ``pkg.sub`` is an edge to ``pkg.sub`` only, not to ``pkg``'s
``__init__`` (which Python runs first, but which every submodule would then
depend on); ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module of the package, else to ``pkg``.

Usage::

    python tools/import_cycles.py [package directory, default: tfprune]

prints every cycle (one shortest cycle per strongly connected component of
the module graph, and the component's modules) and every
``from pkg.mod import _private`` across modules, and exits with status 1 when
there is any.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Import", "module_files", "imports", "import_graph", "cycles", "shortest_cycle", "private_imports", "main"]


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package.

    ``source``: the importing module; ``target``: the imported module (dotted);
    ``names``: the names taken by a ``from`` import (empty for ``import x``);
    ``line``: 1-based line in ``source``'s file; ``lazy``: inside a function.
    """

    source: str
    target: str
    names: tuple[str, ...]
    line: int
    lazy: bool


def module_files(package_dir: str | Path) -> dict[str, Path]:
    """Dotted module name -> file for every ``.py`` file under ``package_dir`` (``pkg/__init__.py`` -> ``pkg``)."""
    root = Path(package_dir).resolve()
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST) -> list[tuple[ast.AST, bool]]:
    """Every Import / ImportFrom node with whether it is inside a function, skipping ``if TYPE_CHECKING:`` bodies."""
    found: list[tuple[ast.AST, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, lazy))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, lazy)
            else:
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def imports(package_dir: str | Path) -> list[Import]:
    """Every import of a module of the package by a module of the package (relative imports resolved)."""
    files = module_files(package_dir)
    modules = set(files)
    top = Path(package_dir).resolve().name
    out: list[Import] = []
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, lazy in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == top or alias.name.startswith(top + "."):
                        target = alias.name
                        while target not in modules and "." in target:
                            target = target.rsplit(".", 1)[0]
                        out.append(Import(name, target, (), node.lineno, lazy))
                continue
            if node.level:  # relative: from . import x / from ..a import b
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == top or mod.startswith(top + ".")):
                continue
            plain = [a.name for a in node.names if f"{mod}.{a.name}" not in modules]
            for a in node.names:
                if f"{mod}.{a.name}" in modules:
                    out.append(Import(name, f"{mod}.{a.name}", (), node.lineno, lazy))
            if plain:
                out.append(Import(name, mod, tuple(plain), node.lineno, lazy))
    return out


def import_graph(package_dir: str | Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (itself left out)."""
    graph: dict[str, set[str]] = {m: set() for m in module_files(package_dir)}
    for imp in imports(package_dir):
        if imp.target != imp.source and imp.target in graph:
            graph[imp.source].add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, sorted by first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(out)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]`` (breadth-first)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return [start]


def private_imports(package_dir: str | Path) -> list[Import]:
    """``from pkg.mod import _name`` where ``_name`` (not a dunder) is private to another module of the package."""
    out = []
    for imp in imports(package_dir):
        private = tuple(n for n in imp.names if n.startswith("_") and not n.startswith("__"))
        if private and imp.target != imp.source:
            out.append(Import(imp.source, imp.target, private, imp.line, imp.lazy))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the cycles and private imports of the package (default ``tfprune``); 1 when there is any, else 0."""
    args = sys.argv[1:] if argv is None else argv
    package_dir = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "tfprune"
    if not (package_dir / "__init__.py").is_file():
        print(f"{package_dir} is not a package directory (no __init__.py). Fix: pass the package's folder, e.g. tfprune", file=sys.stderr)
        return 2
    graph = import_graph(package_dir)
    found = cycles(graph)
    private = private_imports(package_dir)
    for comp in found:
        print("cycle: " + " -> ".join(shortest_cycle(graph, comp)) + f"  (component: {', '.join(comp)})")
    for imp in private:
        print(f"private import: {imp.source}:{imp.line} imports {', '.join(imp.names)} from {imp.target}")
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges, {len(found)} cycle(s), {len(private)} private import(s)")
    return 1 if found or private else 0


if __name__ == "__main__":
    sys.exit(main())
