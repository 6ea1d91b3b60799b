"""`torch.compile` with the inductor backend; compilation happens (and is timed) in prepare."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.base import PrepareInfo
from backends.torch_eager import TorchBackend

if TYPE_CHECKING:
    from models import ModelDef


class TorchCompileBackend(TorchBackend):
    name = "torch-compile"

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch
        import torch._inductor.config as inductor_config

        # Freezing folds weights into constants and lets inductor pre-pack them for oneDNN:
        # the setting PyTorch recommends for CPU inference.
        inductor_config.freezing = True
        self.module = torch.compile(model.module, backend="inductor", dynamic=False)
        # torch.compile is lazy: run once so the compile lands in prepare time, not in the
        # first-inference latency. The example must be made like the timed inputs (outside
        # inference_mode): an inference tensor here fails a dispatch-key guard later and
        # recompiles on the first timed call.
        self.input_names = model.input_names
        self.run(self.to_native(model.make_inputs(batch_size, model.seed)))
        return PrepareInfo(
            engine_precision="fp32",
            details={"mode": "inductor, freezing, dynamic=False"},
        )
