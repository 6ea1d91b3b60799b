"""OpenVINO on the CPU plugin (oneDNN), read from the exported ONNX file.

The inference precision is always set explicitly: on CPUs with AVX512_BF16 or AMX the
plugin otherwise runs bf16 silently. The precision that really ran is read back from the
compiled model's runtime graph and recorded; a bf16 request that ran in f32 (no native bf16)
is reported `unsupported` rather than passed off as bf16, and the share of compute layers
that ran in the requested precision is recorded (`lowp_share`). INT8 is NNCF post-training
quantization (`nncf.quantize`) calibrated on `calibration_samples` samples of the model's own
inputs (default 32; NNCF's own default subset is 300), with the transformer model type for
transformers; the non-quantized remainder runs in f32.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import Backend, PrepareInfo, ThroughputRun
from inferbench.backends.lowp import OV_LOW, openvino_share
from inferbench.backends.onnx_export import derived_dir, onnx_file
from inferbench.errors import BackendError, UnsupportedError
from inferbench.machine.capability import this_cpu
from inferbench.store.artifacts import arrays_digest, file_digest, obtain

if TYPE_CHECKING:
    from inferbench.models import ModelDef

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def runtime_ops(compiled: Any) -> list[tuple[str, str]]:
    """(layer type, runtime precision) of every layer in a compiled model's execution graph."""
    found = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        found.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str)))
    return found


class OpenVinoBackend(Backend):
    name = "openvino"
    cpu_engine = "openvino"
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
    # Serve mode with dynamic batching: the batch dimension is reshaped to a range up to
    # `serve_batch` instead of the cell's static batch (the CPU plugin runs dynamic shapes).
    variable_batch = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request: Any = None
        self.compiled: Any = None
        self.infer_requests = 1
        self.requests: list[Any] = []  # serve mode: one infer request per in-flight slot
        self.async_queue: Any = None  # serve mode: the same number of requests, started async

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import openvino as ov

        path, cached = onnx_file(model, self.cache_dir)
        core = ov.Core()
        ir_path, artifact_cached = self._fp32_ir(core, path)
        if precision == "int8" and not model.graph_precision:  # else its own Q/DQ pairs decide
            ir_path, artifact_cached = self._nncf_int8(core, model, path, ir_path)
        try:
            ov_model = core.read_model(str(ir_path))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not read {ir_path}: {exc}") from exc
        # Static shapes let the CPU plugin pick its fastest kernels; serve mode's merged batches
        # need the batch dimension as a range.
        ov_model.reshape({spec.name: self._shape(spec, batch_size) for spec in model.inputs})
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            # Off: it would quantize activations of FC layers on the fly.
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
        }
        if self.mode in ("throughput", "serve"):
            # The plugin picks streams for the THROUGHPUT hint unless told (benchmark_app's way).
            config["PERFORMANCE_HINT"] = "THROUGHPUT"
            if self.streams:
                config["NUM_STREAMS"] = self.streams
        else:
            config.update({"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        try:
            compiled = core.compile_model(ov_model, "CPU", config)
        except RuntimeError as exc:
            # The plugin picks bf16 from the CPU's own flags, not from ONEDNN_MAX_CPU_ISA: on a
            # bf16 CPU capped below it (acting as an AVX2 one), it asks the capped oneDNN for
            # bf16 kernels it no longer has, and compiling fails. That is this CPU's missing
            # bf16, said as the capability model says it, not a broken engine.
            support = self.cpu_support(this_cpu(), precision)
            if precision != "bf16" or support is None or support.runs:
                raise
            first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            why = f"{support.why} (OpenVINO failed to compile under the cap: {first})"
            raise UnsupportedError(why) from exc
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.infer_requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        if self.mode == "serve":
            self.requests = [compiled.create_infer_request() for _ in range(self.stream_count())]
            self.async_queue = ov.AsyncInferQueue(compiled, self.stream_count())
            self.async_queue.set_callback(_finished)
        share, counts = openvino_share(runtime_ops(compiled), precision)
        # Report what ran, not what was asked for: the share of compute layers decides, and
        # a share of zero is no bf16/int8 result at all.
        if precision in OV_LOW and not share:
            what = "bf16 despite the bf16 hint" if precision == "bf16" else "int8 after NNCF quantization"
            raise UnsupportedError(f"the CPU plugin ran no compute layer in {what} (ran {counts})")
        details = {
            "onnx_cached": cached,
            "config": {k: str(v) for k, v in config.items()},
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "runtime_precisions": counts,
            "num_streams": str(compiled.get_property("NUM_STREAMS")),
            "infer_requests": self.infer_requests,
            **({"quantization": model.graph_precision} if model.graph_precision else {}),
        }
        ran = ",".join(sorted(counts)) if counts else "unknown"
        return PrepareInfo(
            artifact=ir_path.with_suffix(".bin"),
            artifact_cached=artifact_cached,
            engine_precision=ran,
            details=details,
            lowp_share=share if precision in OV_LOW else None,
        )

    def _shape(self, spec: Any, batch_size: int) -> Any:
        import openvino as ov

        shape = list(spec.shape_at(batch_size))
        if self.serve_batch <= batch_size or spec.batch_axis is None:
            return shape
        dims = [ov.Dimension(d) for d in shape]
        dims[spec.batch_axis] = ov.Dimension(1, self.serve_batch)
        return ov.PartialShape(dims)

    def _fp32_ir(self, core: Any, onnx_path: Path) -> tuple[Path, bool]:
        """The FP32 IR (.xml + .bin) of the ONNX file, published whole; (xml, from_cache)."""
        import openvino as ov

        parts = {"artifact": "openvino-ir", "source": file_digest(onnx_path), "openvino": ov.__version__}

        def convert(tmp: Path) -> None:
            try:
                ov_model = core.read_model(str(onnx_path))
            except Exception as exc:
                failed = unconverted_ops(str(exc))
                if failed:  # the frontend's own verdict on this graph: no cell of it can run
                    raise UnsupportedError(
                        f"OpenVINO's ONNX frontend cannot convert {onnx_path.name}: "
                        f"{', '.join(failed)} failed to convert"
                    ) from exc
                raise BackendError(f"OpenVINO could not read {onnx_path.name}: {exc}") from exc
            ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)

        folder, cached = obtain(derived_dir(onnx_path, self.cache_dir), "ov-ir", parts, convert)
        return folder / "model.xml", cached

    def _nncf_int8(self, core: Any, model: ModelDef, onnx_path: Path, ir_path: Path) -> tuple[Path, bool]:
        """NNCF-quantized IR, keyed by the source graph, versions and calibration data."""
        import nncf
        import openvino as ov

        batches = self.calibration_batches(model)
        transformer = bool(model.transformer)
        parts = {
            "artifact": "openvino-nncf-int8",
            "source": file_digest(onnx_path),
            "openvino": ov.__version__,
            "nncf": nncf.__version__,
            "calibration": arrays_digest(batches),
            "subset_size": len(batches),
            "model_type": "transformer" if transformer else None,
        }

        def quantize(tmp: Path) -> None:
            quantized = nncf.quantize(
                core.read_model(str(ir_path)),
                nncf.Dataset(batches),
                subset_size=len(batches),
                model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            )
            ov.save_model(quantized, str(tmp / "model.xml"), compress_to_fp16=False)

        folder, cached = obtain(derived_dir(onnx_path, self.cache_dir), "ov-int8", parts, quantize)
        return folder / "model.xml", cached

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import openvino as ov

        # Tensors over the numpy buffers, in port order: setting them is cheaper per call than
        # handing infer() a dict (about 12 vs 21 us per call on the mlp model).
        return [
            ov.Tensor(np.require(inputs[_port_name(port, inputs)], requirements="C"), shared_memory=True)
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
        if self.mode == "serve" and self.streams:  # the slots asked for, each its own request
            return self.streams
        return self.infer_requests

    def run_on(self, stream: int, inputs: Any) -> Any:
        request = self.requests[stream] if self.requests else self.request
        for index, tensor in enumerate(inputs):
            request.set_input_tensor(index, tensor)
        return request.infer()

    # Serve mode: an AsyncInferQueue of one request per slot; the plugin runs each on its own
    # executor threads and calls back from one of them (benchmark_app's way of keeping several
    # requests in flight without a thread of ours per request). The dispatcher keeps at most
    # that many in flight, so start_async finds a request idle (or waits the moment until the
    # one just finished is marked so).
    async_api = "AsyncInferQueue.start_async"

    def submit(self, stream: int, inputs: Any, done: Callable[[BaseException | None], None]) -> None:
        self.async_queue.start_async(dict(enumerate(inputs)), done, share_inputs=True)

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
        slots: list[int] = []

        def completed(request: Any, userdata: tuple[int, int]) -> None:
            ends.append(clock())
            starts.append(userdata[0])
            slots.append(userdata[1])

        queue.set_callback(completed)
        begin, i = clock(), 0
        while clock() - begin < seconds * 1e9 or len(ends) < min_requests:
            slot = queue.get_idle_request_id()  # wait here, so a request's start is its real start
            queue.start_async(inputs[i % len(inputs)], userdata=(clock(), slot), share_inputs=True)
            i += 1
        queue.wait_all()
        end = clock()
        return ThroughputRun(
            list(starts), list(ends), batch_size, self.infer_requests, begin, end, list(slots)
        )

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.array(v, dtype=np.float32) for v in outputs.values()]

    def close(self) -> None:
        self.request = None
        self.requests = []
        self.async_queue = None
        self.compiled = None


def _finished(request: Any, done: Callable[[BaseException | None], None]) -> None:
    """The AsyncInferQueue's callback: OpenVINO calls it with the request and the userdata
    start_async was given (the dispatcher's completion)."""
    done(None)


def _port_name(port: Any, inputs: dict[str, np.ndarray]) -> str:
    """The input name a compiled port answers to: a port can carry several tensor names (a
    graph input that feeds a Reshape kept both), so `get_any_name` may give another one."""
    names = port.get_names()
    return next((name for name in sorted(names) if name in inputs), port.get_any_name())


def unconverted_ops(message: str) -> list[str]:
    """The operators OpenVINO's frontend names in "Model wasn't fully converted" (`Conv-16`,
    `ReduceMean-16`); [] for any other failure (then it is an engine error)."""
    if "wasn't fully converted" not in message:
        return []
    return list(dict.fromkeys(re.findall(r"^-- (\S+) with a message:", message, re.M)))
