"""What machine and software a run measured: written to `env.json` beside the results."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import sys
from typing import Any

from inferbench.history.fingerprint import node_name

PACKAGES = (
    "torch",
    "onnxruntime",
    "onnx",
    "openvino",
    "nncf",
    "torchao",
    "transformers",
    "numpy",
    "pandas",
    "pyperf",
    "tensorrt",
    "torch-tensorrt",
    "onnxruntime-gpu",
    "nvidia-modelopt",
    "nvidia-ml-py",
)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "OMP_WAIT_POLICY",
    "KMP_HW_SUBSET",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
)


def cpu_info(
    cpuinfo: str | None = None, environ: dict[str, str] | None = None, *, engine_reports: bool = False
) -> dict[str, Any]:
    """The CPU and what each engine computes natively on it (inferbench.machine.capability), with
    the engines' own reports when asked (that imports them)."""
    from inferbench.machine import capability

    cpu = capability.this_cpu(environ) if cpuinfo is None else capability.parse_cpu(cpuinfo, environ)
    if engine_reports:
        cpu = capability.with_engine_reports(cpu)
    return {
        **capability.describe(cpu),
        "logical_cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
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


# A run is flagged noisy when the 1-minute load average exceeds this share of the usable cores
# (someone else is computing) or a cell's p50 interval is wider than NOISY_CI_PCT of its p50.
NOISY_LOAD_PER_CPU = 0.5
NOISY_CI_PCT = 5.0
NOISY_SPREAD_PCT = 10.0


def system_metadata() -> dict[str, Any]:
    """pyperf's machine metadata: CPU model and frequency, cpufreq governor / idle driver
    (`cpu_config`), ASLR, load average, runnable threads, boot time, isolated CPUs."""
    try:
        from pyperf import _collect_metadata
    except ImportError:
        return {}
    try:
        # A private module, but the collection pyperf itself stores with every result.
        return dict(_collect_metadata.collect_metadata(process=False))
    except Exception as exc:  # metadata is informative; never fail a run over it
        return {"error": f"pyperf metadata collection failed: {exc}"}


def noise_warnings(environment: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Reasons to distrust a run's numbers, for the report's banner."""
    warnings = []
    load = environment.get("load_average")
    cpus = len(environment.get("cpu", {}).get("affinity") or []) or 1
    if load and load[0] > NOISY_LOAD_PER_CPU * cpus:
        warnings.append(
            f"load average {load[0]:.2f} on {cpus} usable CPUs when the run started: "
            "other work was competing for the cores"
        )
    governor = str(environment.get("system", {}).get("cpu_config", ""))
    if "governor" in governor and "performance" not in governor:
        warnings.append(f"CPU frequency governor is not 'performance' ({governor})")
    wide = [r for r in rows if _ci_width_pct(r) > NOISY_CI_PCT]
    if wide:
        worst = max(wide, key=_ci_width_pct)
        warnings.append(
            f"{len(wide)} cell(s) have a p50 95% interval wider than {NOISY_CI_PCT:g}% of p50 "
            f"(worst {_ci_width_pct(worst):.0f}%: {worst.get('cell_key')})"
        )
    disturbed = [r for r in rows if str(r.get("interfered")).lower() == "true"]
    if disturbed:
        worst = max(disturbed, key=lambda r: _number(r.get("interference_pct")))
        share = _number(worst.get("interference_pct"))
        worst_text = f"worst {share:.0f}%" if share else "worst"
        warnings.append(
            f"{len(disturbed)} cell(s) shared their cores with other work during the timed window "
            f"even after re-measuring (interfered; {worst_text}: {worst.get('cell_key')})"
        )
    spread = [r for r in rows if (r.get("process_p50_spread_pct") or 0) > NOISY_SPREAD_PCT]
    if spread:
        warnings.append(
            f"{len(spread)} cell(s) moved more than {NOISY_SPREAD_PCT:g}% between fresh processes"
        )
    return warnings


def _ci_width_pct(row: dict[str, Any]) -> float:
    keys = ("latency_p50_ci_low_ms", "latency_p50_ci_high_ms", "latency_p50_ms")
    try:
        low, high, p50 = (float(row[k]) for k in keys)
        width = 100 * (high - low) / p50
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0
    return width if width == width else 0.0  # NaN (empty CSV cell) is not noise


def capture(threads: list[int], gpu: bool = False) -> dict[str, Any]:
    """Everything about the machine a run is measured on; `gpu` adds the CUDA device's facts."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    found = {}
    if gpu:
        from inferbench.backends.cuda import gpu_info

        found["gpu"] = gpu_info()
    return {
        **found,
        "captured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        # The machine in its history fingerprint: $INFERBENCH_NODE (a pod's node), else the host name.
        "node": node_name(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_info(engine_reports=True),
        "memory_gb": _memory_gb(),
        "load_average": list(load) if load else None,
        "packages": package_versions(),
        "torch_build": torch_build(),
        "openvino_build": openvino_build(),
        "system": system_metadata(),
        "threads": {
            "swept": threads,
            "inter_op": 1,
            "env": {v: os.environ.get(v) for v in THREAD_VARS},
        },
    }


def openvino_build() -> dict[str, str]:
    """OpenVINO's build string, without importing it when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return {}
    import openvino as ov

    return {"version": ov.get_version()}


def _memory_gb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.virtual_memory().total / 2**30, 1)


def _number(value: Any) -> float:
    """A float for sorting and printing; missing or NaN is 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if number != number else number
