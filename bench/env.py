"""What machine and software a run measured: written to `env.json` beside the results."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

# ISA features that decide which precisions run natively.
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx512_fp16",
)
PACKAGES = ("torch", "onnxruntime", "onnx", "openvino", "transformers", "numpy", "pandas")
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "OMP_PROC_BIND",
    "OMP_PLACES",
)


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    return {
        "model": model.group(1).strip() if model else platform.processor(),
        "logical_cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "native_int8_dot": bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def torch_build() -> dict[str, str]:
    """oneDNN and parallel back-end versions of the installed torch build."""
    try:
        import torch
    except ImportError:
        return {}
    config = torch.__config__.show()
    onednn = re.search(r"(?:oneDNN|MKL-DNN) v([\d.]+)", config)
    capability = re.search(r"CPU capability usage: (\S+)", config)
    return {
        "onednn": onednn.group(1) if onednn else "unknown",
        "cpu_capability": capability.group(1) if capability else "unknown",
        "parallel": torch.__config__.parallel_info().splitlines()[-1].strip(),
    }


def capture(threads: list[int]) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "captured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_info(),
        "memory_gb": _memory_gb(),
        "load_average": list(load) if load else None,
        "packages": package_versions(),
        "torch_build": torch_build(),
        "threads": {
            "swept": threads,
            "inter_op": 1,
            "env": {v: os.environ.get(v) for v in THREAD_VARS},
        },
    }


def _memory_gb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.virtual_memory().total / 2**30, 1)
