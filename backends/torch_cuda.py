"""Eager PyTorch and `torch.compile` on a CUDA GPU.

FP16 and BF16 run under `torch.autocast("cuda", dtype=...)` (matmuls and convolutions in the low
precision, numerically sensitive ops in fp32); FP32 runs with TF32 off, so it is true fp32.
Inputs are copied to the device by `to_native`, outside the timed region; the copy times are
measured once in prepare and recorded in details. `cuda_graph=on` replays the run as a CUDA graph
(eager: captured once with static input buffers; torch.compile: inductor's `reduce-overhead`).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import PrepareInfo, output_list
from inferbench.backends.cuda import (
    GPU_EXTRA,
    CudaBackendMixin,
    CudaEventTimer,
    check_bf16,
    copy_details,
    disable_tf32,
    gpu_info,
    memory_details,
    require_cuda,
    reset_peak_memory,
    torch_dtype,
)
from inferbench.backends.torch_eager import TorchBackend

if TYPE_CHECKING:
    from inferbench.models import ModelDef, ModelRef

INT8_REASON = (
    "eager int8 in PyTorch is dynamic quantization with CPU (fbgemm) kernels only; "
    "int8 on the GPU: tensorrt, torch-tensorrt or onnxruntime-cuda (provider=tensorrt)"
)
WARMUP_RUNS = 3


class TorchOnCuda(CudaBackendMixin, TorchBackend):
    """A torch module on the first CUDA device: inputs copied there outside the timed region,
    each iteration synchronized on the calling thread's current stream."""

    requires = ("torch",)
    extra = GPU_EXTRA
    variable_batch = False  # not checked on a GPU yet (CUDA graphs and engines are per shape)

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import torch

        tensors = tuple(torch.from_numpy(inputs[name]).to("cuda") for name in self.input_names)
        torch.cuda.synchronize()
        return tensors

    def synchronize(self) -> None:
        import torch

        torch.cuda.current_stream().synchronize()


class TorchCudaBackend(TorchOnCuda):
    """Eager execution of the model's torch module on the first CUDA device."""

    name = "torch-cuda"
    version_packages: ClassVar[tuple[str, ...]] = ("torch",)
    precisions = frozenset({"fp32", "fp16", "bf16"})
    options: ClassVar[dict[str, tuple[str, ...]]] = {"cuda_graph": ("off", "on")}
    precision_notes: ClassVar[dict[str, str]] = {
        "fp32": "TF32 off",
        "fp16": "autocast fp16 (sensitive ops in fp32)",
        "bf16": "autocast bf16 (sensitive ops in fp32); needs compute capability 8.0+",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autocast_dtype: Any = None
        self.graph: Any = None
        self.static_inputs: tuple[Any, ...] = ()
        self.static_outputs: Any = None
        self.timer: CudaEventTimer | None = None
        self.cuda_streams: list[Any] = []
        self._local = threading.local()

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        if precision == "int8":
            return INT8_REASON
        return super().unsupported_reason(model, precision)

    def stream_count(self) -> int:
        # One CUDA stream per concurrent request; host threads are not the limit on a GPU.
        return self.streams or 2

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch

        require_cuda()
        disable_tf32()
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        reset_peak_memory()
        if precision == "bf16":
            check_bf16()
        if precision in ("fp16", "bf16"):
            self.autocast, self.autocast_dtype = True, torch_dtype(precision)
        # The reference module stays on the CPU, untouched: every cell compares against it.
        module = copy.deepcopy(model.module).to("cuda").eval()  # type: ignore[union-attr]
        details: dict[str, Any] = {"mode": self._describe(precision), "gpu": gpu_info(), "tf32": False}
        self.module = self._finish_module(module, details)
        example = self.to_native(model.make_inputs(batch_size, model.seed))
        for _ in range(WARMUP_RUNS):  # compiles (torch.compile) and settles cuDNN autotuning
            self._forward(example)
        torch.cuda.synchronize()
        if self.settings.get("cuda_graph") == "on" and self.mode == "latency":
            self._capture(example)
        details["cuda_graph"] = self.settings.get("cuda_graph")
        details.update(self._transfer_details(model, batch_size, example))
        details.update(memory_details())
        if self.mode == "latency":
            self.timer = CudaEventTimer()
        else:
            self.cuda_streams = [torch.cuda.Stream() for _ in range(self.stream_count())]
        return PrepareInfo(engine_precision=precision, details=details)

    def _describe(self, precision: str) -> str:
        return "eager, inference_mode" + (f", autocast {precision}" if precision != "fp32" else ", TF32 off")

    def _finish_module(self, module: Any, details: dict[str, Any]) -> Any:
        """Hook for subclasses that transform the device module (compile)."""
        return module

    def _transfer_details(self, model: ModelDef, batch_size: int, example: Any) -> dict[str, Any]:
        arrays = model.make_inputs(batch_size, model.seed)
        outputs = output_list(self._forward(example))
        return copy_details(
            h2d=lambda: self.to_native(arrays),
            d2h=lambda: [o.cpu() for o in outputs],
            h2d_bytes=sum(a.nbytes for a in arrays.values()),
            d2h_bytes=sum(o.numel() * o.element_size() for o in outputs),
        )

    def _capture(self, example: tuple[Any, ...]) -> None:
        """Record one run as a CUDA graph over static input buffers (PyTorch's recipe: warm up
        on a side stream, then capture)."""
        import torch

        self.static_inputs = tuple(t.clone() for t in example)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._forward(self.static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = self._forward(self.static_inputs)
        torch.cuda.synchronize()

    def _context(self) -> Any:
        import torch

        if self.autocast:
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def _forward(self, inputs: Any) -> Any:
        import torch

        with torch.inference_mode(), self._context():
            return self.module(*inputs)

    def run(self, inputs: Any) -> Any:
        if self.timer is not None:
            self.timer.start()
        if self.graph is not None:
            for static, given in zip(self.static_inputs, inputs, strict=True):
                static.copy_(given, non_blocking=True)
            self.graph.replay()
            out = self.static_outputs
        else:
            out = self._forward(inputs)
        if self.timer is not None:
            self.timer.stop()
        return out

    def enter_stream(self, stream: int) -> None:
        import torch

        # The current stream is per thread in PyTorch: each request thread queues on its own.
        torch.cuda.set_stream(self.cuda_streams[stream])

    def close(self) -> None:
        self.graph = self.static_outputs = self.module = None
        self.static_inputs = ()
        self.cuda_streams = []


class TorchCompileCudaBackend(TorchCudaBackend):
    """`torch.compile` (inductor, freezing) of the device module; compiled in prepare."""

    name = "torch-compile-cuda"
    precision_notes: ClassVar[dict[str, str]] = {
        "fp32": "inductor, TF32 off",
        "fp16": "autocast fp16, compiled",
        "bf16": "autocast bf16, compiled; needs compute capability 8.0+",
    }

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        if precision == "int8":
            return (
                "torch-compile's int8 path (PT2E with X86InductorQuantizer) targets CPU kernels; "
                "int8 on the GPU: tensorrt, torch-tensorrt or onnxruntime-cuda (provider=tensorrt)"
            )
        return super().unsupported_reason(model, precision)

    def _describe(self, precision: str) -> str:
        graph = "reduce-overhead (CUDA graphs)" if self.settings.get("cuda_graph") == "on" else "default"
        low = f", autocast {precision}" if precision != "fp32" else ", TF32 off"
        return f"inductor, freezing, mode={graph}, dynamic=False{low}"

    def _finish_module(self, module: Any, details: dict[str, Any]) -> Any:
        import torch
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        mode = "reduce-overhead" if self.settings.get("cuda_graph") == "on" else None
        return torch.compile(module, backend="inductor", mode=mode, dynamic=False)

    def _capture(self, example: tuple[Any, ...]) -> None:
        pass  # reduce-overhead records its own CUDA graphs

    def _forward(self, inputs: Any) -> Any:
        import torch

        if self.settings.get("cuda_graph") == "on":
            # Each call is a new inference step: earlier outputs may be overwritten by this one.
            torch.compiler.cudagraph_mark_step_begin()
        return super()._forward(inputs)

    def stream_count(self) -> int:
        # Compiled graphs (and their CUDA graph trees) are not safe to call from several threads.
        return 1
