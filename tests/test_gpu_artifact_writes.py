"""How the GPU engines write to a cache that two sweeps may share, checked without a GPU:
the TensorRT build publishes its engine and timing cache through unique temporary names, and
ONNX Runtime-CUDA's fp16 graph and GPU transformer fusions go through the artifact store."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from inferbench.models import InputSpec, ModelDef
from inferbench.store.artifacts import MANIFEST, read_manifest
from inferbench.util import atomic_write_bytes


def test_concurrent_writers_never_leave_a_torn_file(tmp_path: Path) -> None:
    """Two writers of one path (two sweeps building the same engine), one reader: both writers
    finish (with the old fixed `.NAME.tmp`, some writes failed: the other writer had renamed
    the shared temporary away) and every read is one writer's whole content."""
    path = tmp_path / "engine.plan"
    size = 1 << 20
    contents = {bytes([n]) * size for n in (1, 2)}
    atomic_write_bytes(path, b"\x01" * size)
    done = threading.Event()
    seen: list[bytes] = []
    failed: list[BaseException] = []

    def write(fill: int) -> None:
        try:
            for _ in range(30):
                atomic_write_bytes(path, bytes([fill]) * size)
        except OSError as exc:  # a shared temporary name: the other writer renamed it away
            failed.append(exc)

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_bytes())

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(n,)) for n in (1, 2)]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert not failed
    assert seen and all(data in contents for data in seen)
    assert [p.name for p in tmp_path.iterdir()] == ["engine.plan"]  # no temporary left behind


class _FakeTensorRt:
    """The slice of the TensorRT builder API `TensorRtBackend._build` calls; the "engine" is
    the timing cache it was given plus the input shapes, so the test can see both."""

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
    BuilderFlag = SimpleNamespace(TF32=7)
    ProfilingVerbosity = SimpleNamespace(DETAILED="detailed")

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def create_network(self, flags: int) -> Any:
            return SimpleNamespace(num_inputs=1, get_input=lambda i: SimpleNamespace(name="input"))

        def create_builder_config(self) -> Any:
            config = SimpleNamespace(clear_flag=lambda flag: None, add_optimization_profile=lambda p: None)
            config.create_timing_cache = lambda data: bytes(data)
            config.set_timing_cache = lambda cache, ignore_mismatch: setattr(config, "cache", cache)
            config.get_timing_cache = lambda: SimpleNamespace(serialize=lambda: config.cache + b"+run")
            return config

        def create_optimization_profile(self) -> Any:
            return SimpleNamespace(set_shape=lambda name, *shapes: self.shapes.extend(shapes))

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            return b"engine|" + config.cache + b"|" + repr(self.shapes).encode()

    class OnnxParser:
        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return Path(path).is_file()


def test_tensorrt_build_publishes_engine_and_timing_cache(tmp_path: Path) -> None:
    from inferbench.backends.tensorrt import TensorRtBackend

    source = tmp_path / "model.onnx"
    source.write_bytes(b"graph")
    model = ModelDef(name="m", inputs=(InputSpec("input", (4,)),))
    backend = TensorRtBackend(1, tmp_path)
    timing = tmp_path / "cache" / "tensorrt" / "timing.cache"
    first = tmp_path / "cache" / "tensorrt" / "a.engine"
    backend._build(_FakeTensorRt, source, first, timing, model, 8)
    assert first.read_bytes() == b"engine||[(8, 4), (8, 4), (8, 4)]"
    assert timing.read_bytes() == b"+run"
    second = first.with_name("b.engine")
    backend._build(_FakeTensorRt, source, second, timing, model, 1)
    assert second.read_bytes().startswith(b"engine|+run|")  # the earlier build's timing cache
    assert timing.read_bytes() == b"+run+run"
    assert sorted(p.name for p in timing.parent.iterdir()) == ["a.engine", "b.engine", "timing.cache"]


def _tiny_onnx(path: Path, weight: float) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, (4, 4), [weight] * 16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4))],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_ort_fp16_is_a_published_artifact_keyed_by_the_source_bytes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from inferbench.backends.onnxruntime_cuda import ort_fp16

    cache = tmp_path / "derived"
    one = _tiny_onnx(tmp_path / "one.onnx", 0.5)
    path, cached = ort_fp16(one, cache)
    assert not cached and read_manifest(path.parent) is not None
    assert ort_fp16(one, cache) == (path, True)
    graph = onnx.load(str(path)).graph
    assert graph.initializer[0].data_type == onnx.TensorProto.FLOAT16
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O kept fp32
    # Same size, other weights: a new artifact (the old key was the file's size alone).
    two = _tiny_onnx(tmp_path / "two.onnx", 0.25)
    assert two.stat().st_size == one.stat().st_size
    other, cached = ort_fp16(two, cache)
    assert not cached and other.parent != path.parent
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]


def test_gpu_transformer_fusions_are_their_own_published_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from onnxruntime.transformers import optimizer

    from inferbench.backends.onnxruntime_cuda import OrtCudaBackend

    calls: list[bool] = []

    class Optimized:
        def get_fused_operator_statistics(self) -> dict[str, int]:
            return {"Attention": 2, "SkipLayerNormalization": 0}

        def save_model_to_file(self, path: str) -> None:
            Path(path).write_bytes(b"fused")

    def optimize_model(source: str, **kwargs: Any) -> Optimized:
        calls.append(kwargs["use_gpu"])
        return Optimized()

    monkeypatch.setattr(optimizer, "optimize_model", optimize_model)
    source = _tiny_onnx(tmp_path / "model.onnx", 1.0)
    info = {"model_type": "bert", "num_heads": 2, "hidden_size": 4}
    backend = OrtCudaBackend(1, tmp_path)
    gpu, fused = backend._optimize_transformer(source, info, tmp_path / "d", use_gpu=True)
    cpu, _ = backend._optimize_transformer(source, info, tmp_path / "d")
    assert calls == [True, False] and fused == {"Attention": 2}
    assert gpu.parent != cpu.parent and gpu.parent.name.startswith("ort-transformer-gpu-")
    assert (gpu.parent / MANIFEST).is_file() and gpu.read_bytes() == b"fused"
    assert backend._optimize_transformer(source, info, tmp_path / "d", use_gpu=True) == (gpu, fused)
    assert calls == [True, False]  # served from the store the second time
