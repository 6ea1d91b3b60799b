"""`torch.compile` with the inductor backend; compilation happens (and is timed) in prepare.

BF16 compiles under autocast. INT8 is static post-training quantization through PT2E with
torchao's X86InductorQuantizer (int8 activations and per-channel int8 weights, calibrated on
the model's own inputs), lowered by inductor to oneDNN int8 kernels.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, ClassVar

from inferbench.backends.base import PrepareInfo
from inferbench.backends.lowp import pt2e_share, torch_dispatch_share
from inferbench.backends.torch_eager import TorchBackend
from inferbench.errors import BackendError, UnsupportedError, first_line

if TYPE_CHECKING:
    from inferbench.models import ModelDef


class TorchCompileBackend(TorchBackend):
    name = "torch-compile"
    precision_notes: ClassVar[dict[str, str]] = {
        "bf16": "autocast, compiled",
        "int8": "PT2E static quantization (torchao X86InductorQuantizer), compiled",
    }
    eager_module: Any = None  # what was compiled (the PT2E-converted graph for int8)
    quantized_graph: Any = None

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch
        import torch._inductor.config as inductor_config

        # Freezing folds weights into constants and lets inductor pre-pack them for oneDNN:
        # the setting PyTorch recommends for CPU inference.
        inductor_config.freezing = True
        details: dict[str, Any] = {"mode": "inductor, freezing, dynamic=False"}
        module = model.module
        if precision == "bf16":
            self.autocast = True
            details["mode"] += ", autocast bf16"
        elif precision == "int8":
            module = self._pt2e_int8(model, batch_size)
            self.quantized_graph = module
            details["mode"] += ", PT2E static int8 (X86InductorQuantizer)"
            details["calibration_samples"] = self.calibration_samples
        self.eager_module = module
        self.module = torch.compile(module, backend="inductor", dynamic=False)
        # torch.compile is lazy: run once so the compile lands in prepare time, not in the
        # first-inference latency. The example must be made like the timed inputs (outside
        # inference_mode): an inference tensor here fails a dispatch-key guard later and
        # recompiles on the first timed call.
        self.run(self.to_native(model.make_inputs(batch_size, model.seed)))
        return PrepareInfo(engine_precision=precision, details=details)

    def _pt2e_int8(self, model: ModelDef, batch_size: int) -> Any:
        if importlib.util.find_spec("torchao") is None:
            raise UnsupportedError("int8 needs torchao's PT2E quantizer: pip install 'inferbench[torchao]'")
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        example = self.to_native(model.make_inputs(batch_size, model.seed))
        try:
            exported = torch.export.export(model.module, example, strict=False).module()  # type: ignore[arg-type]
        except Exception as exc:
            raise UnsupportedError(
                f"torch.export failed, so PT2E cannot quantize: {first_line(exc)}"
            ) from exc
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        try:
            prepared = prepare_pt2e(exported, quantizer)
        except Exception as exc:
            raise BackendError(
                f"torchao X86InductorQuantizer failed on this graph: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        # The exported graph is specialised to the cell's batch size: calibrate in batches of it.
        with torch.no_grad():
            for batch in self.calibration_batches(model, batch_size):
                prepared(*self.to_native(batch))
        return convert_pt2e(prepared)

    def observed_lowp(self, inputs: Any, precision: str) -> tuple[float | None, dict[str, Any]]:
        """int8: the FLOP share of the compute nodes of the PT2E graph handed to inductor whose
        operands come through dequantize nodes (inductor lowers those to oneDNN int8 kernels).
        bf16: the FLOP share of the eager module's compute under the same autocast that
        dynamo traces (the compiled code itself is not inspected)."""
        if precision == "int8":
            share, gflops = pt2e_share(self.quantized_graph)
            return share, {"basis": "FLOPs of PT2E compute nodes with dequantized operands", "gflops": gflops}
        import torch

        def eager() -> None:
            with torch.inference_mode(), self._context():
                self.eager_module(*inputs)

        share, gflops = torch_dispatch_share(eager, precision)
        return share, {
            "basis": "FLOPs of the eager module's compute under the same autocast",
            "gflops": gflops,
        }
