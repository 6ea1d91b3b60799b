"""TorchScript: `torch.jit.trace`, then `torch.jit.freeze` (weights folded in as constants).

BF16 traces a bf16 copy of the model (weights and activations in bf16); INT8 traces the
dynamically quantized model. A model that does not trace in a precision is `unsupported`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from inferbench.backends.base import PrepareInfo
from inferbench.backends.torch_eager import TorchBackend, dynamic_int8
from inferbench.errors import BackendError, UnsupportedError, first_line
from inferbench.store.artifacts import model_fingerprint, obtain

if TYPE_CHECKING:
    from inferbench.models import ModelDef


class TorchScriptBackend(TorchBackend):
    name = "torchscript"
    variable_batch = False  # a trace may hold the traced batch size as a constant
    precision_notes: ClassVar[dict[str, str]] = {
        "bf16": "bf16 weights and activations, traced",
        "int8": "traced dynamically quantized model (Linear/LSTM); convolutional models unsupported",
    }

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch

        details: dict[str, Any] = {"mode": "trace+freeze"}
        module: Any = model.module
        if precision == "bf16":
            module = copy.deepcopy(module).to(torch.bfloat16)
            self.bf16_inputs = True
            details["mode"] += ", bf16 weights and activations"
        elif precision == "int8":
            module, details["quantized_layers"] = dynamic_int8(module)
            details["mode"] += ", dynamic int8"
        example = self.to_native(model.make_inputs(batch_size, model.seed))
        try:
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(module, example, check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
        except Exception as exc:
            if precision != "fp32":
                raise UnsupportedError(f"the {precision} model does not trace: {first_line(exc)}") from exc
            raise BackendError(f"torch.jit.trace failed: {first_line(exc)}") from exc
        # Traced afresh every time (artifact_cached False); saved only for its size, published
        # whole under the model's fingerprint so concurrent sweeps never tear it.
        parts = {
            "artifact": "torchscript",
            "model": model_fingerprint(model),
            "precision": precision,
            "batch_size": batch_size,
            "torch": torch.__version__,
        }
        folder, _ = obtain(
            self.cache_dir / "torchscript",
            f"{model.name}-{precision}-b{batch_size}",
            parts,
            lambda tmp: torch.jit.save(frozen, str(tmp / "model.pt")),
        )
        self.module = frozen
        return PrepareInfo(
            artifact=folder / "model.pt", artifact_cached=False, engine_precision=precision, details=details
        )
