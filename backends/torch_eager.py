"""Eager PyTorch under `torch.inference_mode()`.

Its FP32 outputs are the reference every other cell is checked against. BF16 runs under
`torch.autocast("cpu", dtype=torch.bfloat16)` (matmuls and convolutions in bf16, numerically
sensitive ops kept in fp32); INT8 is dynamic quantization of Linear and LSTM layers.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import Backend, PrepareInfo, output_list
from inferbench.backends.lowp import torch_dispatch_share
from inferbench.errors import UnsupportedError

if TYPE_CHECKING:
    from inferbench.models import ModelDef, ModelRef


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        # One op at a time, all cores inside it: the same rule as every other engine here.
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (inter-op pool starts once)


def dynamic_int8_conv_reason(convolutions: int) -> str:
    return (
        f"dynamic int8 quantizes Linear/LSTM only; the {convolutions} convolutions would stay fp32 "
        "(static int8: torch-compile, onnxruntime, openvino)"
    )


def dynamic_int8(module: Any) -> tuple[Any, int]:
    """Dynamically quantized copy (int8 weights, activations quantized per call) and the
    number of quantized layers. Convolutions have no dynamic kernels: refuse such models
    rather than report a mostly-fp32 model as int8."""
    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which has no dynamic LSTM
        # and no fbgemm-backed eager int8 Linear; it still runs real int8 kernels here.
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import quantize_dynamic

    convs = [m for m in module.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    if convs:
        raise UnsupportedError(dynamic_int8_conv_reason(len(convs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized = quantize_dynamic(
            copy.deepcopy(module), {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8
        )
    count = sum(1 for m in quantized.modules() if "quantized.dynamic" in type(m).__module__)
    if count == 0:
        raise UnsupportedError("dynamic int8: the model has no Linear or LSTM layer to quantize")
    return quantized, count


class TorchBackend(Backend):
    """Eager execution of the model's torch module."""

    name = "torch"
    cpu_engine = "torch"
    requires = ("torch",)
    version_packages: ClassVar[tuple[str, ...]] = ("torch",)
    precisions = frozenset({"fp32", "bf16", "int8"})
    options: ClassVar[dict[str, tuple[str, ...]]] = {"bf16_mode": ("autocast", "full")}
    precision_notes: ClassVar[dict[str, str]] = {
        "bf16": "autocast (bf16 matmul/conv, fp32 for sensitive ops); bf16_mode=full: bf16 weights",
        "int8": "dynamic quantization of Linear/LSTM; models with convolutions are unsupported",
    }

    #: An eager module takes any batch.
    variable_batch = True

    #: int8 by dynamic quantization (Linear/LSTM only); torch-compile's PT2E is static.
    dynamic_int8 = True

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        convolutions = model.layer_count("conv")
        if precision == "int8" and cls.dynamic_int8 and convolutions:
            return dynamic_int8_conv_reason(convolutions)  # known before a worker starts
        return super().unsupported_reason(model, precision)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module: Any = None
        self.input_names: tuple[str, ...] = ()
        self.autocast = False
        self.bf16_inputs = False  # float inputs cast to bf16 (full-bf16 models)

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        if model.module is None:
            raise UnsupportedError(f"{self.name} needs a torch module")
        set_torch_threads(self.threads)
        self.input_names = model.input_names
        return self._prepare_module(model, precision, batch_size)

    def observed_lowp(self, inputs: Any, precision: str) -> tuple[float | None, dict[str, Any]]:
        """Share of FLOPs that ran in `precision` in one run of the prepared module: every
        compute operator it dispatched (after autocast chose dtypes), by operand dtype or
        quantized kernel. Never the first call (TorchScript's profiling run rejects a Python
        dispatch mode); GPU subclasses report none."""
        if self.device != "cpu":
            return None, {}
        share, gflops = torch_dispatch_share(lambda: self.run(inputs), precision)
        return share, {"basis": "FLOPs of dispatched compute ops", "gflops": gflops}

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        if precision == "bf16" and self.settings.get("bf16_mode") == "full":
            import torch

            # The whole model in bf16: weights, activations and every op, no fp32 islands.
            module: Any = copy.deepcopy(model.module)
            self.module, self.bf16_inputs = module.to(torch.bfloat16), True
            return PrepareInfo(engine_precision="bf16", details={"mode": "eager, full bf16 model"})
        if precision == "bf16":
            self.module, self.autocast = model.module, True
            return PrepareInfo(engine_precision="bf16", details={"mode": "eager, autocast bf16"})
        if precision == "int8":
            self.module, count = dynamic_int8(model.module)
            return PrepareInfo(
                engine_precision="int8",
                details={"mode": "eager, dynamic int8", "quantized_layers": count},
            )
        self.module = model.module
        return PrepareInfo(engine_precision="fp32", details={"mode": "eager, inference_mode"})

    def _context(self) -> Any:
        import torch

        if self.autocast:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import torch

        tensors = tuple(torch.from_numpy(inputs[name]) for name in self.input_names)
        if not self.bf16_inputs:
            return tensors
        return tuple(t.to(torch.bfloat16) if t.is_floating_point() else t for t in tensors)

    def run(self, inputs: Any) -> Any:
        import torch

        with torch.inference_mode(), self._context():
            return self.module(*inputs)

    def enter_stream(self, stream: int) -> None:
        import torch

        # OpenMP thread counts are per calling thread: each stream gets its share of the cores.
        torch.set_num_threads(self.threads_per_stream())

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [o.detach().float().cpu().numpy() for o in output_list(outputs)]  # .cpu(): GPU subclasses
