"""Content-addressed, safely published artifacts (ONNX exports, quantized graphs, IRs).

An artifact lives in a folder named by the hash of everything that determines it: the model's
weights and code (`model_fingerprint`), the source file's bytes (`file_digest`), engine and
library versions, precision, options and calibration data. Editing a model changes the
name, so a stale artifact is never found, let alone served.

Publication is all-or-nothing: the builder writes into a fresh temporary folder, a manifest
listing every file with its size and sha256 is written last, and the folder is renamed into
place whole. Readers serve a folder only if its manifest is there and every file matches its
recorded size and sha256; anything else (a SIGKILL or a full disk mid-write, bytes changed in
place) is rebuilt. Hashing is paid once per file per process: at publish, and on a process's
first read (memoized by path, size and mtime). A lock per key (`fcntl.flock`) makes two sweeps
sharing one cache build each artifact once: the second waits, then finds the first one's
artifact.

Caches an engine reads by path itself get the same manifest (`inferbench.store.engine_caches`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferbench.util import atomic_write_bytes, cache_key

if TYPE_CHECKING:
    from inferbench.models import ModelDef

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 22
# In-process memo of file digests, keyed by (path, size, mtime): a worker hashes a file once.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (the key of an artifact folder)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _memo_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest if the artifact is whole (every listed file present with its
    recorded size and sha256), else None: a torn or tampered folder is never served."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("manifest_version") != MANIFEST_VERSION or not files:
            return None
        if _mismatch(folder, files) is not None:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return dict(manifest)


def _mismatch(folder: Path, files: dict[str, Any]) -> str | None:
    """The first listed file whose size or bytes differ from the manifest (None: all match).
    Sizes first: a torn folder is found without hashing anything."""
    for name, facts in files.items():
        if (folder / name).stat().st_size != facts["size"]:
            return name
    for name, facts in files.items():
        if file_digest(folder / name) != facts["sha256"]:
            return name
    return None


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for a given path, size and mtime
    (an artifact published by this process is never hashed twice)."""
    memo = _memo_key(path)
    if memo not in _FILE_DIGESTS:
        _FILE_DIGESTS[memo] = _sha256_file(path)
    return _FILE_DIGESTS[memo]


def arrays_digest(batches: list[dict[str, np.ndarray]]) -> str:
    """Hash of calibration (or any) input batches: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            array = np.ascontiguousarray(batch[name])
            h.update(f"{name}|{array.dtype}|{array.shape}|".encode())
            h.update(array.tobytes())
    return h.hexdigest()[:20]


# -- what a model is ----------------------------------------------------------------------------


def _spec_identity(spec: Any) -> tuple[Any, ...]:
    """An input spec as the fingerprint sees it; the batch axis and a user's value only when
    they differ from the defaults, so fingerprints of models without them stay as they were."""
    found: tuple[Any, ...] = (spec.name, spec.shape, spec.dtype, spec.low, spec.high)
    if spec.batch_axis != 0:
        found += (f"batch_axis={spec.batch_axis}",)
    if spec.value is not None:
        found += ("value=" + hashlib.sha256(np.ascontiguousarray(spec.value).tobytes()).hexdigest()[:16],)
    if getattr(spec, "data", None) is not None:  # the user's data calibrates static int8
        found += ("data=" + hashlib.sha256(np.ascontiguousarray(spec.data).tobytes()).hexdigest()[:16],)
    return found


def model_fingerprint(model: ModelDef) -> str:
    """Hash of what determines a model's artifacts: its parameters and buffers, its code, its
    input specs and seed (or, for an ONNX-file model, the file's bytes). Memoized per model."""
    cached = model.__dict__.get("_fingerprint")
    if cached:
        return str(cached)
    h = hashlib.sha256()
    specs = [_spec_identity(s) for s in model.inputs]
    h.update(json.dumps([model.name, specs, model.output_names, model.seed, model.transformer]).encode())
    if model.onnx_path is not None:
        h.update(onnx_bytes_digest(model.onnx_path).encode())
    if model.reference_path is not None:  # the accuracy reference of a model that arrives quantized
        h.update(b"reference:" + onnx_bytes_digest(model.reference_path).encode())
    if model.module is not None:
        h.update(state_digest(model.module).encode())
        h.update(code_digest(model.module).encode())
    value = h.hexdigest()[:20]
    model.__dict__["_fingerprint"] = value
    return value


def artifact_path(
    cache_dir: Path,
    engine: str,
    model: ModelDef,
    precision: str,
    batch_size: int,
    suffix: str,
    *options: Any,
) -> Path:
    """Where an engine keeps a prepared artifact: keyed by the model's fingerprint (weights,
    code, inputs, seed), precision, batch and the caller's options (engine version,
    quantization settings, ...). Writers publish it through a unique temporary name."""
    key = cache_key(engine, model.name, model_fingerprint(model), precision, batch_size, options)
    folder = cache_dir / engine
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model.name)
    return folder / f"{safe}-{precision}-b{batch_size}-{key}{suffix}"


def onnx_bytes_digest(path: Path) -> str:
    """The ONNX file's bytes plus any external-data files it names."""
    h = hashlib.sha256(file_digest(path).encode())
    for extra in sorted(_external_data_files(path)):
        h.update(extra.name.encode())
        h.update(file_digest(extra).encode())
    return h.hexdigest()


def _external_data_files(path: Path) -> set[Path]:
    try:
        import onnx
    except ImportError:
        return set()
    graph = onnx.load(str(path), load_external_data=False).graph
    found = set()
    for init in graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    found.add(path.parent / entry.value)
    return {p for p in found if p.is_file()}


def state_digest(module: Any) -> str:
    """Hash of every parameter and buffer (persistent or not): name, dtype, shape, bytes."""
    import torch

    h = hashlib.sha256()
    tensors = dict(module.state_dict(keep_vars=True))
    tensors.update({f"buffer:{n}": b for n, b in module.named_buffers()})
    for name in sorted(tensors):
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            h.update(f"{name}={value!r}".encode())
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.is_quantized:
            t = t.int_repr()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def code_digest(module: Any) -> str:
    """Hash of the module's code and structure: the source files of every submodule's class
    (so an edited forward, or a helper it calls in the same file, changes it), the module tree
    and each submodule's plain attributes (hyperparameters stored outside the weights)."""
    h = hashlib.sha256()
    files: set[str] = set()
    for name, sub in module.named_modules():
        cls = type(sub)
        h.update(f"{name}:{cls.__module__}.{cls.__qualname__}|".encode())
        plain = {
            k: v
            for k, v in vars(sub).items()
            if not k.startswith("_") and k != "training" and isinstance(v, int | float | str | bool | tuple)
        }
        h.update(repr(sorted(plain.items())).encode())
        for klass in cls.__mro__:
            source = _source_file(klass)
            if source:
                files.add(source)
    for source in sorted(files):
        h.update(source.encode())
        h.update(file_digest(Path(source)).encode())
    return h.hexdigest()


def _source_file(klass: type) -> str | None:
    if klass.__module__ in ("builtins", "torch._C") or klass.__module__.startswith("torch._C"):
        return None
    try:
        found = inspect.getsourcefile(klass)
    except (TypeError, OSError):
        return None
    return found if found and Path(found).is_file() else None


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the named libraries that are importable (those that shape an artifact)."""
    import importlib.metadata

    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    found["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    return found


# -- publication --------------------------------------------------------------------------------


@contextlib.contextmanager
def key_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock for one artifact key (a lock file beside its folder); released when
    the holder exits, however it exits, because the kernel drops flock locks with the fd."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def obtain(
    parent: Path,
    name: str,
    parts: dict[str, Any],
    build: Callable[[Path], None],
) -> tuple[Path, bool]:
    """The artifact folder `parent/<name>-<hash(parts)>`, built by `build(tmp_folder)` if no
    whole copy exists; returns (folder, from_cache). `build` writes files into the folder it
    is given; it must not write anywhere else."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    folder = parent / f"{safe}-{digest(parts)}"
    if read_manifest(folder) is not None:
        return folder, True
    with key_lock(folder):
        if read_manifest(folder) is not None:  # another sweep built it while we waited
            return folder, True
        _clear_leftovers(folder)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.tmp-"))
        try:
            build(tmp)
            files = write_manifest(tmp, parts)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _remember(folder, files)
    log.info("published %s", folder)
    return folder, False


def write_manifest(folder: Path, parts: dict[str, Any]) -> dict[str, Any]:
    """List every file (sizes and hashes) in the manifest, written last; returns the list."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = str(path.relative_to(folder))
            files[rel] = {"size": path.stat().st_size, "sha256": _sha256_file(path)}
    if not files:
        raise RuntimeError(f"artifact build wrote no files into {folder}")
    manifest = {"manifest_version": MANIFEST_VERSION, "key": parts, "files": files}
    atomic_write_bytes(
        folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=str).encode()
    )
    return files


def _remember(folder: Path, files: dict[str, Any]) -> None:
    """The digests just computed at publish, under the files' final paths (a rename keeps the
    mtime): the publishing process serves them without hashing them again."""
    for name, facts in files.items():
        _FILE_DIGESTS[_memo_key(folder / name)] = facts["sha256"]


def _clear_leftovers(folder: Path) -> None:
    """Under the key's lock: a folder at the final name without a whole manifest, and temporary
    folders of this key, are remains of a killed writer; move them out of the way."""
    if folder.exists():
        trash = folder.parent / f".{folder.name}.torn-{uuid.uuid4().hex[:8]}"
        log.warning("artifact %s is torn, tampered with or invalid: rebuilding it", folder)
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
