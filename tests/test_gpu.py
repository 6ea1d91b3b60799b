"""GPU backends: TensorRT, Torch-TensorRT and the CUDA variants of torch, torch-compile, ORT.

Without a GPU: import safety, availability and unsupported reasons, engine-cache keys, the
inspector and nvidia-smi parsers, the gpu profile, and the artifacts the GPU engines are built
from (low-precision ONNX exports, symmetric-int8 QDQ graphs with float biases, ORT's fp16
conversion), checked numerically on the CPU; the stack's seams (ELF-read provider versions,
provider options, Torch-TensorRT settings, the set-up smoke check) are in test_gpu_stack.py.
With a CUDA device (`pytest -m gpu`): every GPU backend x precision on
tiny models against FP32 eager.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.backends import BUILTIN_BACKENDS, load_backend
from inferbench.backends.base import Availability
from inferbench.cell.stats import accuracy
from inferbench.config import AccuracyConfig, load_profile
from inferbench.errors import UnsupportedError
from inferbench.models import InputSpec, ModelDef, ModelRef, build_model, resolve_model

GPU_BACKENDS = ("tensorrt", "torch-tensorrt", "torch-cuda", "torch-compile-cuda", "onnxruntime-cuda")
ENGINE_MODULES = (
    "torch",
    "tensorrt",
    "torch_tensorrt",
    "pycuda",
    "onnxruntime",
    "pynvml",
    "modelopt",
    "cuda",
)


def _eager(model: ModelDef, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    assert model.module is not None
    with torch.inference_mode():
        return model.module(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()


def _rel_l2(model: ModelDef, inputs: dict[str, np.ndarray], out: np.ndarray) -> float:
    return float(
        accuracy([_eager(model, inputs)], [np.asarray(out, np.float32)], classification=True)["rel_l2_err"]
    )


# -- without a GPU -------------------------------------------------------------------------------


def test_gpu_backends_are_registered() -> None:
    for name in GPU_BACKENDS:
        assert name in BUILTIN_BACKENDS
        cls = load_backend(name)
        assert cls.name == name and cls.extra == "gpu"
        assert "host<->device copies excluded" in cls.timing_scope


def test_importing_gpu_backends_imports_no_engine() -> None:
    code = (
        "import sys; import inferbench.backends.cuda, inferbench.backends.qdq, inferbench.backends.tensorrt, "
        "inferbench.backends.torch_tensorrt, inferbench.backends.torch_cuda, "
        "inferbench.backends.onnxruntime_cuda; from inferbench.backends import load_backend; "
        f"[load_backend(n) for n in {GPU_BACKENDS!r}]; "
        f"print(','.join(m for m in {ENGINE_MODULES!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The installed torch, with its CUDA build flag and device check under the test's control."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return torch


def test_missing_package_names_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a)
    )
    reason = load_backend("tensorrt").availability().reason
    assert reason.startswith("tensorrt not installed") and "pip install 'inferbench[gpu]'" in reason


def test_cpu_build_of_torch_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.version, "cuda", None)
    available = load_backend("torch-cuda").availability()
    assert not available.ok and "CPU-only build" in available.reason and "HW=gpu" in available.reason


def test_no_cuda_device_is_said(fake_torch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch-cuda", "torch-compile-cuda"):
        assert load_backend(name).availability() == Availability(
            False, "no CUDA device (torch.cuda.is_available() is False)"
        )
    monkeypatch.setattr(fake_torch.cuda, "is_available", lambda: True)
    assert load_backend("torch-cuda").availability().ok


def test_onnxruntime_cuda_needs_the_gpu_wheel(monkeypatch: pytest.MonkeyPatch, fake_torch: Any) -> None:
    import importlib.metadata

    def version(dist: str) -> str:
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    reason = load_backend("onnxruntime-cuda").availability().reason
    assert "onnxruntime-gpu not installed" in reason and "inferbench[gpu]" in reason


def test_without_cuda_every_gpu_backend_is_unavailable_with_a_reason(fake_torch: Any) -> None:
    for name in GPU_BACKENDS:
        available = load_backend(name).availability()
        assert not available.ok
        assert "not installed" in available.reason or "no CUDA device" in available.reason


@pytest.mark.parametrize(
    ("backend", "model", "precision", "expected"),
    [
        ("torch-cuda", "mlp", "int8", "CPU (fbgemm) kernels only"),
        ("torch-compile-cuda", "mlp", "int8", "targets CPU kernels"),
        ("onnxruntime-cuda", "mlp", "bf16", "not offered on onnxruntime-cuda"),
        ("tensorrt", "file.onnx", "fp16", "strongly typed"),
        ("tensorrt", "file.onnx", "bf16", "strongly typed"),
        ("torch-cuda", "file.onnx", "fp16", "needs a torch module"),
        ("torch-tensorrt", "file.onnx", "fp32", "needs a torch module"),
    ],
)
def test_unsupported_reasons(backend: str, model: str, precision: str, expected: str) -> None:
    ref = ModelRef(model, "onnx") if model.endswith(".onnx") else ModelRef(model, "builtin")
    reason = load_backend(backend).unsupported_reason(ref, precision)
    assert reason is not None and expected in reason


def test_supported_combinations_have_no_reason() -> None:
    builtin, onnx_file = ModelRef("resnet50", "builtin"), ModelRef("m.onnx", "onnx")
    for name in ("tensorrt", "torch-tensorrt"):
        for precision in ("fp32", "fp16", "bf16", "int8"):
            assert load_backend(name).unsupported_reason(builtin, precision) is None
    for precision in ("fp32", "int8"):  # an ONNX file: TensorRT takes it as is, or quantizes it
        assert load_backend("tensorrt").unsupported_reason(onnx_file, precision) is None
    for name in ("torch-cuda", "torch-compile-cuda"):
        for precision in ("fp32", "fp16", "bf16"):
            assert load_backend(name).unsupported_reason(builtin, precision) is None


def test_gpu_backend_options_are_checked() -> None:
    assert load_backend("tensorrt").check_options({"cuda_graph": "on"}) is None
    assert load_backend("onnxruntime-cuda").check_options({"provider": "tensorrt"}) is None
    assert load_backend("torch-cuda").check_options({"cuda_graph": "always"}) == (
        "torch-cuda option cuda_graph must be one of off, on; got 'always'"
    )


def _tiny_def(name: str = "mlp", seed: int = 0) -> ModelDef:
    return ModelDef(name=name, inputs=(InputSpec("input", (4,)),), seed=seed)


def test_tensorrt_engine_cache_key(tmp_path: Path) -> None:
    from inferbench.backends.tensorrt import engine_cache_path, timing_cache_path

    source = tmp_path / "model.onnx"
    source.write_bytes(b"graph")
    h100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    base = {"model": _tiny_def(), "precision": "fp16", "batch_size": 8, "source": source}

    def path(**changes: Any) -> Path:
        args = {**base, "trt_version": "11.0.0", "gpu": h100, **changes}
        return engine_cache_path(tmp_path / "cache", **args)

    first = path()
    assert first == path()  # deterministic
    assert first.suffix == ".engine" and first.parent == tmp_path / "cache" / "tensorrt"
    variants = [
        path(precision="bf16"),
        path(batch_size=32),
        path(trt_version="10.13.0"),
        path(gpu={**h100, "name": "NVIDIA H200"}),
        path(gpu={**h100, "compute_capability": "8.0"}),
        path(model=_tiny_def(seed=1)),
        path(model=_tiny_def("tiny-cnn")),
    ]
    assert len({first, *variants}) == len(variants) + 1
    source.write_bytes(b"another graph")  # a re-exported source graph is a new engine
    assert path() != first
    timing = timing_cache_path(tmp_path / "cache", "11.0.0", h100)
    assert timing.parent == first.parent  # beside the engines, shared by every model
    assert timing != timing_cache_path(tmp_path / "cache", "11.1.0", h100)
    assert timing != timing_cache_path(tmp_path / "cache", "11.0.0", {**h100, "name": "NVIDIA H200"})


def test_tensorrt_layer_precisions_from_the_inspector() -> None:
    from inferbench.backends.tensorrt import layer_precisions

    v10 = {
        "Layers": [
            {
                "Name": "conv1",
                "Inputs": [{"Format/Datatype": "Row major linear FP32"}],
                "Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
            },
            {"Name": "ids", "Inputs": [{"Format/Datatype": "Int64"}], "Outputs": []},
        ],
        "Bindings": ["input", "output"],
    }
    v11 = {
        "Layers": [
            {
                "Name": "q",
                "Inputs": [{"DataType": "Float", "Format": "kLINEAR"}],
                "Outputs": [{"DataType": "Int8", "Format": "kCHW32"}],
            },
            {"Name": "mm", "Inputs": [{"DataType": "BFloat16"}], "Outputs": [{"DataType": "Int32"}]},
        ],
        "I/O Tensors": [{"Name": "input", "DataType": "Float"}],
    }
    assert layer_precisions(json.dumps(v10)) == {"fp32", "fp16"}
    assert layer_precisions(json.dumps(v11)) == {"fp32", "int8", "bf16"}
    assert layer_precisions(json.dumps({"Layers": ["conv1", "fc"]})) == set()  # names-only verbosity
    assert layer_precisions("not json") == set()


def test_nvidia_smi_rows_are_parsed() -> None:
    from inferbench.backends.cuda import parse_nvidia_smi

    name = "NVIDIA H100 80GB HBM3"
    text = (
        f"GPU-1234, {name}, 580.82.07, 81559, 1, 1980, 1980, 2619, 2619, 700.00, 31, P0, Enabled\n"
        f"GPU-5678, {name}, 580.82.07, 81559, [N/A], 345, 1980, 2619, 2619, 700.00, 29, P8, Disabled\n"
    )
    first, second = parse_nvidia_smi(text)
    assert first["name"] == "NVIDIA H100 80GB HBM3" and first["driver"] == "580.82.07"
    assert first["clock_sm_mhz"] == 1980 and first["power_limit_w"] == 700.0 and first["persistence_mode"]
    assert "memory_used_mb" not in second and second["pstate"] == "P8" and not second["persistence_mode"]
    assert parse_nvidia_smi("garbage line\n") == []


def test_gpu_profile_parses_and_expands() -> None:
    config = load_profile("gpu")
    assert set(config.backends) == set(GPU_BACKENDS)
    assert set(config.precisions) == {"fp32", "fp16", "bf16", "int8"}
    assert set(config.models) == {"resnet50", "bert-base", "minilm"} and config.batch_sizes == (1, 8, 32)
    assert len(config.cells()) == 3 * 5 * 4 * 3
    for backend, options in config.backend_options.items():
        assert load_backend(backend).check_options(options) is None
    assert config.accuracy.threshold("fp16") == 2e-2


# -- the artifacts the GPU engines are built from, checked on the CPU -----------------------------

LOW_PRECISION_CASES = [(m, p) for m in ("mlp", "tiny-cnn") for p in ("fp16", "bf16")]


@pytest.mark.engine
@pytest.mark.parametrize(("model_name", "precision"), LOW_PRECISION_CASES)
def test_low_precision_export_keeps_fp32_io(model_name: str, precision: str, tmp_path: Path) -> None:
    """TensorRT's fp16/bf16 source graph: weights in the low precision, fp32 inputs and outputs,
    and numerically the model (run here by ONNX's reference evaluator)."""
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from inferbench.backends.onnx_export import onnx_file

    model = build_model(resolve_model(model_name))
    path, cached = onnx_file(model, tmp_path, precision)
    assert not cached and path.name == f"model.{precision}.onnx"
    assert onnx_file(model, tmp_path, precision) == (path, True)
    graph = onnx.load(str(path)).graph
    want = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.BFLOAT16
    assert {init.data_type for init in graph.initializer} == {want}
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in (*graph.input, *graph.output))
    inputs = model.make_inputs(3, 7)
    (out,) = ReferenceEvaluator(str(path)).run(None, inputs)
    assert 0 < _rel_l2(model, inputs, out) <= AccuracyConfig().threshold(precision)
    assert model.module is not None and next(model.module.parameters()).dtype.is_floating_point
    assert str(next(model.module.parameters()).dtype) == "torch.float32"  # the reference is untouched


@pytest.mark.engine
def test_fp32_export_is_content_addressed(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from inferbench.backends.onnx_export import onnx_file

    model = build_model(resolve_model("mlp"))
    path, cached = onnx_file(model, tmp_path)
    assert path.name == "model.onnx" and path.parent.parent == tmp_path / "onnx" and not cached
    assert onnx_file(build_model(resolve_model("mlp")), tmp_path) == (path, True)
    assert onnx_file(build_model(resolve_model("mlp"), seed=1), tmp_path)[0] != path  # other weights
    with pytest.raises(UnsupportedError, match="convert it to fp16 yourself"):
        onnx_file(build_model(resolve_model(str(path))), tmp_path, "fp16")


@pytest.mark.engine
@pytest.mark.parametrize("model_name", ["mlp", "tiny-cnn"])
def test_tensorrt_qdq_is_symmetric_int8(model_name: str, tmp_path: Path) -> None:
    """TensorRT's int8 source graph: Q/DQ on the compute ops, zero points 0, float biases, and it
    still computes the model (run here by ONNX Runtime's CPU provider)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    from inferbench.backends.onnx_export import onnx_file
    from inferbench.backends.qdq import ORT_CPU, TENSORRT, static_qdq
    from inferbench.backends.tensorrt import TensorRtBackend

    model = build_model(resolve_model(model_name))
    source, _ = onnx_file(model, tmp_path)
    batches = TensorRtBackend(1, tmp_path, calibration_samples=8).calibration_batches(model)
    path, cached = static_qdq(source, source.parent, batches, 8, TENSORRT)
    assert not cached and "static-qdq-s8" in path.name
    assert static_qdq(source, source.parent, batches, 8, TENSORRT) == (path, True)
    assert static_qdq(source, source.parent, batches, 8, ORT_CPU)[0] != path  # the ORT CPU flavour
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers
    for node in quantizers:
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any()
    produced_by_dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    fed = {n.op_type for n in graph.node if set(n.input) & produced_by_dq}
    assert fed & {"Conv", "MatMul", "Gemm"}  # the compute ops read dequantized int8
    # TensorRT's parser takes DequantizeLinear on int8/fp8/int4 only: no int32 bias initializers.
    assert _dq_initializer_types(graph) == {"int8"}
    biases = [n.input[2] for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    assert all(inits[b].data_type == onnx.TensorProto.FLOAT for b in biases)
    if model_name == "tiny-cnn":  # its Conv biases are what ONNX Runtime's default quantizes
        assert biases
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = model.make_inputs(4, 21)
    assert 0 < _rel_l2(model, inputs, session.run(None, inputs)[0]) <= AccuracyConfig().threshold("int8")


def _dq_initializer_types(graph: Any) -> set[str]:
    """numpy dtypes of the initializers that DequantizeLinear nodes dequantize."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    return {
        str(numpy_helper.to_array(inits[n.input[0]]).dtype)
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    }


@pytest.mark.engine
def test_quantized_bias_is_what_tensorrt_would_reject(tmp_path: Path) -> None:
    """The counter-check: with ONNX Runtime's default (QuantizeBias on) the same graph carries
    int32 biases into DequantizeLinear, and the setting keys a different file."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dataclasses import replace

    from inferbench.backends.onnx_export import onnx_file
    from inferbench.backends.qdq import TENSORRT, static_qdq
    from inferbench.backends.tensorrt import TensorRtBackend

    model = build_model(resolve_model("tiny-cnn"))
    source, _ = onnx_file(model, tmp_path)
    batches = TensorRtBackend(1, tmp_path, calibration_samples=4).calibration_batches(model)
    int32_bias = replace(TENSORRT, quantize_bias=True)  # the settings before issue 17
    path, _ = static_qdq(source, source.parent, batches, 4, int32_bias)
    assert "int32" in _dq_initializer_types(onnx.load(str(path)).graph)
    assert path != static_qdq(source, source.parent, batches, 4, TENSORRT)[0]


@pytest.mark.engine
@pytest.mark.parametrize("model_name", ["mlp", "tiny-cnn"])
def test_onnxruntime_fp16_conversion(model_name: str, tmp_path: Path) -> None:
    """onnxruntime-cuda's fp16 graph, run here on ONNX Runtime's CPU provider."""
    ort = pytest.importorskip("onnxruntime")
    from inferbench.backends.onnx_export import onnx_file
    from inferbench.backends.onnxruntime_cuda import ort_fp16

    model = build_model(resolve_model(model_name))
    source, _ = onnx_file(model, tmp_path)
    path, cached = ort_fp16(source, source.parent)
    assert not cached and ort_fp16(source, source.parent) == (path, True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = model.make_inputs(3, 5)
    assert 0 < _rel_l2(model, inputs, session.run(None, inputs)[0]) <= AccuracyConfig().threshold("fp16")


# -- with a CUDA device --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_device() -> None:
    from inferbench.backends.cuda import cuda_device_availability

    available = cuda_device_availability()
    if not available.ok:
        pytest.skip(available.reason)


GPU_CASES = [(b, p) for b in GPU_BACKENDS for p in ("fp32", "fp16", "bf16", "int8")]


@pytest.mark.gpu
@pytest.mark.parametrize(("backend_name", "precision"), GPU_CASES)
@pytest.mark.parametrize("model_name", ["mlp", "tiny-cnn"])
def test_gpu_backend_matches_eager(
    backend_name: str,
    precision: str,
    model_name: str,
    cuda_device: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every GPU backend x precision runs within its threshold of FP32 eager, or says why not."""
    cls = load_backend(backend_name)
    available = cls.availability()
    if not available.ok:
        pytest.skip(available.reason)
    ref = resolve_model(model_name)
    static = cls.unsupported_reason(ref, precision)
    if static is not None:
        assert len(static) > 20
        return
    backend = cls(threads=1, cache_dir=tmp_path_factory.mktemp("gpu-cache"), calibration_samples=16)
    model = build_model(ref)
    try:
        info = backend.prepare(model, precision, 4)
    except UnsupportedError as exc:
        assert len(str(exc)) > 20
        return
    assert precision in info.engine_precision
    assert info.details["gpu"]["name"] and info.details["copy_h2d_ms"] > 0
    for seed in (11, 12):
        inputs = model.make_inputs(4, seed)
        out = backend.to_numpy(backend.run(backend.to_native(inputs)))
        backend.synchronize()
        device_ns = backend.engine_time_ns()
        assert device_ns is not None and device_ns > 0
        limit = AccuracyConfig().threshold(precision)
        assert _rel_l2(model, inputs, out[0]) <= limit, (backend_name, precision)
    backend.close()


@pytest.mark.gpu
@pytest.mark.parametrize("backend_name", ["torch-cuda", "tensorrt", "torch-compile-cuda"])
def test_cuda_graph_replay_matches_eager(
    backend_name: str, cuda_device: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cls = load_backend(backend_name)
    if not cls.availability().ok:
        pytest.skip(cls.availability().reason)
    backend = cls(1, tmp_path_factory.mktemp("graph-cache"), options={"cuda_graph": "on"})
    model = build_model(resolve_model("tiny-cnn"))
    backend.prepare(model, "fp32", 2)
    for seed in (3, 4):  # replays must see each new input, not the captured one
        inputs = model.make_inputs(2, seed)
        out = backend.to_numpy(backend.run(backend.to_native(inputs)))
        assert _rel_l2(model, inputs, out[0]) <= AccuracyConfig().threshold("fp32")
    backend.close()
