"""TensorRT: ONNX -> engine with the TensorRT Python API, run on pre-allocated device buffers.

Networks are strongly typed (TensorRT 11 builds no other kind; on 10.x the STRONGLY_TYPED flag
asks for it), so the precision comes from the graph: FP16/BF16 engines are built from the model
exported in that dtype (float32 inputs and outputs, a Cast at each end), INT8 from the static
QDQ graph with symmetric int8 activations and float biases (explicit quantization; the same
quantizer as the onnxruntime backend, see qdq.TENSORRT). The optimization profile is the
cell's batch (min = opt = max).

Engines are cached by model, weights seed, source graph, precision, batch profile, TensorRT
version and GPU (name, compute capability); a timing cache per TensorRT version and GPU sits
beside them and shortens later builds. Both are published with a manifest and read only when
their sha256 matches it (`inferbench.store.engine_caches`): a file that merely exists is rebuilt, not
deserialized. What the engine really runs is read back from its inspector: the data types of
every layer's inputs and outputs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import Backend, PrepareInfo
from inferbench.backends.cuda import (
    GPU_EXTRA,
    INSTALL_HINT,
    CudaBackendMixin,
    CudaEventTimer,
    check_bf16,
    copy_details,
    gpu_info,
    memory_details,
    require_cuda,
    reset_peak_memory,
)
from inferbench.backends.onnx_export import LOW_PRECISION, derived_dir, onnx_file
from inferbench.backends.qdq import TENSORRT, static_qdq
from inferbench.errors import BackendError, UnsupportedError
from inferbench.store.artifacts import artifact_path
from inferbench.store.engine_caches import publish_file, read_published

if TYPE_CHECKING:
    from inferbench.models import ModelDef, ModelRef

# Data type names as the inspector prints them (10.x "Format/Datatype" strings, 11.x "DataType").
_PRECISION_PATTERNS = (
    ("bf16", re.compile(r"\bBF16\b|\bBFloat16\b", re.I)),
    ("fp16", re.compile(r"\bFP16\b|\bHalf\b", re.I)),
    ("int8", re.compile(r"\bInt8\b", re.I)),
    ("fp32", re.compile(r"\bFP32\b|\bFloat\b", re.I)),
)
_TORCH_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}
BUILD_SETTINGS = ("strongly-typed", "tf32-off", "profile=static-batch")


def engine_cache_path(
    cache_dir: Path,
    model: ModelDef,
    precision: str,
    batch_size: int,
    source: Path,
    trt_version: str,
    gpu: dict[str, Any],
) -> Path:
    """Where the engine for this cell lives: keyed like every artifact (model, seed, precision,
    batch) plus the source graph, the batch profile, TensorRT's version and the GPU."""
    return artifact_path(
        cache_dir,
        "tensorrt",
        model,
        precision,
        batch_size,
        ".engine",
        trt_version,
        gpu.get("name"),
        gpu.get("compute_capability"),
        f"{source.parent.name}/{source.name}",
        source.stat().st_size,
        (batch_size, batch_size, batch_size),  # optimization profile: min, opt, max batch
        BUILD_SETTINGS,
    )


def timing_cache_path(cache_dir: Path, trt_version: str, gpu: dict[str, Any]) -> Path:
    """One timing cache per TensorRT version and GPU, shared by every engine built there."""
    safe = re.sub(
        r"[^A-Za-z0-9.]+", "-", f"{trt_version}-{gpu.get('name')}-sm{gpu.get('compute_capability')}"
    )
    return cache_dir / "tensorrt" / f"timing-{safe}.cache"


def layer_precisions(engine_json: str) -> set[str]:
    """Float/int8 precisions found among the layers' input and output types in the inspector's
    JSON (DETAILED verbosity); empty when the layers carry no type information."""
    try:
        layers = json.loads(engine_json).get("Layers", [])
    except (ValueError, AttributeError):
        return set()
    found = set()
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for tensor in (*layer.get("Inputs", []), *layer.get("Outputs", [])):
            if not isinstance(tensor, dict):
                continue
            text = " ".join(str(tensor.get(k, "")) for k in ("DataType", "Format/Datatype", "Format"))
            for name, pattern in _PRECISION_PATTERNS:
                if pattern.search(text):
                    found.add(name)
                    break
    return found


@dataclass
class _Slot:
    """One execution context with its stream and output buffers (one per concurrent request)."""

    context: Any
    stream: Any
    outputs: list[Any]
    graph: Any = None
    static_inputs: list[Any] = field(default_factory=list)


class TensorRtBackend(CudaBackendMixin, Backend):
    name = "tensorrt"
    requires = ("tensorrt", "torch", "onnx")
    extra = GPU_EXTRA
    version_packages: ClassVar[tuple[str, ...]] = ("tensorrt", "torch", "onnx", "onnxruntime-gpu")
    accepts_onnx = True
    precisions = frozenset({"fp32", "fp16", "bf16", "int8"})
    precision_notes: ClassVar[dict[str, str]] = {
        "fp32": "strongly typed, TF32 off",
        "fp16": "built from the model exported in fp16 (fp32 I/O)",
        "bf16": "built from the model exported in bf16 (fp32 I/O); compute capability 8.0+",
        "int8": "explicit Q/DQ (static, symmetric int8 activations, per-channel weights)",
    }
    options: ClassVar[dict[str, tuple[str, ...]]] = {"cuda_graph": ("off", "on")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime: Any = None
        self.engine: Any = None
        self.slots: list[_Slot] = []
        self.input_names: list[str] = []
        self.input_dtypes: dict[str, Any] = {}
        self.timer: CudaEventTimer | None = None
        self._local = threading.local()

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        if model.kind == "onnx" and precision in LOW_PRECISION:
            return (
                f"TensorRT networks are strongly typed: {precision} needs a converted graph, which "
                "inferbench makes from a torch module; convert the ONNX file (e.g. ModelOpt AutoCast)"
            )
        return super().unsupported_reason(model, precision)

    def stream_count(self) -> int:
        return self.streams or 2

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import tensorrt as trt

        require_cuda()
        if precision == "bf16":
            check_bf16()
        reset_peak_memory()
        source, details = self._source(model, precision)
        gpu = gpu_info()
        engine_file = engine_cache_path(
            self.cache_dir, model, precision, batch_size, source, trt.__version__, gpu
        )
        serialized = read_published(engine_file)
        cached = serialized is not None
        if serialized is None:
            timing = timing_cache_path(self.cache_dir, trt.__version__, gpu)
            details["timing_cache"] = {"file": timing.name, "existed": timing.is_file()}
            self._build(trt, source, engine_file, timing, model, batch_size)
            serialized = read_published(engine_file)
        if serialized is None:
            raise BackendError(f"the engine just built, {engine_file.name}, does not match its manifest")
        self.runtime = trt.Runtime(_logger(trt))  # kept: it must outlive the engine it made
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {engine_file.name}")
        found = layer_precisions(
            self.engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        )
        if found and precision not in found:
            raise UnsupportedError(
                f"TensorRT ran no layer in {precision}; layer types: {', '.join(sorted(found))}"
            )
        self._allocate(model, batch_size)
        details.update(
            tensorrt_version=trt.__version__,
            gpu=gpu,
            engine_cached=cached,
            strongly_typed=True,
            profile={"min": batch_size, "opt": batch_size, "max": batch_size},
            layer_precisions=sorted(found) or "unavailable",
            engine_device_memory_mb=round(getattr(self.engine, "device_memory_size_v2", 0) / 2**20, 1),
            cuda_graph=self.settings.get("cuda_graph"),
        )
        details.update(self._transfer_details(model, batch_size))
        details.update(memory_details())
        return PrepareInfo(
            artifact=engine_file,
            artifact_cached=cached,
            engine_precision=",".join(sorted(found)) if found else precision,
            details=details,
        )

    def _source(self, model: ModelDef, precision: str) -> tuple[Path, dict[str, Any]]:
        """The ONNX graph the engine is built from: typed for fp16/bf16, Q/DQ for int8."""
        if precision in LOW_PRECISION:
            path, cached = onnx_file(model, self.cache_dir, precision)
            return path, {"source": f"torch export in {precision}, fp32 I/O", "onnx_cached": cached}
        path, cached = onnx_file(model, self.cache_dir)
        if precision != "int8":
            return path, {"source": "torch export, fp32", "onnx_cached": cached}
        if importlib.util.find_spec("onnxruntime") is None:
            raise UnsupportedError(f"int8 needs onnxruntime's static QDQ quantizer; {INSTALL_HINT}")
        batches = self.calibration_batches(model)
        path, cached = static_qdq(
            path, derived_dir(path, self.cache_dir), batches, self.calibration_samples, TENSORRT
        )
        return path, {
            "source": "static QDQ (symmetric int8)",
            "quantization": TENSORRT.tag,
            "onnx_cached": cached,
        }

    def _input_shape(self, model: ModelDef, name: str, batch_size: int) -> tuple[int, ...]:
        spec = next((s for s in model.inputs if s.name == name), None)
        if spec is None:
            raise BackendError(f"the engine's input {name!r} is not one of the model's inputs")
        return (batch_size, *spec.shape)

    def _build(
        self, trt: Any, source: Path, engine_file: Path, timing: Path, model: ModelDef, batch: int
    ) -> None:
        logger = _logger(trt)
        builder = trt.Builder(logger)
        strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(min(parser.num_errors, 3)))
            raise BackendError(f"TensorRT's ONNX parser rejected {source.name}: {errors}")
        config = builder.create_builder_config()
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 layers in true fp32
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets the inspector show types
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            shape = self._input_shape(model, name, batch)
            profile.set_shape(name, shape, shape, shape)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(read_published(timing) or b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT could not build an engine from {source.name} (see the cell log)")
        # Unique temporary names: two sweeps sharing a cache may build at once, and a reader
        # must only ever find a whole engine or timing cache (the last writer's wins), each
        # with the manifest of its own bytes.
        publish_file(timing, bytes(config.get_timing_cache().serialize()))
        publish_file(engine_file, bytes(serialized))

    def _allocate(self, model: ModelDef, batch_size: int) -> None:
        import tensorrt as trt
        import torch

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        dtypes = {n: getattr(torch, _TORCH_DTYPES[self.engine.get_tensor_dtype(n).name]) for n in names}
        self.input_dtypes = {n: dtypes[n] for n in self.input_names}
        count = self.stream_count() if self.mode == "throughput" else 1
        for _ in range(count):
            context = self.engine.create_execution_context()
            for name in self.input_names:
                context.set_input_shape(name, self._input_shape(model, name, batch_size))
            outputs = []
            for name in (n for n in names if not is_input[n]):
                tensor = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtypes[name], device="cuda")
                context.set_tensor_address(name, tensor.data_ptr())
                outputs.append(tensor)
            self.slots.append(_Slot(context, torch.cuda.Stream(), outputs))
        if self.mode == "latency":
            self.timer = CudaEventTimer(self.slots[0].stream)
            if self.settings.get("cuda_graph") == "on":
                self._capture(self.slots[0], self.to_native(model.make_inputs(batch_size, model.seed)))

    def _capture(self, slot: _Slot, example: tuple[Any, ...]) -> None:
        """Record the enqueue as a CUDA graph over static input buffers."""
        import torch

        slot.static_inputs = [t.clone() for t in example]
        for name, tensor in zip(self.input_names, slot.static_inputs, strict=True):
            slot.context.set_tensor_address(name, tensor.data_ptr())
        slot.context.execute_async_v3(slot.stream.cuda_stream)  # settles shapes before capture
        slot.stream.synchronize()
        slot.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(slot.graph, stream=slot.stream):
            slot.context.execute_async_v3(slot.stream.cuda_stream)
        slot.stream.synchronize()

    def _transfer_details(self, model: ModelDef, batch_size: int) -> dict[str, Any]:
        arrays = model.make_inputs(batch_size, model.seed)
        outputs = self.run(self.to_native(arrays))
        self.synchronize()
        return copy_details(
            h2d=lambda: self.to_native(arrays),
            d2h=lambda: [o.cpu() for o in outputs],
            h2d_bytes=sum(a.nbytes for a in arrays.values()),
            d2h_bytes=sum(o.numel() * o.element_size() for o in outputs),
        )

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import torch

        tensors = tuple(
            torch.from_numpy(np.ascontiguousarray(inputs[n])).to("cuda", self.input_dtypes[n]).contiguous()
            for n in self.input_names
        )
        torch.cuda.synchronize()
        return tensors

    def run(self, inputs: Any) -> Any:
        return self._enqueue(self.slots[0], inputs, self.timer)

    def run_on(self, stream: int, inputs: Any) -> Any:
        return self._enqueue(self.slots[stream], inputs, None)

    def _enqueue(self, slot: _Slot, inputs: Any, timer: CudaEventTimer | None) -> Any:
        import torch

        if slot.graph is not None:
            with torch.cuda.stream(slot.stream):
                if timer is not None:
                    timer.start()
                for static, given in zip(slot.static_inputs, inputs, strict=True):
                    static.copy_(given, non_blocking=True)
                slot.graph.replay()
                if timer is not None:
                    timer.stop()
            return slot.outputs
        for name, tensor in zip(self.input_names, inputs, strict=True):
            slot.context.set_tensor_address(name, tensor.data_ptr())
        if timer is not None:
            timer.start()
        if not slot.context.execute_async_v3(slot.stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed (see the cell log)")
        if timer is not None:
            timer.stop()
        return slot.outputs

    def enter_stream(self, stream: int) -> None:
        self._local.slot = stream

    def synchronize(self) -> None:
        self.slots[getattr(self._local, "slot", 0)].stream.synchronize()

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        self.synchronize()  # outputs are written on the engine's stream, not torch's current one
        return [o.float().cpu().numpy() for o in outputs]

    def close(self) -> None:
        self.slots = []
        self.timer = None
        self.engine = self.runtime = None  # the engine goes first


_LOGGER: Any = None


def _logger(trt: Any) -> Any:
    global _LOGGER
    if _LOGGER is None:  # TensorRT wants one logger per process
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER
