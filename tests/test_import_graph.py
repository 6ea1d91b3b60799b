"""No import cycles between the package's modules, counting the imports made inside functions.

An import inside a function hides a cycle from Python (the module is complete by the time the
function runs) but not from a reader: two modules that need each other are one module in two
files, and the shared piece belongs in a third (STYLE.md, "No circles between modules").

The graph is read from the source with `ast`, every `import` and `from ... import` anywhere in a
module: at the top, inside functions, and under `if TYPE_CHECKING:` (a type-only need is still a
need; the type belongs below both modules). Imports by string (`importlib.import_module`, the
lazy backend and model registries) are not edges: they name a module the user chose.

A node is a module; a package is a node too, standing for its `__init__.py`. An edge goes to the
deepest module an import names: `from inferbench.backends import base` is an edge to
`inferbench.backends.base`, `from inferbench.models import ModelDef` one to the package
`inferbench.models`. One kind of edge is left out: a module's import of its own ancestor package
(`inferbench.models.shapes` -> `inferbench.models`). Python always initializes a package before
any of its submodules, so that edge adds no order of its own, and it is normal for an
`__init__.py` to re-export its submodules. The package's edges to its submodules, and every edge
to or from any other module, count: a cycle that passes through a package and a module outside
it is still found.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Package name -> source folder, from pyproject's `[tool.setuptools.package-dir]`."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def module_files(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module of the mapped packages (subpackages included) -> its file."""
    modules: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from ... import` reads from (resolving a relative one)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    # In a package's __init__, `.` is the package itself; in a module, its parent.
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source."""
    known = set(known)

    def deepest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            names = [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"] or [source]
        else:
            continue
        found.update(target for target in map(deepest, names) if target is not None)
    return found


def build_graph(sources: dict[str, tuple[ast.AST, bool]]) -> dict[str, set[str]]:
    """Module -> the modules it imports, from each module's (syntax tree, is a package),
    without a module's edges to itself and to its own ancestor packages."""
    graph: dict[str, set[str]] = {}
    for module, (tree, is_package) in sources.items():
        targets = imported_modules(tree, module, is_package, sources)
        graph[module] = {t for t in targets if t != module and not module.startswith(t + ".")}
    return graph


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """The package's import graph, read from its source folders."""
    files = module_files(package_dirs(root))
    trees = {m: (ast.parse(p.read_text(), filename=str(p)), _is_package(p)) for m, p in files.items()}
    return build_graph(trees)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit to hit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(graph.get(start, ()))))]
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through a component's first module, shortest first (breadth-first), as the
    list of modules with the first repeated at the end."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


def test_the_graph_covers_every_folder() -> None:
    graph = import_graph()
    for name in ("inferbench.cli", "inferbench.backends.base", "inferbench.models.base"):
        assert name in graph
    assert "inferbench.compare.env" in graph["inferbench.compare.runs"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = []
    for component in (c for c in strongly_connected(graph) if len(c) > 1):
        cycle = a_cycle(graph, component)
        found.append(" -> ".join(cycle))
        if len(cycle) - 1 < len(component):  # the component holds more than this one cycle
            found[-1] += f" (component: {', '.join(component)})"
    assert not found, "import cycles (the shared piece belongs in a third module):\n" + "\n".join(found)


def test_the_checker_finds_a_cycle_inside_a_function_and_a_relative_import() -> None:
    """The checker itself: a cycle made by an import inside a function, one through a
    relative import, and a submodule importing its own package, which is not a cycle."""
    sources = {
        "p.a": "import p.b\n",
        "p.b": "def f():\n    from p.c import x\n",
        "p.c": "from . import a\n",
        "p.d": "from p import e\n",
        "p.e": "",
        "p": "from p.e import y\n",
        "p.e2": "from p import thing\n",
    }
    graph = build_graph({module: (ast.parse(text), module == "p") for module, text in sources.items()})
    assert graph["p.d"] == {"p.e"}
    assert graph["p.e2"] == set()
    components = [c for c in strongly_connected(graph) if len(c) > 1]
    assert components == [["p.a", "p.b", "p.c"]]
    assert a_cycle(graph, components[0]) == ["p.a", "p.b", "p.c", "p.a"]
