"""Caches an engine reads by path itself, under the same manifest as every artifact.

A TensorRT engine or timing cache is one file the engine's API takes as bytes or as a path;
inductor's cache is a folder the compiler fills and reads by itself (kernels it dlopens,
graphs it unpickles). Neither fits `inferbench.store.artifacts.obtain`, whose builder writes a whole
folder once, yet a tampered file in either is code or numbers that would be served. So each
gets a manifest (sizes and sha256, checked once per process per file as for artifacts):

- one file: its manifest sits at `<cache>/manifests/<folder>/<name>.json`, outside the
  engine's folder, which keeps holding only what the engine reads (`publish_file`,
  `read_published`, and `guarded_file` for a file the engine rewrites itself);
- a folder: `MANIFEST.json` inside it; files it does not vouch for are removed before the
  engine looks, and what the engine wrote is listed after (`guarded_folder`).

Each is checked and written under a lock, so two processes sharing a cache never pair one's
bytes with the other's manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferbench.store.artifacts import MANIFEST, MANIFEST_VERSION, file_digest, key_lock
from inferbench.util import atomic_write_bytes

log = logging.getLogger(__name__)


def file_manifest_path(path: Path) -> Path:
    """Where a single cached file's manifest lives: `<cache>/manifests/<folder>/<name>.json`."""
    return path.parent.parent / "manifests" / path.parent.name / f"{path.name}.json"


def publish_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`, then its manifest."""
    with key_lock(file_manifest_path(path)):
        atomic_write_bytes(path, data)
        _write_listing(file_manifest_path(path), {path.name: _facts(data)})


def read_published(path: Path) -> bytes | None:
    """The file's bytes if its manifest vouches for them (the size and sha256 of the very bytes
    returned), else None: missing, written before manifests, torn or tampered with."""
    if not path.is_file():
        return None
    with key_lock(file_manifest_path(path)):
        listed = _listing(file_manifest_path(path)).get(path.name)
        try:
            data = path.read_bytes()
        except OSError:  # removed since: as if never written
            return None
    if listed == _facts(data):
        return data
    log.warning("cached %s does not match its manifest (%s): not used", path, _why(listed))
    return None


@contextlib.contextmanager
def guarded_file(path: Path) -> Iterator[bool]:
    """For a file the engine reads and rewrites by path itself (Torch-TensorRT's timing cache):
    it is removed unless its manifest vouches for it, and whatever the engine leaves there is
    listed afterwards. Yields whether it was kept."""
    manifest = file_manifest_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # where the engine will write it
    with key_lock(manifest):
        kept = not path.is_file() or _vouches(path, _listing(manifest).get(path.name))
        if not kept:
            log.warning("cached %s does not match its manifest: removed before use", path)
            path.unlink(missing_ok=True)
        yield kept and path.is_file()
        if path.is_file():
            _write_listing(manifest, {path.name: _file_facts(path)})


@contextlib.contextmanager
def guarded_folder(folder: Path) -> Iterator[list[str]]:
    """For a cache folder the engine fills and reads itself: every file its manifest does not
    vouch for is removed before the engine looks, and what the engine wrote is listed
    afterwards. Yields the names removed. The engine should do all its writing inside: a file
    written outside is unlisted, and the next guard removes it."""
    folder.mkdir(parents=True, exist_ok=True)
    with key_lock(folder):
        listed = _listing(folder / MANIFEST)
        removed = []
        for path in _cached_files(folder):
            name = str(path.relative_to(folder))
            if not _vouches(path, listed.get(name)):
                path.unlink(missing_ok=True)
                removed.append(name)
        if removed:
            log.warning("%s: removed %d file(s) its manifest does not vouch for", folder, len(removed))
        yield removed
        files = {str(p.relative_to(folder)): _file_facts(p) for p in _cached_files(folder)}
        _write_listing(folder / MANIFEST, files)


def _cached_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)


def _facts(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _file_facts(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": file_digest(path)}


def _vouches(path: Path, listed: Any) -> bool:
    """The size first: a torn file is found without hashing it."""
    if not isinstance(listed, dict) or path.stat().st_size != listed.get("size"):
        return False
    return file_digest(path) == listed.get("sha256")


def _why(listed: Any) -> str:
    return "none written" if listed is None else "size or sha256 differ"


def _listing(manifest: Path) -> dict[str, Any]:
    """A manifest's files (empty when it is missing, unreadable or of another version)."""
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(found, dict) and found.get("manifest_version") == MANIFEST_VERSION
    files = found.get("files") if ok else None
    return files if isinstance(files, dict) else {}


def _write_listing(manifest: Path, files: dict[str, Any]) -> None:
    listing = {"manifest_version": MANIFEST_VERSION, "files": files}
    atomic_write_bytes(manifest, json.dumps(listing, indent=1, sort_keys=True).encode())
