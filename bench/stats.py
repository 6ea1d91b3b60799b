"""Summary statistics of per-iteration latencies. One percentile definition for all backends
(numpy's default linear interpolation between closest ranks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def summarize(latencies_ns: Sequence[int], batch_size: int) -> dict[str, float]:
    """Latency summary in milliseconds and latency-mode throughput in samples/s."""
    if len(latencies_ns) == 0:
        raise ValueError("no latencies to summarize")
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, PERCENTILES)
    return {
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p99_ms": float(p99),
        "latency_mean_ms": float(ms.mean()),
        "latency_std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "latency_min_ms": float(ms.min()),
        "latency_max_ms": float(ms.max()),
        # One request in flight: samples completed over the time spent computing them.
        "throughput_sps": float(batch_size * len(ms) / (ms.sum() / 1e3)),
        "iterations": float(len(ms)),
    }


def accuracy(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], classification: bool
) -> dict[str, float]:
    """How far an engine's outputs are from the FP32 eager reference on the same inputs."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs vs {len(candidate)} from the engine")
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    out = np.concatenate([np.asarray(c, np.float64).ravel() for c in candidate])
    if ref.shape != out.shape:
        raise ValueError(f"output sizes differ: reference {ref.shape} vs engine {out.shape}")
    diff = out - ref
    ref_norm, out_norm = np.linalg.norm(ref), np.linalg.norm(out)
    result = {
        "max_abs_err": float(np.abs(diff).max()) if diff.size else 0.0,
        "rel_l2_err": float(np.linalg.norm(diff) / ref_norm) if ref_norm else float("nan"),
        "cosine": float(ref @ out / (ref_norm * out_norm)) if ref_norm and out_norm else float("nan"),
        "top1_agreement": float("nan"),
    }
    if classification:
        r, c = np.asarray(reference[0]), np.asarray(candidate[0])
        result["top1_agreement"] = float((r.argmax(-1) == c.argmax(-1)).mean())
    return result
