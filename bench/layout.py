"""Where the code lives: the checkout's folders and the packages they install as.

The one copy of the folder-to-package mapping (pyproject's `[tool.setuptools.package-dir]` says
the same, and a test holds them together). Read by `ab`'s sides, which import each side's code
through a link tree laid out as the distribution installs it; by the Makefile, whose type check
reads the same link tree (`python -m inferbench.layout LINK_DIR`); and by whatever needs the
checkout (the run cache, the commit history records, a base tree's profiles).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The checkout this inferbench runs from (bench/layout.py -> the repository root).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Source folder (relative to a checkout) -> the package it installs as.
LAYOUT = {"bench": "inferbench", "backends": "inferbench.backends", "models": "inferbench.models"}
#: The folder of the shipped profiles, relative to a checkout.
PROFILES = Path("bench") / "profiles"


def is_source_tree(path: Path) -> bool:
    """Whether `path` is an InferBench checkout: each mapped folder is a package."""
    return all((path / folder / "__init__.py").is_file() for folder in LAYOUT)


def working_tree() -> Path | None:
    """The checkout this inferbench runs from, if it is one (an editable install)."""
    return PROJECT_ROOT if is_source_tree(PROJECT_ROOT) else None


def profile_file(source: Path, name: str) -> Path:
    """Where a checkout keeps the profile called `name`."""
    return source / PROFILES / f"{name}.toml"


def link_tree(source: Path, where: Path) -> Path:
    """A folder that imports `inferbench` from `source`'s folders, laid out as LAYOUT installs
    them: the top package's entries linked one by one, each subpackage folder linked whole."""
    package = where / "inferbench"
    package.mkdir(parents=True)
    top = next(folder for folder, name in LAYOUT.items() if name == "inferbench")
    for entry in sorted((source / top).iterdir()):
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry.resolve())
    for folder, name in LAYOUT.items():
        if folder != top:
            (package / name.removeprefix("inferbench.").replace(".", "/")).symlink_to(
                (source / folder).resolve()
            )
    return where


def main(argv: list[str]) -> int:
    """`python -m inferbench.layout DIR`: DIR (emptied first) becomes this checkout's link tree."""
    import shutil

    if len(argv) != 1:
        print("usage: python -m inferbench.layout LINK_DIR", file=sys.stderr)
        return 2
    where = Path(argv[0])
    shutil.rmtree(where, ignore_errors=True)
    link_tree(PROJECT_ROOT, where)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
