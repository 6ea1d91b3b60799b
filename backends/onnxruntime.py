"""ONNX Runtime, CPU execution provider.

Transformer models first go through ORT's transformer optimizer (attention/LayerNorm/GELU
fusions), the step ORT's own benchmark script applies; the fused-op counts are recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import Backend, PrepareInfo
from backends.onnx_export import onnx_file
from bench.errors import BackendError

if TYPE_CHECKING:
    from pathlib import Path

    from models import ModelDef


class OrtBackend(Backend):
    name = "onnxruntime"
    requires = ("onnxruntime", "onnx")
    extra = "onnxruntime"
    version_packages: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx", "torch")
    accepts_onnx = True
    provider = "CPUExecutionProvider"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: Any = None

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import onnxruntime as ort

        path, cached = onnx_file(model, self.cache_dir)
        details: dict[str, Any] = {"onnx_cached": cached, "provider": self.provider}
        if model.transformer:
            path, fused = self._optimize_transformer(path, model.transformer)
            details["fused_ops"] = fused
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[self.provider])
        except Exception as exc:
            raise BackendError(f"ONNX Runtime could not load {path.name}: {exc}") from exc
        details["threads"] = {"intra_op": self.threads, "inter_op": 1}
        return PrepareInfo(artifact=path, engine_precision="fp32", details=details)

    def _optimize_transformer(
        self, path: Path, info: dict[str, Any]
    ) -> tuple[Path, dict[str, int]]:
        from onnxruntime.transformers import optimizer

        out = path.with_name("model.ort-transformer.onnx")
        opt = optimizer.optimize_model(
            str(path),
            model_type=info["model_type"],
            num_heads=info["num_heads"],
            hidden_size=info["hidden_size"],
            opt_level=0,  # graph fusions only; ORT's own level-99 rewrites happen at load
        )
        fused = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(str(out))
        return out, fused

    def run(self, inputs: Any) -> Any:
        return self.session.run(None, inputs)

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def close(self) -> None:
        self.session = None
