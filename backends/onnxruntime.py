"""ONNX Runtime, CPU execution provider.

Transformer models first go through ORT's transformer optimizer (attention/LayerNorm/GELU
fusions), the step ORT's own benchmark script applies; the fused-op counts are recorded.
INT8 is static QDQ quantization (per-channel int8 weights, uint8 activations, MinMax
calibration on the model's own inputs) for convolutional models, and dynamic quantization
(int8 weights, activations quantized per call) for transformers and recurrent models, as
ORT's quantization guide recommends. BF16 is not offered: the CPU provider has no bf16
MatMul/Conv kernels, so a bf16 graph does not load.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import Backend, PrepareInfo
from inferbench.backends.lowp import ort_share
from inferbench.backends.onnx_export import derived_dir, onnx_file
from inferbench.backends.qdq import static_qdq
from inferbench.errors import BackendError
from inferbench.store.artifacts import file_digest, obtain

if TYPE_CHECKING:
    from inferbench.models import ModelDef, ModelRef

BF16_REASON = (
    "ONNX Runtime's CPU execution provider has no bf16 MatMul/Conv kernels "
    "(a bf16 graph fails with NOT_IMPLEMENTED)"
)
QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "DynamicQuantizeLSTM",
    "ConvInteger",
)


def count_ops(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts = Counter(node.op_type for node in graph.node)
    return {name: counts[name] for name in names if counts[name]}


def session_options(intra_threads: int) -> Any:
    """The session options every ORT cell runs with (and the crosscheck's reference loop)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def ort_optimized_ops(path: str, threads: int) -> list[str]:
    """Op types of the graph ONNX Runtime executes for `path` (its optimized form, dumped by a
    throw-away session with the same optimization level as the timed ones)."""
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="inferbench-ort-graph-") as tmp:
        options = session_options(threads)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        return _all_op_types(graph)


def _all_op_types(graph: Any) -> list[str]:
    ops = []
    for node in graph.node:
        ops.append(node.op_type)
        for attr in node.attribute:  # subgraphs (If/Loop/Scan bodies)
            if attr.g is not None and len(attr.g.node):
                ops.extend(_all_op_types(attr.g))
    return ops


class OrtBackend(Backend):
    name = "onnxruntime"
    cpu_engine = "onnxruntime"
    requires = ("onnxruntime", "onnx")
    extra = "onnxruntime"
    version_packages: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx", "torch")
    accepts_onnx = True
    precisions = frozenset({"fp32", "int8"})
    precision_notes: ClassVar[dict[str, str]] = {
        "int8": "static QDQ (per-channel) for CNNs, dynamic for transformers/LSTM",
    }
    provider = "CPUExecutionProvider"
    variable_batch = True  # the ONNX export's batch axis is dynamic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: Any = None
        self.sessions: list[Any] = []

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        return BF16_REASON if precision == "bf16" else super().unsupported_reason(model, precision)

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import onnxruntime as ort

        path, cached = onnx_file(model, self.cache_dir)
        details: dict[str, Any] = {"onnx_cached": cached, "provider": self.provider}
        if model.transformer:
            path, fused = self._optimize_transformer(
                path, model.transformer, derived_dir(path, self.cache_dir)
            )
            details["fused_ops"] = fused
        artifact_cached = cached
        share = None
        if precision == "int8":
            # A model that arrives quantized runs as it is (inferbench.models.onnx_precision).
            path, artifact_cached, method = (
                (path, cached, model.graph_precision)
                if model.graph_precision
                else self._quantize(model, path, batch_size)
            )
            details["quantization"] = method
            details["quant_ops"] = count_ops(path, QUANT_OPS)
            # What the session really executes: the graph after ORT's own optimizations.
            share, details["executed_compute_ops"] = ort_share(ort_optimized_ops(str(path), 1))
        # Throughput mode: one session per stream, the threads split between them (like
        # OpenVINO's CPU streams); concurrent runs on one session would share one thread pool.
        # Serve mode the same: one session per in-flight slot. The exported graph's batch axis
        # is dynamic, so one session runs the merged batches of every size.
        concurrent = self.mode in ("throughput", "serve")
        sessions = self.stream_count() if concurrent else 1
        intra = self.threads_per_stream() if concurrent else self.threads
        options = session_options(intra)
        try:
            self.sessions = [
                ort.InferenceSession(str(path), options, providers=[self.provider]) for _ in range(sessions)
            ]
        except Exception as exc:
            raise BackendError(f"ONNX Runtime could not load {path.name}: {exc}") from exc
        self.session = self.sessions[0]
        details["threads"] = {"intra_op": intra, "inter_op": 1, "sessions": sessions}
        return PrepareInfo(
            artifact=path,
            artifact_cached=artifact_cached,
            engine_precision=precision,
            details=details,
            lowp_share=share,
        )

    def _optimize_transformer(
        self, path: Path, info: dict[str, Any], folder: Path, *, use_gpu: bool = False
    ) -> tuple[Path, dict[str, int]]:
        """ORT's transformer fusions, published once per source graph (never rewritten in
        place per cell); the fused-op counts are stored with the artifact. `use_gpu`: the
        fusions into the CUDA provider's contrib ops, a separate artifact."""
        import onnxruntime
        from onnxruntime.transformers import optimizer

        artifact = "ort-transformer-gpu" if use_gpu else "ort-transformer"
        parts = {
            "artifact": artifact,
            "source": file_digest(path),
            "onnxruntime": onnxruntime.__version__,
            "transformer": info,
            "opt_level": 0,
        }

        def optimize(tmp: Path) -> None:
            opt = optimizer.optimize_model(
                str(path),
                model_type=info["model_type"],
                num_heads=info["num_heads"],
                hidden_size=info["hidden_size"],
                opt_level=0,  # graph fusions only; ORT's own level-99 rewrites happen at load
                use_gpu=use_gpu,
            )
            fused = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
            (tmp / "fused_ops.json").write_text(json.dumps(fused, sort_keys=True))
            opt.save_model_to_file(str(tmp / "model.onnx"))

        out, _ = obtain(folder, artifact, parts, optimize)
        return out / "model.onnx", json.loads((out / "fused_ops.json").read_text())

    def _quantize(self, model: ModelDef, path: Path, batch_size: int) -> tuple[Path, bool, str]:
        """Quantized copy of `path` (cached); returns (path, from_cache, method)."""
        import onnxruntime
        from onnxruntime import quantization as q

        recurrent = bool(count_ops(path, ("LSTM", "GRU", "RNN")))
        method = "dynamic" if model.transformer or recurrent else "static-qdq"
        folder = derived_dir(path, self.cache_dir)
        if method == "static-qdq":
            out, cached = static_qdq(path, folder, self.calibration_batches(model), self.calibration_samples)
            return out, cached, method
        parts = {
            "artifact": "ort-dynamic-int8",
            "source": file_digest(path),
            "onnxruntime": onnxruntime.__version__,
            "weight_type": "QInt8",
            "per_channel": False,
        }

        def quantize(tmp: Path) -> None:
            import onnx

            # Fused contrib ops (Attention, SkipLayerNorm) defeat ONNX shape inference; their
            # outputs are float, which is what DefaultTensorType tells the quantizer.
            q.quantize_dynamic(
                str(path),
                str(tmp / "model.onnx"),
                weight_type=q.QuantType.QInt8,
                per_channel=False,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )

        out, cached = obtain(folder, "int8-dynamic", parts, quantize)
        return out / "model.onnx", cached, method

    def run(self, inputs: Any) -> Any:
        return self.session.run(None, inputs)

    def run_on(self, stream: int, inputs: Any) -> Any:
        return self.sessions[stream].run(None, inputs)

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def close(self) -> None:
        self.session = None
        self.sessions = []
