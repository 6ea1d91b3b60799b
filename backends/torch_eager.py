"""Eager PyTorch under `torch.inference_mode()`.

Its FP32 outputs are the reference every other cell is checked against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import Backend, PrepareInfo
from bench.errors import UnsupportedError

if TYPE_CHECKING:
    from models import ModelDef


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        # One op at a time, all cores inside it: the same rule as every other engine here.
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (inter-op pool starts once)


class TorchBackend(Backend):
    """Eager execution of the model's torch module."""

    name = "torch"
    requires = ("torch",)
    version_packages: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module: Any = None
        self.input_names: tuple[str, ...] = ()

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        if model.module is None:
            raise UnsupportedError(f"{self.name} needs a torch module")
        set_torch_threads(self.threads)
        self.input_names = model.input_names
        return self._prepare_module(model, precision, batch_size)

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        self.module = model.module
        return PrepareInfo(engine_precision="fp32", details={"mode": "eager, inference_mode"})

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import torch

        return tuple(torch.from_numpy(inputs[name]) for name in self.input_names)

    def run(self, inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.module(*inputs)

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if not isinstance(outputs, list | tuple):
            outputs = [outputs]
        return [o.detach().float().numpy() for o in outputs]
