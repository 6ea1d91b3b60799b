"""OpenVINO on the CPU plugin (oneDNN), read from the exported ONNX file.

The inference precision is always set explicitly: on CPUs with AVX512_BF16 or AMX the
plugin otherwise runs bf16 silently. The precision that really ran is read back from the
compiled model's runtime graph and recorded.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import Backend, PrepareInfo
from backends.onnx_export import onnx_file
from bench.errors import BackendError

if TYPE_CHECKING:
    from models import ModelDef

OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
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
    version_packages: ClassVar[tuple[str, ...]] = ("openvino", "onnx", "torch")
    accepts_onnx = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request: Any = None

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import openvino as ov

        path, cached = onnx_file(model, self.cache_dir)
        core = ov.Core()
        try:
            ov_model = core.read_model(str(path))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not read {path.name}: {exc}") from exc
        ir_path = path.with_name("model.xml")
        if not ir_path.is_file():
            ov.save_model(ov_model, str(ir_path), compress_to_fp16=False)
        # Static shapes let the CPU plugin pick its fastest kernels.
        ov_model.reshape({spec.name: [batch_size, *spec.shape] for spec in model.inputs})
        config = {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Off: it would quantize activations of FC layers on the fly.
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
        }
        compiled = core.compile_model(ov_model, "CPU", config)
        self.request = compiled.create_infer_request()
        counts = runtime_precisions(compiled)
        details = {
            "onnx_cached": cached,
            "config": {k: str(v) for k, v in config.items()},
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "runtime_precisions": dict(counts),
        }
        ran = ",".join(sorted(counts)) if counts else "unknown"
        return PrepareInfo(
            artifact=ir_path.with_suffix(".bin"), engine_precision=ran, details=details
        )

    def run(self, inputs: Any) -> Any:
        return self.request.infer(inputs, share_inputs=True, share_outputs=True)

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.array(v, dtype=np.float32) for v in outputs.values()]

    def close(self) -> None:
        self.request = None
