"""Summary statistics of per-iteration latencies. One percentile definition for all backends
(numpy's default linear interpolation between closest ranks), bootstrap confidence intervals.
A saturated run's counted rate is `inferbench.cell.rate`'s."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 12345  # fixed: the same samples always give the same interval
#: The fewest samples a 95% interval of a median can rest on: with 5 or fewer, even the range
#: of the samples covers the median with less than 95% (2 * 0.5**5 = 6.25% outside), and a
#: bootstrap of one call reads [x, x], as if perfectly precise. Fewer: no interval (NaN).
MIN_INTERVAL_SAMPLES = 6


def bootstrap_ci(
    groups: Sequence[Sequence[float] | np.ndarray],
    statistic: Callable[[np.ndarray], float],
    resamples: int = 2000,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` over the pooled samples.

    With several groups (fresh processes of one cell) the resampling is hierarchical: groups
    are drawn with replacement, then samples within each, so the interval carries the
    process-to-process variation and not only the within-process one.
    """
    arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not arrays:
        raise ValueError("no samples to bootstrap")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = np.empty(resamples)
    for r in range(resamples):
        picked = rng.integers(len(arrays), size=len(arrays)) if len(arrays) > 1 else [0]
        parts = [arrays[g][rng.integers(len(arrays[g]), size=len(arrays[g]))] for g in picked]
        values[r] = statistic(np.concatenate(parts) if len(parts) > 1 else parts[0])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def latency_intervals(groups: Sequence[Sequence[int]], batch_size: int, resamples: int) -> dict[str, float]:
    """95% intervals of p50 (ms) and latency-mode throughput (samples/s); NaN (no interval)
    when the groups hold fewer than MIN_INTERVAL_SAMPLES calls in all."""
    ms = [np.asarray(g, dtype=np.float64) / 1e6 for g in groups]
    if sum(len(g) for g in ms) < MIN_INTERVAL_SAMPLES:
        names = (
            "latency_p50_ci_low_ms",
            "latency_p50_ci_high_ms",
            "throughput_ci_low_sps",
            "throughput_ci_high_sps",
        )
        return dict.fromkeys(names, float("nan"))
    p50 = bootstrap_ci(ms, lambda x: float(np.median(x)), resamples)
    sps = bootstrap_ci(ms, lambda x: batch_size * len(x) / (x.sum() / 1e3), resamples)
    return {
        "latency_p50_ci_low_ms": p50[0],
        "latency_p50_ci_high_ms": p50[1],
        "throughput_ci_low_sps": sps[0],
        "throughput_ci_high_sps": sps[1],
    }


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
