"""Shared CUDA helpers for the GPU backends.

Availability with a reason, GPU facts (name, driver, clocks, memory), CUDA-event timing of a
run, host<->device copy times and peak device memory. torch and NVML are imported inside the
functions only: backend modules import this one at their own import time, in the parent too.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any, ClassVar

from inferbench.backends.base import Availability

log = logging.getLogger(__name__)

GPU_EXTRA = "gpu"
INSTALL_HINT = f"install it with: pip install 'inferbench[{GPU_EXTRA}]' (or: make setup HW=gpu)"

#: What the timed region of every GPU backend covers (recorded with each row). The engine time
#: is not pure device time: the start event is recorded on an idle stream before the host call,
#: so it completes at once and the host's launch (enqueue) work falls inside the interval.
TIMING_SCOPE = (
    "CUDA compute: run + synchronize with inputs and outputs resident on the device; "
    "host<->device copies excluded (measured once, in details copy_h2d_ms / copy_d2h_ms); "
    "engine_time_ns: CUDA events on the run's stream recorded just before and just after the "
    "host call, the stream idle at the start, so it spans from the call's start until the call "
    "has returned and its last kernel has finished: device work plus the host-side launch time "
    "that the device work does not hide"
)

# nvidia-smi fields, in the order they are asked for and parsed.
SMI_FIELDS = (
    "uuid",
    "name",
    "driver_version",
    "memory.total",
    "memory.used",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "clocks.max.mem",
    "power.limit",
    "temperature.gpu",
    "pstate",
    "persistence_mode",
)
_SMI_KEYS = {
    "uuid": "uuid",
    "name": "name",
    "driver_version": "driver",
    "memory.total": "memory_total_mb",
    "memory.used": "memory_used_mb",
    "clocks.sm": "clock_sm_mhz",
    "clocks.max.sm": "clock_sm_max_mhz",
    "clocks.mem": "clock_mem_mhz",
    "clocks.max.mem": "clock_mem_max_mhz",
    "power.limit": "power_limit_w",
    "temperature.gpu": "temperature_c",
    "pstate": "pstate",
    "persistence_mode": "persistence_mode",
}


def cuda_availability(requires: tuple[str, ...]) -> Availability:
    """Whether the packages are installed (found without importing them) and a CUDA device is
    usable by torch; the reason names the pip extra or says what is missing."""
    missing = [name for name in requires if importlib.util.find_spec(name) is None]
    if missing:
        return Availability(False, f"{', '.join(missing)} not installed; {INSTALL_HINT}")
    return cuda_device_availability()


def cuda_device_availability() -> Availability:
    if importlib.util.find_spec("torch") is None:
        return Availability(False, f"torch not installed; {INSTALL_HINT}")
    import torch

    if torch.version.cuda is None:
        return Availability(
            False,
            f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None); "
            "the GPU environment needs torch's CUDA build: make setup HW=gpu",
        )
    if not torch.cuda.is_available():
        return Availability(False, "no CUDA device (torch.cuda.is_available() is False)")
    return Availability(True)


def require_cuda() -> None:
    """Raise BackendError when no CUDA device is usable (inside a worker, after availability)."""
    from inferbench.errors import BackendError

    available = cuda_device_availability()
    if not available.ok:
        raise BackendError(available.reason)


# -- GPU facts ---------------------------------------------------------------------------------


def gpu_info(index: int = 0) -> dict[str, Any]:
    """Facts about CUDA device `index` (torch's numbering): name, compute capability, memory,
    CUDA runtime, then driver, clocks, power limit and temperature from NVML (nvidia-ml-py) or,
    failing that, nvidia-smi. Empty when no CUDA device is usable."""
    if not cuda_device_availability().ok:
        return {}
    import torch

    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    info: dict[str, Any] = {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_total_mb": props.total_memory // 2**20,
        "multiprocessors": props.multi_processor_count,
        "cuda_runtime": torch.version.cuda,
        "uuid": f"GPU-{uuid}" if uuid is not None and not str(uuid).startswith("GPU-") else uuid,
    }
    management = _nvml_info(info["uuid"], index) or _smi_info(info["uuid"], index)
    for key, value in management.items():
        info.setdefault(key, value)
    return info


def _nvml_info(uuid: str | None, index: int) -> dict[str, Any]:
    if importlib.util.find_spec("pynvml") is None:
        return {}
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, or NVML missing: fall back to nvidia-smi
        return {}
    try:
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else None
        except Exception:
            handle = None
        handle = handle or pynvml.nvmlDeviceGetHandleByIndex(index)
        out: dict[str, Any] = {"source": "nvml"}
        queries: dict[str, Callable[[], Any]] = {
            "driver": pynvml.nvmlSystemGetDriverVersion,
            "memory_used_mb": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used // 2**20,
            "clock_sm_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "clock_sm_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "clock_mem_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "clock_mem_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "power_limit_w": lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000,
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "pstate": lambda: f"P{int(pynvml.nvmlDeviceGetPerformanceState(handle))}",
            "persistence_mode": lambda: bool(pynvml.nvmlDeviceGetPersistenceMode(handle)),
        }
        for key, query in queries.items():
            try:
                value = query()
            except Exception:  # a query the driver or the GPU does not support
                continue
            out[key] = value.decode() if isinstance(value, bytes) else value
        return out
    finally:
        pynvml.nvmlShutdown()


def _smi_info(uuid: str | None, index: int) -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    query = f"--query-gpu={','.join(SMI_FIELDS)}"
    try:
        text = subprocess.run(
            [smi, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    gpus = parse_nvidia_smi(text)
    chosen = next((g for g in gpus if uuid and g.get("uuid") == uuid), None)
    if chosen is None and index < len(gpus):
        # nvidia-smi ignores CUDA_VISIBLE_DEVICES: an index match is a best guess.
        chosen = gpus[index]
    return {**chosen, "source": "nvidia-smi"} if chosen else {}


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Rows of `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits`."""
    rows = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(SMI_FIELDS):
            continue
        row: dict[str, Any] = {}
        for field, value in zip(SMI_FIELDS, values, strict=True):
            if value in ("", "[N/A]", "N/A", "[Not Supported]"):
                continue
            row[_SMI_KEYS[field]] = _number(value)
        if "persistence_mode" in row:
            row["persistence_mode"] = row["persistence_mode"] == "Enabled"
        rows.append(row)
    return rows


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def device_memory_used_mb(index: int = 0) -> float | None:
    """Memory in use on the whole device (every process, every allocator), from NVML/nvidia-smi."""
    import torch

    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    uuid_text = f"GPU-{uuid}" if uuid is not None and not str(uuid).startswith("GPU-") else uuid
    used = (_nvml_info(uuid_text, index) or _smi_info(uuid_text, index)).get("memory_used_mb")
    return float(used) if used is not None else None


# -- timing ------------------------------------------------------------------------------------


class CudaEventTimer:
    """GPU-clock time between two CUDA events recorded on one stream by `start()` and `stop()`.

    The events time the stream, not the kernels: on an idle stream the start event completes
    as soon as it is recorded, so host work between `start()` and the first kernel's launch
    (argument setup, enqueue) is inside the interval, and so is the gap before `stop()` when
    the host launches more slowly than the GPU runs. TIMING_SCOPE says so in every row."""

    def __init__(self, stream: Any = None) -> None:
        import torch

        self._stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._recorded = False

    def start(self) -> None:
        self._start.record(self._stream)

    def stop(self) -> None:
        self._end.record(self._stream)
        self._recorded = True

    def elapsed_ns(self) -> int | None:
        if not self._recorded:
            return None
        self._end.synchronize()
        return int(self._start.elapsed_time(self._end) * 1e6)  # elapsed_time is in ms


def median_ms(call: Callable[[], Any], repeats: int = 5) -> float:
    """Median host wall time of `call()` followed by a device synchronize, in ms."""
    import torch

    call()  # first call pays for allocation; not what a steady-state copy costs
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        call()
        torch.cuda.synchronize()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def copy_details(
    h2d: Callable[[], Any], d2h: Callable[[], Any], h2d_bytes: int, d2h_bytes: int
) -> dict[str, Any]:
    """Host->device time of one input set and device->host time of its outputs (pageable host
    memory, as the harness hands inputs over), measured once outside the timed loop."""
    return {
        "copy_h2d_ms": round(median_ms(h2d), 4),
        "copy_d2h_ms": round(median_ms(d2h), 4),
        "copy_h2d_bytes": h2d_bytes,
        "copy_d2h_bytes": d2h_bytes,
    }


def reset_peak_memory() -> None:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def memory_details() -> dict[str, Any]:
    """Peak memory of torch's allocator since the last reset, and the whole device's use (which
    also counts engines that allocate outside torch, TensorRT's activations among them)."""
    import torch

    torch.cuda.synchronize()
    return {
        "peak_torch_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_torch_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
        "device_memory_used_mb": device_memory_used_mb(),
    }


def disable_tf32() -> None:
    """FP32 means FP32: cuDNN convolutions default to TF32 on Ampere and newer."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def torch_dtype(name: str) -> Any:
    """torch dtype for a precision name (fp32, fp16, bf16)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def check_bf16() -> None:
    import torch

    from inferbench.errors import UnsupportedError

    if not torch.cuda.is_bf16_supported():
        major, minor = torch.cuda.get_device_capability()
        raise UnsupportedError(
            f"this GPU (compute capability {major}.{minor}) has no native bf16; it needs 8.0 or newer"
        )


class CudaBackendMixin:
    """What every CUDA backend shares: where it runs, what its timed region covers, how its
    availability is decided, the CUDA-event time of the last run and the run's device memory.
    List it before the engine's base class: `class TensorRtBackend(CudaBackendMixin, Backend)`
    (each backend still sets `extra = GPU_EXTRA`: mypy wants it beside the base it overrides)."""

    device: ClassVar[str] = "cuda"
    timing_scope: ClassVar[str] = TIMING_SCOPE
    requires: ClassVar[tuple[str, ...]] = ()
    timer: CudaEventTimer | None = None  # set by backends that time their runs with events

    @classmethod
    def availability(cls) -> Availability:
        return cuda_availability(cls.requires)

    def engine_time_ns(self) -> int | None:
        return self.timer.elapsed_ns() if self.timer is not None else None

    def run_details(self) -> dict[str, Any]:
        return memory_details()  # after the timed loop: the peak over the whole run
