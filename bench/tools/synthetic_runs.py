"""Synthetic run records and run folders with chosen numbers, for the history benchmark
(`history_bench`) and the history tests: one builder, so both see the same record shape.

Folders are written through `inferbench.store.runfolder` the way the runner writes them, so whatever
reads a real run folder reads these too. The numbers are given, never measured: these are
inputs for code that stores, plots and exports results, not results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from inferbench.config import Cell
from inferbench.status import OK
from inferbench.store.runfolder import SCHEMA_VERSION, save_cell, write_csv
from inferbench.util import atomic_write_json


def synthetic_record(
    cell: Cell,
    p50: float,
    run_id: str,
    *,
    status: str = OK,
    latencies_ns: Sequence[int] | None = None,
    iterations: int = 100,
    settings_hash: str | None = None,
) -> dict[str, Any]:
    """A cell record as the runner stores it, its summary derived from `p50` (ms). Raw
    latencies default to five copies of the median; a cell that is not `ok` has none."""
    ok = status == OK
    found: dict[str, Any] = {
        **asdict(cell),
        "status": status,
        "reason": "" if ok else "engine said no",
        "cell_key": cell.key,
        "run_id": run_id,
        "schema_version": SCHEMA_VERSION,
        "repeats": 1,
        "capped": False,
    }
    if settings_hash is not None:
        found["settings_hash"] = settings_hash
    if ok:
        found.update(
            {
                "latencies_ns": list(latencies_ns) if latencies_ns is not None else [int(p50 * 1e6)] * 5,
                "latency_p50_ms": p50,
                "latency_p50_ci_low_ms": p50 * 0.99,
                "latency_p50_ci_high_ms": p50 * 1.01,
                "latency_p90_ms": p50 * 1.1,
                "latency_p99_ms": p50 * 1.3,
                "latency_mean_ms": p50 * 1.02,
                "latency_std_ms": p50 * 0.03,
                "throughput_sps": cell.batch_size * 1e3 / p50,
                "throughput_ci_low_sps": cell.batch_size * 1e3 / p50 * 0.99,
                "throughput_ci_high_sps": cell.batch_size * 1e3 / p50 * 1.01,
                "iterations": iterations,
            }
        )
    return found


def write_run(
    run_dir: Path,
    records: Sequence[dict[str, Any]],
    environment: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> Path:
    """A run folder holding `records`: cell files, results.csv, env.json and, when given,
    config.json (the profile name lives there)."""
    for record in records:
        save_cell(run_dir, record)
    write_csv(run_dir, list(records))
    atomic_write_json(run_dir / "env.json", environment)
    if config is not None:
        atomic_write_json(run_dir / "config.json", {**config, "schema_version": SCHEMA_VERSION})
    return run_dir
