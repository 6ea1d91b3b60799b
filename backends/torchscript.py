"""TorchScript: `torch.jit.trace`, then `torch.jit.freeze` (weights folded in as constants)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.base import PrepareInfo
from backends.torch_eager import TorchBackend
from bench.errors import BackendError
from bench.util import artifact_path

if TYPE_CHECKING:
    from models import ModelDef


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch

        example = model.torch_inputs(batch_size, model.seed)
        try:
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(model.module, example, check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
        except Exception as exc:
            raise BackendError(f"torch.jit.trace failed: {exc}") from exc
        path = artifact_path(self.cache_dir, "torchscript", model, precision, batch_size, ".pt")
        torch.jit.save(frozen, str(path))
        self.module = frozen
        return PrepareInfo(artifact=path, engine_precision="fp32", details={"mode": "trace+freeze"})
