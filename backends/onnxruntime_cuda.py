"""ONNX Runtime on a CUDA GPU: the CUDA execution provider, or its TensorRT provider.

Inputs and outputs stay on the device through IO binding (the copies happen in `to_native`,
outside the timed region), and the session runs on a CUDA stream of ours, so CUDA events
bracket exactly its kernels. FP16 is ONNX Runtime's own float16 conversion (inputs and outputs
kept float32), after its transformer optimizer for transformers on the CUDA provider. INT8 is
the static QDQ graph with symmetric int8 activations and float biases, which only the TensorRT
provider runs as int8. BF16 is not offered (see BF16_REASON).

The TensorRT provider is a separate library (libonnxruntime_providers_tensorrt.so) linked against
one TensorRT major version. Which one is read from its ELF dependencies without loading it: when
it is not the TensorRT installed here (torch-tensorrt pins its own), the provider cannot load and
the cells are `unsupported`; when it is 10, the precision flags are switched on, since TensorRT 10
builds weakly typed networks that would otherwise run fp16 and int8 graphs in fp32 kernels.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferbench.backends.base import Availability, PrepareInfo
from inferbench.backends.cuda import (
    GPU_EXTRA,
    INSTALL_HINT,
    CudaBackendMixin,
    CudaEventTimer,
    copy_details,
    cuda_availability,
    gpu_info,
    memory_details,
    require_cuda,
    reset_peak_memory,
)
from inferbench.backends.elf import ElfError, needed_libraries
from inferbench.backends.onnx_export import derived_dir, onnx_file
from inferbench.backends.onnxruntime import OrtBackend, session_options
from inferbench.backends.qdq import TENSORRT, static_qdq
from inferbench.errors import BackendError, UnsupportedError, first_line
from inferbench.store.artifacts import file_digest, obtain

if TYPE_CHECKING:
    from inferbench.models import ModelDef, ModelRef

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
BF16_REASON = (
    "not offered on onnxruntime-cuda: ONNX Runtime's float16 converter has no bf16 mode and the "
    "CUDA provider lacks bf16 kernels for part of the operator set (Conv among them); "
    "bf16 on the GPU: tensorrt, torch-tensorrt, torch-cuda"
)
TRT_EP_LIBRARY = "libonnxruntime_providers_tensorrt.so"
#: The fp16 graph's name inside its artifact folder.
FP16_FILE = "model.fp16.onnx"
#: ONNX Runtime's TensorRT provider built against TensorRT 11 (fixed upstream, not yet released).
TRT11_ISSUE = "microsoft/onnxruntime#32278"
INT8_CUDA_REASON = (
    "the CUDA execution provider has no int8 kernels for QDQ graphs (it would dequantize and run "
    "fp32); int8 needs --backend-option onnxruntime-cuda.provider=tensorrt"
)


class OrtCudaBackend(CudaBackendMixin, OrtBackend):
    variable_batch = False  # its I/O bindings are made for the cell's batch
    name = "onnxruntime-cuda"
    requires = ("onnxruntime", "onnx", "torch")  # type: ignore[assignment]
    extra = GPU_EXTRA
    version_packages: ClassVar[tuple[str, ...]] = ("onnxruntime-gpu", "onnx", "torch", "tensorrt")
    precisions = frozenset({"fp32", "fp16", "int8"})
    precision_notes: ClassVar[dict[str, str]] = {
        "fp32": "CUDA provider, TF32 off",
        "fp16": "ORT float16 conversion, fp32 I/O",
        "int8": "static QDQ (symmetric int8); provider=tensorrt only",
    }
    options: ClassVar[dict[str, tuple[str, ...]]] = {"provider": ("cuda", "tensorrt")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: Any = None
        self.timer: CudaEventTimer | None = None
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    @classmethod
    def availability(cls) -> Availability:
        try:
            # The distribution, not the module: the CPU wheel installs `onnxruntime` too.
            importlib.metadata.version("onnxruntime-gpu")
        except importlib.metadata.PackageNotFoundError:
            return Availability(
                False, f"onnxruntime-gpu not installed (no CUDA provider in this onnxruntime); {INSTALL_HINT}"
            )
        return cuda_availability(cls.requires)

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        if precision == "bf16":
            return BF16_REASON
        return super().unsupported_reason(model, precision)

    def stream_count(self) -> int:
        return 1  # one session on one stream of ours: concurrent requests would only queue

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import onnxruntime as ort
        import torch

        require_cuda()
        provider = self.settings["provider"]
        if precision == "int8" and provider == "cuda":
            raise UnsupportedError(INT8_CUDA_REASON)
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise UnsupportedError(f"this onnxruntime build has no {PROVIDERS[provider]}")
        trt_major = tensorrt_ep_major() if provider == "tensorrt" else None
        reset_peak_memory()
        path, artifact_cached = onnx_file(model, self.cache_dir)
        folder = derived_dir(path, self.cache_dir)
        details: dict[str, Any] = {
            "provider": PROVIDERS[provider],
            "gpu": gpu_info(),
            "onnx_cached": artifact_cached,
        }
        if trt_major is not None:
            details["provider_tensorrt_major"] = trt_major
        if model.transformer and provider == "cuda":
            # Fused contrib ops (Attention, SkipLayerNorm) are CUDA-provider kernels; the TensorRT
            # provider fuses the plain graph itself.
            path, details["fused_ops"] = self._optimize_transformer(
                path, model.transformer, folder, use_gpu=True
            )
        if precision == "fp16":
            path, artifact_cached = self._to_fp16(path, folder)
        elif precision == "int8":
            batches = self.calibration_batches(model)
            path, artifact_cached = static_qdq(path, folder, batches, self.calibration_samples, TENSORRT)
            details["quantization"] = TENSORRT.tag
        self.stream = torch.cuda.Stream()
        options = session_options(self.threads)
        providers = provider_options(provider, precision, folder, self.stream.cuda_stream, trt_major)
        if provider == "tensorrt" and importlib.util.find_spec("tensorrt") is not None:
            import tensorrt  # noqa: F401 - loads libnvinfer for the provider to find

        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime could not load {path.name}: {first_line(exc)}") from exc
        used = self.session.get_providers()
        if used[0] != PROVIDERS[provider]:
            # ONNX Runtime drops a provider that fails to initialise and goes on without it.
            raise BackendError(f"{PROVIDERS[provider]} did not initialise; ONNX Runtime fell back to {used}")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        details["providers"] = used
        details["provider_options"] = {k: v for k, v in providers[0][1].items() if k != "user_compute_stream"}
        arrays = model.make_inputs(batch_size, model.seed)
        example = self.to_native(arrays)
        for _ in range(3):  # the TensorRT provider builds its engine on the first run
            self.session.run_with_iobinding(example[0])
        details.update(
            copy_details(
                h2d=lambda: self.to_native(arrays),
                d2h=lambda: example[0].copy_outputs_to_cpu(),
                h2d_bytes=sum(a.nbytes for a in arrays.values()),
                d2h_bytes=sum(np.asarray(o).nbytes for o in example[0].copy_outputs_to_cpu()),
            )
        )
        details.update(memory_details())
        self.timer = CudaEventTimer(self.stream) if self.mode == "latency" else None
        return PrepareInfo(
            artifact=path, artifact_cached=artifact_cached, engine_precision=precision, details=details
        )

    def _to_fp16(self, path: Path, folder: Path) -> tuple[Path, bool]:
        return ort_fp16(path, folder)

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        import onnxruntime as ort

        binding = self.session.io_binding()
        values = []  # the device copies must outlive the binding's use of them
        for name in self.input_names:
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(inputs[name]), "cuda", 0)
            binding.bind_ortvalue_input(name, value)
            values.append(value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        return binding, values

    def run(self, inputs: Any) -> Any:
        binding = inputs[0]
        if self.timer is not None:
            self.timer.start()
        self.session.run_with_iobinding(binding)
        if self.timer is not None:
            self.timer.stop()
        return binding

    def run_on(self, stream: int, inputs: Any) -> Any:
        return self.run(inputs)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in outputs.copy_outputs_to_cpu()]

    def close(self) -> None:
        super().close()
        self.stream = self.timer = None


def ort_fp16(path: Path, folder: Path) -> tuple[Path, bool]:
    """ONNX Runtime's float16 conversion of `path` (inputs and outputs kept float32), published
    once per source graph in the artifact store under `folder`: keyed by the source's bytes,
    built under the key's lock and renamed into place whole, so two sweeps sharing a cache
    never read each other's half-written file. Returns (path, from_cache)."""
    import onnx
    import onnxruntime
    from onnxruntime.transformers.onnx_model import OnnxModel

    parts = {
        "artifact": "ort-fp16",
        "source": file_digest(path),
        "onnxruntime": onnxruntime.__version__,
        "keep_io_types": True,
    }

    def convert(tmp: Path) -> None:
        model = OnnxModel(onnx.load(str(path)))
        model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(tmp / FP16_FILE))

    out, cached = obtain(folder, "ort-fp16", parts, convert)
    return out / FP16_FILE, cached


def provider_options(
    provider: str, precision: str, folder: Path, stream: int, trt_major: int | None
) -> list[tuple[str, dict[str, Any]]]:
    """The session's providers with their options; `stream` is our CUDA stream's handle,
    `trt_major` the TensorRT major version the TensorRT provider links (provider=tensorrt)."""
    # user_compute_stream alone: both providers set has_user_compute_stream from it.
    cuda = {
        "device_id": "0",
        "use_tf32": "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "user_compute_stream": str(stream),
    }
    if provider == "cuda":
        return [("CUDAExecutionProvider", cuda), ("CPUExecutionProvider", {})]
    engines = folder / "ort-tensorrt-engines"
    engines.mkdir(parents=True, exist_ok=True)
    trt: dict[str, Any] = {
        "device_id": "0",
        "user_compute_stream": str(stream),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(engines),  # else it lands in the working directory
    }
    if trt_major is not None and trt_major <= 10:
        # TensorRT 10 builds weakly typed networks: the precisions must be switched on, or fp16
        # and int8 graphs run in fp32 kernels. 11 and later are strongly typed and take them
        # from the graph.
        trt["trt_fp16_enable"] = str(precision == "fp16")
        trt["trt_int8_enable"] = str(precision == "int8")
    return [
        ("TensorrtExecutionProvider", trt),
        ("CUDAExecutionProvider", cuda),
        ("CPUExecutionProvider", {}),
    ]


def tensorrt_ep_major(capi: Path | None = None) -> int:
    """The TensorRT major version ONNX Runtime's TensorRT provider library links, checked
    against the installed TensorRT's; raises UnsupportedError naming both when they differ."""
    library = (capi or _ort_capi_dir()) / TRT_EP_LIBRARY
    linked = linked_tensorrt_major(library)
    installed = installed_tensorrt_major()
    if installed is None:
        raise UnsupportedError(f"the TensorRT provider needs TensorRT {linked}; tensorrt not installed")
    if linked != installed:
        raise UnsupportedError(
            f"ONNX Runtime's TensorRT provider is built for TensorRT {linked} "
            f"({TRT_EP_LIBRARY} needs libnvinfer.so.{linked}) but TensorRT {installed} is installed "
            f"(torch-tensorrt pins it), so the provider cannot load; upstream: {TRT11_ISSUE}"
        )
    return linked


def linked_tensorrt_major(library: Path) -> int:
    """N from the `libnvinfer.so.N` that `library` needs, read from the file, not loaded."""
    if not library.is_file():
        raise UnsupportedError(f"this onnxruntime-gpu has no TensorRT provider library ({library.name})")
    try:
        needed = needed_libraries(library)
    except (OSError, ElfError) as exc:
        raise UnsupportedError(f"could not read the dependencies of {library.name}: {exc}") from exc
    for name in needed:
        match = re.fullmatch(r"libnvinfer\.so\.(\d+)", name)
        if match:
            return int(match.group(1))
    raise UnsupportedError(
        f"{library.name} names no libnvinfer.so.N dependency ({', '.join(needed) or 'none'}): "
        "the TensorRT version it needs, and so its precision flags, are unknown"
    )


def installed_tensorrt_major() -> int | None:
    """Major version of the installed TensorRT Python package (the one torch-tensorrt pins)."""
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"):
        try:
            return int(importlib.metadata.version(dist).split(".")[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def _ort_capi_dir() -> Path:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedError(f"onnxruntime not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "capi"
