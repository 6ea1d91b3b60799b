"""Torch-TensorRT, dynamo path: `torch.export` then `torch_tensorrt.dynamo.compile`.

Its networks are explicitly typed (the `enabled_precisions` switch is gone): FP16/BF16 use
Torch-TensorRT's autocast (`enable_autocast`, `autocast_low_precision_type`), which keeps
numerically sensitive layers in fp32. INT8 is NVIDIA ModelOpt post-training quantization
(`mtq.INT8_DEFAULT_CFG`: per-channel int8 weights, per-tensor int8 activations, calibrated on
the model's own inputs), exported with its Q/DQ nodes, which Torch-TensorRT turns into int8
layers. Operators TensorRT cannot take stay in PyTorch; the number of TensorRT and PyTorch
subgraphs is recorded. `cuda_graph=on` wraps the module in Torch-TensorRT's CUDA-graph runtime.

TF32 is off in both halves: TensorRT's (`disable_tf32`) and PyTorch's, for the subgraphs that
fall back to PyTorch (cuDNN convolutions default to TF32). Engines are built every time, not
cached: Torch-TensorRT caches only refittable engines (`immutable_weights=False`), and a
refittable engine is not the one a deployment builds (TensorRT warns that REFIT can even change
its numerics), so each cell measures the default, immutable engine. Only the timing cache is
kept, which shortens rebuilds without changing what is built; it is used only while its
manifest vouches for it (`inferbench.store.engine_caches.guarded_file`), else removed first.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from inferbench.backends.base import PrepareInfo, output_list
from inferbench.backends.cuda import (
    GPU_EXTRA,
    INSTALL_HINT,
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
from inferbench.backends.torch_cuda import TorchOnCuda
from inferbench.backends.torch_eager import set_torch_threads
from inferbench.errors import BackendError, UnsupportedError, first_line
from inferbench.store.engine_caches import guarded_file

if TYPE_CHECKING:
    from inferbench.models import ModelDef


class TorchTensorRtBackend(TorchOnCuda):
    name = "torch-tensorrt"
    requires = ("torch_tensorrt", "tensorrt", "torch")  # type: ignore[assignment]
    extra = GPU_EXTRA
    version_packages: ClassVar[tuple[str, ...]] = ("torch-tensorrt", "tensorrt", "torch", "nvidia-modelopt")
    precisions = frozenset({"fp32", "fp16", "bf16", "int8"})
    precision_notes: ClassVar[dict[str, str]] = {
        "fp32": "explicit typing, TF32 off",
        "fp16": "Torch-TensorRT autocast fp16",
        "bf16": "Torch-TensorRT autocast bf16; compute capability 8.0+",
        "int8": "ModelOpt PTQ (INT8_DEFAULT_CFG) -> Q/DQ -> TensorRT int8",
    }
    options: ClassVar[dict[str, tuple[str, ...]]] = {"cuda_graph": ("off", "on")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timer: CudaEventTimer | None = None
        self._exit = contextlib.ExitStack()

    def stream_count(self) -> int:
        # One execution context per compiled engine: requests must not overlap on it.
        return 1

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch
        import torch_tensorrt

        if model.module is None:
            raise UnsupportedError(f"{self.name} needs a torch module")
        require_cuda()
        if precision == "bf16":
            check_bf16()
        disable_tf32()  # for the subgraphs Torch-TensorRT leaves to PyTorch, as torch-cuda does
        set_torch_threads(self.threads)
        reset_peak_memory()
        self.input_names = model.input_names
        module = copy.deepcopy(model.module).to("cuda").eval()
        example = self.to_native(model.make_inputs(batch_size, model.seed))
        details: dict[str, Any] = {
            "gpu": gpu_info(),
            "torch_tensorrt_version": torch_tensorrt.__version__,
            "tf32": False,
            "engine_cache": "off (immutable weights: each cell builds its engine; timing cache kept)",
        }
        if precision in ("fp16", "bf16"):
            details["mode"] = f"dynamo, explicit typing, autocast {precision}"
        elif precision == "int8":
            module = self._modelopt_int8(module, model)
            details["mode"] = "dynamo, ModelOpt INT8_DEFAULT_CFG (Q/DQ)"
            details["calibration_samples"] = self.calibration_samples
        else:
            details["mode"] = "dynamo, explicit typing, TF32 off"
        try:
            exported = self._export(module, example, precision)
            settings = self.compile_settings(precision)
            with guarded_file(Path(settings["timing_cache_path"])):
                compiled = torch_tensorrt.dynamo.compile(exported, arg_inputs=list(example), **settings)
        except (UnsupportedError, BackendError):
            raise
        except Exception as exc:
            raise BackendError(
                f"Torch-TensorRT compile failed: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        children = [name for name, _ in compiled.named_children()]
        details["trt_subgraphs"] = sum(1 for n in children if "_run_on_acc" in n)
        details["torch_subgraphs"] = sum(1 for n in children if "_run_on_gpu" in n)
        if self.settings.get("cuda_graph") == "on":
            compiled = self._exit.enter_context(torch_tensorrt.runtime.enable_cudagraphs(compiled))
        details["cuda_graph"] = self.settings.get("cuda_graph")
        self.module = compiled
        for _ in range(3):
            self._forward(example)
        torch.cuda.synchronize()
        arrays = model.make_inputs(batch_size, model.seed)
        outputs = output_list(self._forward(example))
        details.update(
            copy_details(
                h2d=lambda: self.to_native(arrays),
                d2h=lambda: [o.cpu() for o in outputs],
                h2d_bytes=sum(a.nbytes for a in arrays.values()),
                d2h_bytes=sum(o.numel() * o.element_size() for o in outputs),
            )
        )
        details.update(memory_details())
        self.timer = CudaEventTimer() if self.mode == "latency" else None
        # No artifact on disk: the engine is built here, in every cell (see `engine_cache`).
        return PrepareInfo(engine_precision=precision, details=details)

    def compile_settings(self, precision: str) -> dict[str, Any]:
        """Keyword arguments of `torch_tensorrt.dynamo.compile` besides the program and inputs."""
        settings: dict[str, Any] = {
            "min_block_size": 1,
            "disable_tf32": True,
            "immutable_weights": True,  # the default, stated: the engine a deployment builds
            "timing_cache_path": str(self.cache_dir / "torch-tensorrt" / "timing.cache"),
        }
        if precision in ("fp16", "bf16"):
            settings.update(enable_autocast=True, autocast_low_precision_type=torch_dtype(precision))
        return settings

    def _export(self, module: Any, example: tuple[Any, ...], precision: str) -> Any:
        import torch

        with torch.no_grad():
            if precision != "int8":
                return torch.export.export(module, example)
            from modelopt.torch.quantization.utils import export_torch_mode

            with export_torch_mode():  # traces ModelOpt's Q/DQ as custom ops
                return torch.export.export(module, example)

    def _modelopt_int8(self, module: Any, model: ModelDef) -> Any:
        if importlib.util.find_spec("modelopt") is None:
            raise UnsupportedError(
                "Torch-TensorRT takes int8 from NVIDIA ModelOpt's quantization (nvidia-modelopt); "
                + INSTALL_HINT
            )
        import modelopt.torch.quantization as mtq
        import torch

        batches = [self.to_native(batch) for batch in self.calibration_batches(model)]

        def calibrate(quantized: Any) -> None:
            with torch.no_grad():
                for batch in batches:
                    quantized(*batch)

        return mtq.quantize(module, mtq.INT8_DEFAULT_CFG, forward_loop=calibrate)

    def _forward(self, inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.module(*inputs)

    def run(self, inputs: Any) -> Any:
        if self.timer is not None:
            self.timer.start()
        out = self._forward(inputs)
        if self.timer is not None:
            self.timer.stop()
        return out

    def enter_stream(self, stream: int) -> None:
        pass  # one stream (see stream_count)

    def close(self) -> None:
        self._exit.close()
        self.module = self.timer = None
