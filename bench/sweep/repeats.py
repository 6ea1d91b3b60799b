"""A cell's measurement across processes: `repeats` fresh processes merged into one record,
each process re-measured while others disturbed its timed window (inferbench.cell.interference)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.cell.stats import bootstrap_ci, latency_intervals, summarize
from inferbench.config import Cell, SweepConfig
from inferbench.models import ModelRef
from inferbench.status import MEASURED
from inferbench.sweep.launch import SharedWorkers, run_in_worker

log = logging.getLogger(__name__)


def run_repeats(
    cell: Cell,
    ref: ModelRef,
    config: SweepConfig,
    run_dir: Path,
    cache_dir: Path,
    shared: SharedWorkers | None = None,
) -> dict[str, Any]:
    """Run the cell in `repeats` fresh processes and merge them; a failed repeat stops it.
    A single repeat runs through `shared` when given (a shared worker where it is enabled)."""
    records = []
    run = shared.run if shared is not None and config.measure.repeats == 1 else None
    for _ in range(config.measure.repeats):
        record = run_clean(cell, ref, config, run_dir, cache_dir, run)
        records.append(record)
        if record["status"] not in MEASURED:
            break
    measure = config.measure
    return merge_repeats(records, cell.batch_size, measure.bootstrap_resamples, measure.tail_samples)


def run_clean(
    cell: Cell,
    ref: ModelRef,
    config: SweepConfig,
    run_dir: Path,
    cache_dir: Path,
    run: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One process's measurement, re-measured while its timed window was `interfered` (up to
    `interference_retries` more times); a record still disturbed after that keeps the flag."""
    run = run or run_in_worker
    record = run(cell, ref, config, run_dir, cache_dir)
    tries = 0
    while record.get("interfered") and tries < config.measure.interference_retries:
        tries += 1
        log.info(
            "%s: %.0f%% of its cores used by others, %.0f%% stolen; measuring again (%d/%d)",
            cell.key,
            record.get("interference_pct") or 0,
            record.get("steal_pct") or 0,
            tries,
            config.measure.interference_retries,
        )
        record = run(cell, ref, config, run_dir, cache_dir)
    return {**record, "remeasured": tries}


def merge_repeats(
    records: list[dict[str, Any]], batch_size: int, resamples: int = 2000, tail_samples: int = 500
) -> dict[str, Any]:
    """One record from several processes: samples pooled for the summary, kept per process for
    comparisons, intervals bootstrapped over processes then samples, and the spread of the
    per-process medians (and throughputs) reported."""
    last = records[-1]
    if last["status"] not in MEASURED or len(records) == 1:
        return {**last, "repeats": len(records)}
    per_process = [r["latencies_ns"] for r in records]
    medians = [r["latency_p50_ms"] for r in records]
    throughputs = [r["throughput_sps"] for r in records]
    pooled = [x for p in per_process for x in p]
    merged = {**records[0], **summarize(pooled, batch_size)}
    merged.update(latency_intervals(per_process, batch_size, resamples))
    if "throughput_slices_sps" in records[0]:  # throughput mode: counted, not from latency
        slices = [r["throughput_slices_sps"] for r in records]
        low, high = bootstrap_ci(slices, lambda x: float(x.mean()), resamples)
        merged.update(
            {
                "throughput_sps": float(np.mean(throughputs)),
                "throughput_ci_low_sps": low,
                "throughput_ci_high_sps": high,
                "process_throughput_slices_sps": slices,
            }
        )
    merged.update(
        {
            "latencies_ns": pooled,
            "process_latencies_ns": per_process,
            "repeats": len(records),
            "process_p50_spread_pct": spread_pct(medians),
            "process_throughput_spread_pct": spread_pct(throughputs),
            "p99_reliable": len(pooled) >= tail_samples,
            "capped": any(r.get("capped") for r in records),
            **_merged_interference(records),
            "warmup_stable": all(r.get("warmup_stable") for r in records),
            "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in records),
            "wall_s": sum(r.get("wall_s") or 0 for r in records),
        }
    )
    return merged


def _merged_interference(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Across processes: the worst window, and flagged if any process stayed disturbed."""
    if not any("interference_pct" in r for r in records):
        return {}
    merged: dict[str, Any] = {"interfered": any(r.get("interfered") for r in records)}
    for column in ("interference_pct", "steal_pct", "sys_pct"):
        merged[column] = max(r.get(column) or 0.0 for r in records)
    merged["nivcsw"] = sum(r.get("nivcsw") or 0 for r in records)
    merged["remeasured"] = sum(r.get("remeasured") or 0 for r in records)
    return merged


def spread_pct(values: Sequence[float]) -> float:
    """The process-to-process spread: (max - min) / median, in percent (`process_*_spread_pct`,
    and the A/A calibration's spread of p50, inferbench.ab.calibration)."""
    return 100 * (max(values) - min(values)) / float(np.median(values))
