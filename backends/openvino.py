"""OpenVINO on the CPU plugin (oneDNN), read from the exported ONNX file.

The inference precision is always set explicitly: on CPUs with AVX512_BF16 or AMX the
plugin otherwise runs bf16 silently. The precision that really ran is read back from the
compiled model's runtime graph and recorded; a bf16 request that ran in f32 (no native bf16)
is reported `unsupported` rather than passed off as bf16. INT8 is NNCF post-training
quantization (`nncf.quantize`) calibrated on `calibration_samples` samples of the model's own
inputs (default 32; NNCF's own default subset is 300), with the transformer model type for
transformers; the non-quantized remainder runs in f32.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import Backend, PrepareInfo, ThroughputRun
from inferbench.backends.onnx_export import derived_dir, onnx_file
from inferbench.errors import BackendError, UnsupportedError
from inferbench.util import cache_key

if TYPE_CHECKING:
    from inferbench.models import ModelDef

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# Layers whose runtime precision tells what the arithmetic ran in.
COMPUTE_LAYERS = {
    "Convolution",
    "FullyConnected",
    "MatMul",
    "RNNSeq",
    "RNNCell",
    "MHA",
    "ScaledAttn",
    "Subgraph",  # snippets-fused blocks (a whole small MLP can become one)
}


def runtime_precisions(compiled: Any) -> Counter[str]:
    """Count the runtime precision of compute layers in a compiled model's execution graph."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in COMPUTE_LAYERS:
            counts[info["runtimePrecision"].astype(str)] += 1
    return counts


class OpenVinoBackend(Backend):
    name = "openvino"
    requires = ("openvino", "onnx")
    extra = "openvino"
    accepts_onnx = True
    precisions = frozenset({"fp32", "bf16", "int8"})
    precision_notes: ClassVar[dict[str, str]] = {
        "fp32": "INFERENCE_PRECISION_HINT=f32 (explicit: the default is bf16 on bf16-capable CPUs)",
        "bf16": "INFERENCE_PRECISION_HINT=bf16; runtime precision checked",
        "int8": "NNCF post-training quantization; runtime precision checked",
    }
    version_packages: ClassVar[tuple[str, ...]] = ("openvino", "nncf", "onnx", "torch")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request: Any = None
        self.compiled: Any = None
        self.infer_requests = 1

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import openvino as ov

        path, cached = onnx_file(model, self.cache_dir)
        core = ov.Core()
        try:
            ov_model = core.read_model(str(path))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not read {path.name}: {exc}") from exc
        ir_path = derived_dir(path, self.cache_dir) / f"model.ov-{ov.__version__.split('-')[0]}.xml"
        if not ir_path.is_file():
            ov.save_model(ov_model, str(ir_path), compress_to_fp16=False)
        artifact_cached = cached
        if precision == "int8":
            ov_model, ir_path, artifact_cached = self._nncf_int8(core, model, ov_model, ir_path)
        # Static shapes let the CPU plugin pick its fastest kernels.
        ov_model.reshape({spec.name: [batch_size, *spec.shape] for spec in model.inputs})
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            # Off: it would quantize activations of FC layers on the fly.
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
        }
        if self.mode == "throughput":
            # The plugin picks streams for the THROUGHPUT hint unless told (benchmark_app's way).
            config["PERFORMANCE_HINT"] = "THROUGHPUT"
            if self.streams:
                config["NUM_STREAMS"] = self.streams
        else:
            config.update({"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        compiled = core.compile_model(ov_model, "CPU", config)
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.infer_requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        counts = runtime_precisions(compiled)
        # Report what ran, not what was asked for.
        if precision == "bf16" and "bf16" not in counts:
            raise UnsupportedError(
                f"the CPU plugin ran no compute layer in bf16 despite the bf16 hint (ran {dict(counts)})"
            )
        if precision == "int8" and not {"i8", "u8"} & set(counts):
            raise UnsupportedError(
                f"after NNCF quantization the CPU plugin ran no compute layer in int8 (ran {dict(counts)})"
            )
        details = {
            "onnx_cached": cached,
            "config": {k: str(v) for k, v in config.items()},
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "runtime_precisions": dict(counts),
            "num_streams": str(compiled.get_property("NUM_STREAMS")),
            "infer_requests": self.infer_requests,
        }
        ran = ",".join(sorted(counts)) if counts else "unknown"
        return PrepareInfo(
            artifact=ir_path.with_suffix(".bin"),
            artifact_cached=artifact_cached,
            engine_precision=ran,
            details=details,
        )

    def _nncf_int8(self, core: Any, model: ModelDef, ov_model: Any, ir_path: Any) -> tuple[Any, Any, bool]:
        """NNCF-quantized IR beside the FP32 one (cached); returns (model, path, from_cache)."""
        import nncf
        import openvino as ov

        key = cache_key(ov.__version__, nncf.__version__, self.calibration_samples, bool(model.transformer))
        out = ir_path.with_name(f"model.int8-{key}.xml")
        if out.is_file():
            return core.read_model(str(out)), out, True
        batches = self.calibration_batches(model)
        quantized = nncf.quantize(
            ov_model,
            nncf.Dataset(batches),
            subset_size=len(batches),
            model_type=nncf.ModelType.TRANSFORMER if model.transformer else None,
        )
        ov.save_model(quantized, str(out), compress_to_fp16=False)
        return quantized, out, False

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import openvino as ov

        # Tensors over the numpy buffers, in port order: setting them is cheaper per call than
        # handing infer() a dict (about 12 vs 21 us per call on the mlp model).
        return [
            ov.Tensor(np.ascontiguousarray(inputs[port.get_any_name()]), shared_memory=True)
            for port in self.compiled.inputs
        ]

    def run(self, inputs: Any) -> Any:
        for index, tensor in enumerate(inputs):
            self.request.set_input_tensor(index, tensor)
        return self.request.infer()

    def engine_time_ns(self) -> int | None:
        # The plugin's own measurement of the last infer() (ms), as benchmark_app reports it.
        return int(self.request.latency * 1e6)

    def stream_count(self) -> int:
        return self.infer_requests

    def run_throughput(
        self,
        inputs: list[Any],
        batch_size: int,
        seconds: float,
        min_requests: int,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> ThroughputRun:
        """The plugin's optimal number of infer requests kept busy through an AsyncInferQueue,
        as benchmark_app does; each request is timed from its start to its callback."""
        import openvino as ov

        queue = ov.AsyncInferQueue(self.compiled, self.infer_requests)
        starts: list[int] = []
        ends: list[int] = []

        def completed(request: Any, started: int) -> None:
            ends.append(clock())
            starts.append(started)

        queue.set_callback(completed)
        begin, i = clock(), 0
        while clock() - begin < seconds * 1e9 or len(ends) < min_requests:
            queue.get_idle_request_id()  # wait here, so a request's start is its real start
            queue.start_async(inputs[i % len(inputs)], userdata=clock(), share_inputs=True)
            i += 1
        queue.wait_all()
        end = clock()
        return ThroughputRun(list(starts), list(ends), batch_size, self.infer_requests, begin, end)

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.array(v, dtype=np.float32) for v in outputs.values()]

    def close(self) -> None:
        self.request = None
        self.compiled = None
