"""The two sides of an A/B run: which code, run by which interpreter.

A side is a source tree (a git ref checked out into a temporary worktree, or a directory)
plus a Python interpreter (default: this one). Its processes import *that tree's* code: they
start with `python -P` (no folder of ours in front) and PYTHONPATH pointing at a link tree
that lays the tree out the way the distribution installs it (`inferbench` -> bench/,
`inferbench.backends` -> backends/, `inferbench.models` -> models/). PYTHONPATH comes before
the editable install's import hook, so the installed copy does not win. A side given only as
an interpreter (`--base-python`) runs the working tree's code with that interpreter's
packages: an engine upgrade in a second virtual environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from inferbench.errors import UserError
from inferbench.layout import is_source_tree, link_tree, working_tree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Side:
    """One side's code and interpreter; `link` is None when the interpreter's installed copy
    of inferbench is the code (no source tree)."""

    label: str  # "base" or "head"
    described: str  # what the user asked for, for the report
    python: str
    source: Path | None = None
    link: Path | None = None
    commit: str | None = None

    def environ(self) -> dict[str, str]:
        """Environment of this side's processes (the agent and, through it, its workers)."""
        environ = dict(os.environ)
        environ.pop("PYTHONPATH", None)
        if self.link is not None:
            environ["PYTHONPATH"] = str(self.link)
        return environ


def _linked(source: Path, where: Path) -> Path:
    if not is_source_tree(source):
        raise UserError(f"{source} is not an InferBench source tree (needs bench/, backends/, models/)")
    return link_tree(source, where)


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise UserError(f"git {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout.strip()


def resolve_commit(repo: Path, ref: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _python(path: str | None, flag: str) -> str:
    if path is None:
        return sys.executable
    found = shutil.which(path) if os.sep not in path else path
    if not found or not os.access(found, os.X_OK):
        raise UserError(f"{flag}: no Python interpreter at {path}")
    return str(Path(found).absolute())


@contextmanager
def prepared_sides(
    base: str | None,
    head: str | None,
    base_python: str | None = None,
    head_python: str | None = None,
    repo: Path | None = None,
) -> Iterator[tuple[Side, Side]]:
    """Both sides, ready to run; temporary worktrees and link trees are removed afterwards."""
    if base is None and base_python is None:
        raise UserError("ab needs --base REF_OR_DIR (or --base-python PATH to compare interpreters)")
    repo = repo or Path.cwd()
    scratch = Path(tempfile.mkdtemp(prefix="inferbench-ab-"))
    worktrees: list[Path] = []
    try:
        sides = []
        for label, spec, python, flag in (
            ("base", base, base_python, "--base-python"),
            ("head", head, head_python, "--head-python"),
        ):
            interpreter = _python(python, flag)
            source, commit = _source(label, spec, repo, scratch, worktrees)
            link = _linked(source, scratch / f"link-{label}") if source is not None else None
            described = spec or ("working tree" if source is not None else "installed inferbench")
            if python:
                described += f" with {interpreter}"
            sides.append(Side(label, described, interpreter, source, link, commit))
        yield sides[0], sides[1]
    finally:
        for tree in worktrees:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)
        if worktrees:
            subprocess.run(["git", "-C", str(repo), "worktree", "prune"], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _source(
    label: str, spec: str | None, repo: Path, scratch: Path, worktrees: list[Path]
) -> tuple[Path | None, str | None]:
    """(source tree, commit) for one side: a directory, a git ref, or the working tree."""
    if spec is None:
        return working_tree(), None
    path = Path(spec)
    if path.is_dir():
        if not is_source_tree(path):
            raise UserError(
                f"--{label} {spec}: not an InferBench source tree (needs bench/, backends/, models/)"
            )
        return path.resolve(), None
    commit = resolve_commit(repo, spec)
    if commit is None:
        raise UserError(f"--{label} {spec!r} is neither a directory nor a git ref of {repo}")
    tree = scratch / f"src-{label}"
    _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    worktrees.append(tree)
    log.info("%s: %s checked out at %s (%s)", label, spec, tree, commit[:12])
    return tree, commit
