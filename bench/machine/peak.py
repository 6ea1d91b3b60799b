"""This machine's ceilings: dense matrix-multiply throughput per precision and memory bandwidth.

A vendor's theoretical peak is rarely knowable on a VM (frequency, SMT, FMA units), so the
ceiling is measured: the best rate the installed libraries reach on large GEMMs with the given
thread count (OpenVINO's oneDNN FullyConnected and torch's matmul, several shapes, best of
each), and the best of a copy and an add over buffers far larger than the caches. A model cell
can beat it (fused kernels, Winograd, a lucky frequency): `% of peak` above 100 says so rather
than hiding it. Run in a fresh process with the thread environment set, cached per machine,
thread count and library versions.

A precision a library only emulates on this CPU (`inferbench.machine.capability`: torch's bf16 GEMM on
AVX2 runs far below fp32) is never a ceiling: it is timed once on a small GEMM, recorded under
`emulated` with its slowdown against the fp32 ceiling (the cost the runner's `unsupported`
rows quote), and its `% of peak` stays empty. A precision the library does not compute here
is not probed. The whole probe stays within about a minute on any CPU.

`python -m inferbench.machine.peak THREADS OUT.json` is the subprocess entry point.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inferbench.errors import UserError
from inferbench.machine import capability
from inferbench.redact import configure_logging
from inferbench.sweep.procs import guard_child, python_command, run_child, worker_env
from inferbench.util import atomic_write_json, cache_key

log = logging.getLogger(__name__)

# (M, K, N) of the probes: a transformer-like and a square one; both fit no cache level whole.
GEMM_SHAPES = ((512, 2048, 2048), (2048, 2048, 2048))
MEMORY_BYTES = 256 * 2**20
PROBE_SECONDS = 0.6
#: An emulated precision's probe: small enough that even a reference kernel finishes quickly.
EMULATED_SHAPE = (256, 256, 256)
EMULATED_SECONDS = 0.3
#: Precision -> key in the peaks record; fp16 has no CPU probe.
PEAK_KEYS = {"fp32": "fp32_gflops", "bf16": "bf16_gflops", "int8": "int8_gops"}

#: The probes take about a minute; a hung library must not hang the sweep.
PEAK_TIMEOUT_S = 600.0


def best_seconds(call: Callable[[], Any], seconds: float = PROBE_SECONDS, warmup: int = 2) -> float:
    """Fastest of repeated calls within about `seconds` (after `warmup` calls). A call slower
    than `seconds` is timed once and not repeated: a slow kernel has no ceiling to find, and
    the probe must finish within a minute on any CPU."""
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    if first > seconds:
        return first
    for _ in range(warmup - 1):
        call()
    best, start = first, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def _openvino_gemm(precision: str, threads: int, shape: tuple[int, int, int]) -> float:
    """GOP/s of one OpenVINO FullyConnected; int8 through FakeQuantize on both operands, the
    way quantized models reach the plugin's u8 x i8 kernels."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    m, k, n = shape
    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], np.float32, name="x")
    w: Any = ops.constant(rng.standard_normal((n, k)).astype(np.float32))
    a: Any = x
    if precision == "int8":
        lo, hi = ops.constant(np.float32(0)), ops.constant(np.float32(4))
        a = ops.fake_quantize(x, lo, hi, lo, hi, 256)
        wlo, whi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        w = ops.fake_quantize(w, wlo, whi, wlo, whi, 255)
    model = ov.Model([ops.matmul(a, w, False, True)], [x])
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(model, "CPU", config)
    ran = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) in {"FullyConnected", "MatMul"}
    }
    wanted = {"fp32": {"f32"}, "bf16": {"bf16"}, "int8": {"u8", "i8"}}[precision]
    if not ran & wanted:
        raise RuntimeError(f"OpenVINO ran the {precision} probe in {sorted(ran)}")
    request = compiled.create_infer_request()
    data = rng.uniform(0, 4, (m, k)).astype(np.float32)
    return 2 * m * k * n / best_seconds(lambda: request.infer([data], share_inputs=True)) / 1e9


def _torch_gemm(
    precision: str, threads: int, shape: tuple[int, int, int], seconds: float = PROBE_SECONDS, warmup: int = 2
) -> float:
    import torch

    torch.set_num_threads(threads)
    m, k, n = shape
    if precision == "int8":
        a = torch.randint(-128, 127, (m, k), dtype=torch.int8)
        b = torch.randint(-128, 127, (k, n), dtype=torch.int8)

        def call() -> Any:
            return torch._int_mm(a, b)
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)

        def call() -> Any:
            return a @ b

    with torch.inference_mode():
        return 2 * m * k * n / best_seconds(call, seconds, warmup) / 1e9


def _memory_bandwidth(threads: int) -> tuple[float, str]:
    """GB/s of the faster of a copy (read + write) and an add (two reads + a write)."""
    import torch

    torch.set_num_threads(threads)
    count = MEMORY_BYTES // 4
    a, b, c = torch.ones(count), torch.ones(count), torch.empty(count)
    copy = 2 * MEMORY_BYTES / best_seconds(lambda: c.copy_(a)) / 1e9
    add = 3 * MEMORY_BYTES / best_seconds(lambda: torch.add(a, b, out=c)) / 1e9
    return (copy, "torch copy") if copy >= add else (add, "torch add")


PROBES: dict[str, Callable[[str, int, tuple[int, int, int]], float]] = {
    "openvino": _openvino_gemm,
    "torch": _torch_gemm,
}


def measure_peaks(threads: int, cpu: capability.Cpu | None = None) -> dict[str, Any]:
    """Run every probe here (call in a process whose thread environment is set)."""
    import importlib.util

    cpu = cpu or capability.this_cpu()
    peaks: dict[str, Any] = {"threads": threads, "probes": {}, "emulated": {}, "not_probed": {}}
    libraries = [name for name in PROBES if importlib.util.find_spec(name) is not None]
    for precision, key in PEAK_KEYS.items():
        best, method = 0.0, ""
        for library in libraries:
            found = capability.support(cpu, library, precision)
            if found.level == capability.UNAVAILABLE:
                peaks["not_probed"][f"{library} {precision}"] = found.why
                continue
            if found.level == capability.EMULATED:
                record = _emulated_probe(library, precision, threads, found.why)
                peaks["emulated"].setdefault(precision, record)
                continue
            for shape in GEMM_SHAPES:
                try:
                    rate = PROBES[library](precision, threads, shape)
                except Exception as exc:  # one library failing a probe leaves the others
                    log.warning("%s %s probe failed: %s", library, precision, exc)
                    continue
                peaks["probes"][f"{library} {precision} {'x'.join(map(str, shape))}"] = round(rate, 1)
                if rate > best:
                    best, method = rate, f"{library} gemm {'x'.join(map(str, shape))}"
                if 2 * shape[0] * shape[1] * shape[2] / (rate * 1e9) > PROBE_SECONDS:
                    break  # a slow kernel (torch's _int_mm on AVX2): the larger shapes only cost time
        peaks[key] = best or None
        peaks[f"{key}_method"] = method
    for record in peaks["emulated"].values():
        if peaks.get("fp32_gflops") and record.get("gflops"):
            record["slowdown_vs_fp32"] = round(peaks["fp32_gflops"] / record["gflops"], 1)
    peaks["memory_gbps"], peaks["memory_gbps_method"] = _memory_bandwidth(threads)
    return peaks


def _emulated_probe(library: str, precision: str, threads: int, why: str) -> dict[str, Any]:
    """One small GEMM in an emulated precision: its rate, never a ceiling."""
    shape = EMULATED_SHAPE
    record: dict[str, Any] = {"library": library, "why": why, "shape": "x".join(map(str, shape))}
    if library != "torch":  # the only probe whose library computes an emulated precision
        return record
    try:
        rate = _torch_gemm(precision, threads, shape, seconds=EMULATED_SECONDS, warmup=1)
    except Exception as exc:  # an emulation may also simply fail (oneDNN has no primitive)
        record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return record
    record["gflops"] = round(rate, 3)
    return record


def emulation_cost(peaks: dict[str, Any] | None, precision: str) -> str:
    """'torch's bf16 GEMM runs 108x slower than fp32 here', from the probe, or ''."""
    record = ((peaks or {}).get("emulated") or {}).get(precision) or {}
    slowdown = record.get("slowdown_vs_fp32")
    if not slowdown:
        return ""
    library = record.get("library", "the")
    return f"{library}'s {precision} GEMM runs {slowdown:g}x slower than fp32 here (peak probe)"


def peak_cache_path(cache_dir: Path, threads: int) -> Path:
    from inferbench.machine import env

    versions = env.package_versions()
    cpu = capability.this_cpu()  # the caps change what runs, so they key the cache too
    caps = ",".join(f"{k}={v}" for k, v in sorted(cpu.caps.items()))
    key = cache_key(cpu.model, threads, versions["torch"], versions["openvino"], caps)
    return cache_dir / "peaks" / f"peaks-t{threads}-{key}.json"


def load_peaks(cache_dir: Path, threads: int) -> dict[str, Any] | None:
    path = peak_cache_path(cache_dir, threads)
    return json.loads(path.read_text()) if path.is_file() else None


def get_peaks(
    cache_dir: Path,
    threads: int,
    *,
    refresh: bool = False,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Cached peaks for this machine and thread count, measured in a fresh process if absent;
    `announce` hears one line before a measurement starts."""
    path = peak_cache_path(cache_dir, threads)
    if path.is_file() and not refresh:
        return dict(json.loads(path.read_text()), cached=True)
    if announce:
        announce(f"measuring this machine's ceilings at {threads} thread(s) (about a minute, cached after)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".new.json")
    try:
        done = run_child(  # in its own group: a stop of the runner takes it along
            python_command("inferbench.machine.peak", str(threads), str(tmp)),
            env=worker_env(threads),
            timeout_s=PEAK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"peak measurement took longer than {PEAK_TIMEOUT_S:g} s (killed)") from None
    if done.returncode != 0 or not tmp.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"peak measurement failed: {last}")
    peaks = json.loads(tmp.read_text())
    peaks["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(path, peaks)
    tmp.unlink()
    return dict(peaks, cached=False)


def percent_of_peak(record: dict[str, Any], peaks: dict[str, Any] | None) -> dict[str, float]:
    """Achieved GFLOP/s of a row and its share of the ceiling for the row's precision."""
    flops, throughput = record.get("flops_per_sample"), record.get("throughput_sps")
    if not flops or not throughput:
        return {}
    achieved = flops * throughput / 1e9
    result = {"achieved_gflops": achieved}
    ceiling = (peaks or {}).get(PEAK_KEYS.get(record.get("precision", ""), ""))
    if ceiling and record.get("precision") not in ((peaks or {}).get("emulated") or {}):
        result["peak_gflops"] = float(ceiling)
        result["pct_of_peak"] = 100 * achieved / float(ceiling)
    return result


def main(argv: list[str]) -> int:
    configure_logging(level=logging.WARNING, stream=sys.stderr)
    guard_child(PEAK_TIMEOUT_S)  # gone with the runner that waits for it
    threads, out = int(argv[0]), Path(argv[1])
    atomic_write_json(out, measure_peaks(threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
