"""Content-addressed artifacts: keys that follow the model, publication that is never torn."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inferbench.models import ModelRef, build_model
from inferbench.store import artifacts
from inferbench.store.artifacts import MANIFEST, file_digest, model_fingerprint, obtain, read_manifest


def _writer(content: bytes, log: Path | None = None) -> object:
    def build(folder: Path) -> None:
        if log is not None:
            with log.open("a") as handle:
                handle.write(f"{os.getpid()}\n")
        (folder / "a.bin").write_bytes(content)
        (folder / "b.txt").write_text("second file")

    return build


def test_built_once_then_served_from_cache(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    first, cached1 = obtain(tmp_path / "cache", "thing", {"v": 1}, _writer(b"x" * 100, log))  # type: ignore[arg-type]
    second, cached2 = obtain(tmp_path / "cache", "thing", {"v": 1}, _writer(b"y", log))  # type: ignore[arg-type]
    assert (cached1, cached2) == (False, True)
    assert first == second and (first / "a.bin").read_bytes() == b"x" * 100
    assert len(log.read_text().splitlines()) == 1
    manifest = read_manifest(first)
    assert manifest is not None and set(manifest["files"]) == {"a.bin", "b.txt"}
    assert file_digest(first / "a.bin") == manifest["files"]["a.bin"]["sha256"]
    other, _ = obtain(tmp_path / "cache", "thing", {"v": 2}, _writer(b"z"))  # type: ignore[arg-type]
    assert other != first  # another key, another folder


@pytest.mark.parametrize("damage", ["no-manifest", "truncated", "missing-file", "garbage-manifest"])
def test_torn_or_invalid_artifact_is_rebuilt_never_served(tmp_path: Path, damage: str) -> None:
    folder, _ = obtain(tmp_path, "thing", {"v": 1}, _writer(b"good" * 10))  # type: ignore[arg-type]
    if damage == "no-manifest":
        (folder / MANIFEST).unlink()
    elif damage == "truncated":
        (folder / "a.bin").write_bytes(b"go")
    elif damage == "missing-file":
        (folder / "b.txt").unlink()
    else:
        (folder / MANIFEST).write_text("{not json")
    assert read_manifest(folder) is None
    again, cached = obtain(tmp_path, "thing", {"v": 1}, _writer(b"good" * 10))  # type: ignore[arg-type]
    assert again == folder and cached is False
    assert (folder / "a.bin").read_bytes() == b"good" * 10 and read_manifest(folder) is not None


def _tamper(path: Path, keep_mtime: bool) -> None:
    """Other bytes of the same size, optionally with the old mtime put back (as `cp -p` or a
    careful attacker would): a size check alone cannot see either."""
    before = path.stat()
    data = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_size == before.st_size
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_tampered_file_of_the_same_size_is_rebuilt_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_mtime: bool
) -> None:
    folder, _ = obtain(tmp_path, "thing", {"v": 1}, _writer(b"good" * 10))  # type: ignore[arg-type]
    _tamper(folder / "a.bin", keep_mtime)
    if keep_mtime:  # the same path, size and mtime: as a fresh process reads it (no memo)
        monkeypatch.setattr(artifacts, "_FILE_DIGESTS", {})
    assert read_manifest(folder) is None
    again, cached = obtain(tmp_path, "thing", {"v": 1}, _writer(b"good" * 10))  # type: ignore[arg-type]
    assert (again, cached) == (folder, False)
    assert (folder / "a.bin").read_bytes() == b"good" * 10 and read_manifest(folder) is not None


def test_hashes_are_paid_at_publish_and_once_per_process_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    real = artifacts._sha256_file

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(artifacts, "_sha256_file", counting)
    obtain(tmp_path, "thing", {"v": 1}, _writer(b"x" * 100))  # type: ignore[arg-type]
    assert sorted(hashed) == ["a.bin", "b.txt"]  # at publish
    obtain(tmp_path, "thing", {"v": 1}, _writer(b"x" * 100))  # type: ignore[arg-type]
    assert len(hashed) == 2  # the publisher serves what it hashed
    monkeypatch.setattr(artifacts, "_FILE_DIGESTS", {})  # another process
    for _ in range(3):
        obtain(tmp_path, "thing", {"v": 1}, _writer(b"x" * 100))  # type: ignore[arg-type]
    assert len(hashed) == 4  # its first read hashed each file once


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from inferbench.store.artifacts import obtain

def build(folder):
    (folder / "model.bin").write_bytes(b"half of it")
    os.kill(os.getpid(), signal.SIGKILL)  # a timeout's SIGKILL, mid-write

obtain(Path(sys.argv[1]), "thing", {"v": 1}, build)
"""


def test_a_writer_killed_mid_write_leaves_nothing_that_is_served(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    finals = [p for p in tmp_path.iterdir() if p.name.startswith("thing-")]
    assert finals == []  # only the hidden temporary folder (and the lock file) remain
    folder, cached = obtain(tmp_path, "thing", {"v": 1}, _writer(b"whole"))  # type: ignore[arg-type]
    assert cached is False and (folder / "a.bin").read_bytes() == b"whole"
    assert not list(tmp_path.glob(".thing-*.tmp-*"))  # the dead writer's leftovers are cleared


CONCURRENT_WRITER = """
import os, sys, time
from pathlib import Path
from inferbench.store.artifacts import obtain

root, log, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
def build(folder):
    with log.open("a") as handle:
        handle.write(f"{os.getpid()}\\n")
    time.sleep(0.5)  # slow enough for the other process to arrive meanwhile
    (folder / "model.bin").write_bytes(b"built once")

time.sleep(max(0.0, start - time.time()))
folder, cached = obtain(root, "thing", {"v": 1}, build)
print(folder, cached)
"""


def test_two_processes_build_a_key_once_and_both_get_it(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path / "cache"), str(log), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(log.read_text().splitlines()) == 1  # one build, one waiter
    assert outputs[0][0] == outputs[1][0]
    assert sorted(o[1] for o in outputs) == ["False", "True"]


MODEL_V1 = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) * 2

def build(seed=0):
    torch.manual_seed(seed)
    net = Net().eval()
    with torch.no_grad():
        net.fc.weight.mul_(SCALE)
    return net, {"x": ((4,), "float32")}
"""


def _factory(tmp_path: Path, name: str, source: str) -> ModelRef:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    if str(tmp_path) not in sys.path:
        sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    sys.modules.pop(name, None)
    return ModelRef(f"{name}:build", "factory")


def test_fingerprint_follows_weights_and_code_not_the_name(tmp_path: Path) -> None:
    import torch

    base = _factory(tmp_path, "usernet_a", MODEL_V1.replace("SCALE", "1.0"))
    first = model_fingerprint(build_model(base, seed=0))
    assert model_fingerprint(build_model(base, seed=0)) == first  # deterministic: cache hits
    assert model_fingerprint(build_model(base, seed=1)) != first  # the seed makes other weights
    weights = _factory(tmp_path, "usernet_a", MODEL_V1.replace("SCALE", "1.5"))
    assert model_fingerprint(build_model(weights, seed=0)) != first
    # The same outputs from other code: x * 2 -> x + x.
    code = _factory(
        tmp_path, "usernet_a", MODEL_V1.replace("SCALE", "1.0").replace("fc(x) * 2", "fc(x) + self.fc(x)")
    )
    changed = build_model(code, seed=0)
    # Source files are hashed when the fingerprint is taken (in a worker: right after building).
    assert model_fingerprint(changed) != first
    original = build_model(_factory(tmp_path, "usernet_a", MODEL_V1.replace("SCALE", "1.0")), seed=0)
    x = torch.randn(2, 4)
    assert changed.module is not None and original.module is not None
    torch.testing.assert_close(changed.module(x), original.module(x))


def test_factory_without_a_seed_parameter_is_built_deterministically(tmp_path: Path) -> None:
    ref = _factory(
        tmp_path,
        "usernet_noseed",
        "import torch\ndef build():\n    return torch.nn.Linear(4, 2).eval(), {'x': ((4,), 'float32')}\n",
    )
    a, b, c = build_model(ref, seed=3), build_model(ref, seed=3), build_model(ref, seed=4)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)
    assert a.seed == 3


def test_manifest_is_json_listing_sizes_and_hashes(tmp_path: Path) -> None:
    folder, _ = obtain(tmp_path, "thing", {"engine": "x", "n": 1}, _writer(b"abc"))  # type: ignore[arg-type]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["key"] == {"engine": "x", "n": 1}
    assert manifest["files"]["a.bin"]["size"] == 3
