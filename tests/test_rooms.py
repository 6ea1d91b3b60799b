"""The package's rooms: the folder-to-package mapping is written once, every folder of code is
installed, and no room reaches into another room's private names.

A room is a subpackage of `inferbench` (`sweep`, `cell`, `compare`, ...); the modules at the
top of the package (config, errors, status, util, cli, ...) are the shared vocabulary every
room may use. A name that starts with `_` is its module's own: another module of the same room
may borrow it, a module of another room may not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from inferbench import layout
from tests.test_import_graph import ROOT, _absolute, module_files, package_dirs

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def room_of(module: str) -> str:
    """`inferbench.sweep.runner` -> `inferbench.sweep`; a top-level module is its own room."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def private_reaches(sources: dict[str, tuple[ast.AST, bool]]) -> list[str]:
    """`module imports room.module._name` lines, for every import of a private name (or a
    private module) across rooms; `sources` maps a module to (its syntax tree, is a package)."""
    found = []
    for module, (tree, is_package) in sources.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node, module, is_package)
                targets = [(source, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name.rpartition(".")[::2] for alias in node.names]
            else:
                continue
            for source, name in targets:
                if not source.startswith("inferbench") or room_of(source) == room_of(module):
                    continue
                if name.startswith("_") or any(part.startswith("_") for part in source.split(".")[1:]):
                    found.append(f"{module} imports {source}.{name}")
    return found


def test_the_layout_is_the_one_pyproject_installs() -> None:
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert {folder: name for name, folder in package_dir.items()} == layout.LAYOUT


def test_every_folder_of_code_is_an_installed_package() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join((package, *init.parent.relative_to(folder).parts))
        for package, folder in package_dirs().items()
        for init in folder.rglob("__init__.py")
    }
    assert on_disk == listed


def test_every_room_says_what_it_owns() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    rooms = [p.parent for p in (ROOT / "bench").glob("*/__init__.py")]
    assert len(rooms) >= 8
    for room in rooms:
        assert ast.get_docstring(ast.parse((room / "__init__.py").read_text())), f"{room.name}: no docstring"
        assert f"`{room.name}/`" in architecture, f"docs/architecture.md does not describe {room.name}/"


def test_no_room_imports_another_rooms_private_names() -> None:
    files = module_files(package_dirs())
    trees = {
        m: (ast.parse(p.read_text(), filename=str(p)), p.name == "__init__.py") for m, p in files.items()
    }
    assert private_reaches(trees) == []


def test_the_check_finds_a_reach_into_another_room() -> None:
    sources = {
        "inferbench.ab.core": "from inferbench.compare.core import _judge, judge\n",
        "inferbench.ab.rounds": "from inferbench.ab.core import _pairs\nfrom . import _local\n",
        "inferbench.report.page": "def f():\n    import inferbench.compare._hidden\n",
    }
    trees = {m: (ast.parse(text), False) for m, text in sources.items()}
    assert private_reaches(trees) == [
        "inferbench.ab.core imports inferbench.compare.core._judge",
        "inferbench.report.page imports inferbench.compare._hidden",
    ]


def test_the_ab_agent_finds_a_side_from_before_the_rooms(tmp_path: Path) -> None:
    """A base commit from before bench/ had rooms keeps the runner at `inferbench.runner`; the
    agent, which runs with that side's code, finds it there and the new place first."""
    old, new = tmp_path / "old" / "inferbench", tmp_path / "new" / "inferbench"
    for package in (old, new, new / "sweep"):
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
    (old / "runner.py").write_text("WHERE = 'top'\n")
    (new / "sweep" / "runner.py").write_text("WHERE = 'room'\n")
    agent = ROOT / "bench" / "ab" / "agent.py"
    probe = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('agent', {str(agent)!r})\n"
        "agent = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(agent)\n"
        "print(agent._side_module('sweep', 'runner').WHERE)\n"
    )
    for tree, expected in ((old.parent, "top"), (new.parent, "room")):
        done = subprocess.run(
            [sys.executable, "-P", "-c", probe],
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == expected
