"""Small shared helpers: atomic writes, names that must stay one folder entry, and cache keys."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from inferbench.errors import UserError


def one_component(name: str, what: str) -> str:
    """`name` if it is one plain folder entry: not empty, no `/` (nor `\\` or NUL), no
    leading `.` (which also rules out `.` and `..`). Names that reach a path from a flag or a
    file are checked here, where they enter, so none can climb out of its folder."""
    if not isinstance(name, str) or not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise UserError(f"{what} must be one folder name (no '/', '..', leading '.', or empty); got {name!r}")
    return name


def path_under(root: Path, name: str, what: str) -> Path:
    """`root / name`, refused unless it resolves inside `root` (a symlink planted where the
    file goes would otherwise carry the write elsewhere)."""
    path = root / one_component(name, what)
    if not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{what} {name!r} leads outside {root}")
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a unique temporary name and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
