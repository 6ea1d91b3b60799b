"""Caches an engine reads by path (TensorRT engines and timing caches, Torch-TensorRT's timing
cache, inductor's folder) carry a manifest: what it does not vouch for is rebuilt or removed,
never served (issue 27, item 9). No GPU needed: the engines are fakes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from inferbench.models import InputSpec, ModelDef
from inferbench.store import artifacts
from inferbench.store.engine_caches import (
    file_manifest_path,
    guarded_file,
    guarded_folder,
    publish_file,
    read_published,
)


def _flip(path: Path) -> None:
    """Other bytes of the same size, the old mtime put back: only a hash can tell."""
    before = path.stat()
    path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture(autouse=True)
def _fresh_process_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test reads as a fresh process would: no digest remembered from an earlier one."""
    monkeypatch.setattr(artifacts, "_FILE_DIGESTS", {})


def _next_process() -> None:
    """Digests are memoized per process by path, size and mtime: a file changed with its mtime
    put back is seen by the next process (the next worker), which hashes it afresh."""
    artifacts._FILE_DIGESTS.clear()


def test_a_published_file_is_read_back_only_while_its_manifest_vouches_for_it(tmp_path: Path) -> None:
    engine = tmp_path / "cache" / "tensorrt" / "m.engine"
    publish_file(engine, b"serialized engine")
    assert read_published(engine) == b"serialized engine"
    assert sorted(p.name for p in engine.parent.iterdir()) == ["m.engine"]  # the manifest sits apart
    listed = json.loads(file_manifest_path(engine).read_text())["files"]["m.engine"]
    assert listed["size"] == len(b"serialized engine")
    _flip(engine)
    assert read_published(engine) is None
    engine.write_bytes(b"an engine from before manifests")
    file_manifest_path(engine).unlink()
    assert read_published(engine) is None
    assert read_published(engine.with_name("never-built.engine")) is None


def test_guarded_file_removes_what_its_manifest_does_not_vouch_for(tmp_path: Path) -> None:
    timing = tmp_path / "cache" / "torch-tensorrt" / "timing.cache"
    with guarded_file(timing) as kept:  # first build: nothing there yet
        assert not kept
        timing.write_bytes(b"timings v1")  # what the engine writes by itself
    with guarded_file(timing) as kept:
        assert kept and timing.read_bytes() == b"timings v1"
        timing.write_bytes(b"timings v2")
    _flip(timing)
    _next_process()
    with guarded_file(timing) as kept:
        assert not kept and not timing.exists()  # the engine starts without it


def test_guarded_folder_prunes_unlisted_and_tampered_files_and_lists_new_ones(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "inductor"
    (folder / "fxgraph").mkdir(parents=True)
    (folder / "fxgraph" / "planted.pkl").write_bytes(b"not written under the guard")
    with guarded_folder(folder) as removed:
        assert removed == ["fxgraph/planted.pkl"]
        (folder / "kernel.so").write_bytes(b"compiled kernel")
        (folder / "fxgraph" / "graph.pkl").write_bytes(b"pickled graph")
    with guarded_folder(folder) as removed:
        assert removed == []  # listed and unchanged: kept
    _flip(folder / "kernel.so")
    _next_process()
    (folder / "written-outside.py").write_text("# after the guard")
    with guarded_folder(folder) as removed:
        assert sorted(removed) == ["kernel.so", "written-outside.py"]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "MANIFEST.json",
        "fxgraph/graph.pkl",
    ]


def test_the_inductor_cache_is_guarded_only_when_it_is_inferbench_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from inferbench.backends.torch_compile import _inductor_cache

    own = tmp_path / "cache" / "inductor"
    own.mkdir(parents=True)
    (own / "planted.so").write_bytes(b"x")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(own))
    with _inductor_cache(tmp_path / "cache") as removed:
        assert removed == ["planted.so"]
    elsewhere = tmp_path / "users-own-cache"
    elsewhere.mkdir()
    (elsewhere / "theirs.so").write_bytes(b"x")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(elsewhere))
    with _inductor_cache(tmp_path / "cache") as removed:
        assert removed == []
    assert (elsewhere / "theirs.so").exists() and not (elsewhere / "MANIFEST.json").exists()


class _FakeTensorRt:
    """The slice of TensorRT that `TensorRtBackend.prepare` reaches: builds count themselves,
    and the runtime records the bytes it is asked to deserialize."""

    builds = 0
    deserialized: list[bytes] = []

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
    BuilderFlag = SimpleNamespace(TF32=7)
    ProfilingVerbosity = SimpleNamespace(DETAILED="detailed")
    LayerInformationFormat = SimpleNamespace(JSON="json")

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            return SimpleNamespace(num_inputs=1, get_input=lambda i: SimpleNamespace(name="input"))

        def create_builder_config(self) -> Any:
            config = SimpleNamespace(clear_flag=lambda flag: None, add_optimization_profile=lambda p: None)
            config.create_timing_cache = lambda data: bytes(data)
            config.set_timing_cache = lambda cache, ignore_mismatch: setattr(config, "cache", cache)
            config.get_timing_cache = lambda: SimpleNamespace(serialize=lambda: b"timings")
            return config

        def create_optimization_profile(self) -> Any:
            return SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            _FakeTensorRt.builds += 1
            return b"engine built from timings=" + config.cache

    class OnnxParser:
        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            _FakeTensorRt.deserialized.append(data)
            inspector = SimpleNamespace(get_engine_information=lambda fmt: "{}")
            return SimpleNamespace(create_engine_inspector=lambda: inspector)

    __version__ = "10.0-fake"


def test_a_tampered_tensorrt_engine_is_rebuilt_not_deserialized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferbench.backends import tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRt)
    for name in ("require_cuda", "reset_peak_memory"):
        monkeypatch.setattr(tensorrt, name, lambda: None)
    monkeypatch.setattr(tensorrt, "gpu_info", lambda: {"name": "fake GPU", "compute_capability": "9.0"})
    monkeypatch.setattr(tensorrt, "memory_details", lambda: {})
    monkeypatch.setattr(tensorrt, "_LOGGER", None)
    source = tmp_path / "model.onnx"
    source.write_bytes(b"graph")
    cls = tensorrt.TensorRtBackend
    monkeypatch.setattr(cls, "_source", lambda self, model, precision: (source, {}))
    monkeypatch.setattr(cls, "_allocate", lambda self, model, batch: None)
    monkeypatch.setattr(cls, "_transfer_details", lambda self, model, batch: {})
    model = ModelDef(name="m", inputs=(InputSpec("input", (4,)),))
    _FakeTensorRt.builds, _FakeTensorRt.deserialized = 0, []

    first = cls(1, tmp_path / "cache").prepare(model, "fp32", 1)
    assert (first.artifact_cached, _FakeTensorRt.builds) == (False, 1)
    assert cls(1, tmp_path / "cache").prepare(model, "fp32", 1).artifact_cached  # served
    engine = first.artifact
    assert engine is not None
    _flip(engine)
    tampered = engine.read_bytes()
    third = cls(1, tmp_path / "cache").prepare(model, "fp32", 1)
    assert (third.artifact_cached, _FakeTensorRt.builds) == (False, 2)  # rebuilt
    assert tampered not in _FakeTensorRt.deserialized
    # A tampered timing cache is not fed to the builder either.
    timing = tensorrt.timing_cache_path(tmp_path / "cache", "10.0-fake", tensorrt.gpu_info())
    assert read_published(timing) == b"timings"
    _flip(timing)
    engine.unlink()
    cls(1, tmp_path / "cache").prepare(model, "fp32", 1)
    assert _FakeTensorRt.deserialized[-1] == b"engine built from timings="  # an empty cache
