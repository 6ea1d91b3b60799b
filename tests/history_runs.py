"""Run folders written the way the runner writes them (through inferbench.storage), with chosen
numbers, so history tests can make weeks of sweeps in milliseconds."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from inferbench.config import Cell
from inferbench.storage import SCHEMA_VERSION, save_cell, write_csv

EVIL = "<script>alert('x')</script>"
BASE_TIME = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)


def env(cpu: str = "Test CPU 9000", memory_gb: float = 23.4, when: dt.datetime = BASE_TIME) -> dict[str, Any]:
    return {
        "captured_at": when.isoformat(timespec="seconds"),
        "cpu": {"model": cpu, "logical_cpus": 2, "isa": {"avx2": True, "fma": True, "avx512f": False}},
        "memory_gb": memory_gb,
        "packages": {},
    }


def record(
    cell: Cell, p50: float, run_id: str, *, status: str = "ok", settings_hash: str | None = None
) -> dict[str, Any]:
    ok = status == "ok"
    found: dict[str, Any] = {
        **{k: getattr(cell, k) for k in ("model", "backend", "precision", "batch_size", "threads", "mode")},
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
                "latencies_ns": [int(p50 * 1e6)] * 5,
                "latency_p50_ms": p50,
                "latency_p50_ci_low_ms": p50 * 0.99,
                "latency_p50_ci_high_ms": p50 * 1.01,
                "latency_p90_ms": p50 * 1.1,
                "latency_p99_ms": p50 * 1.3,
                "latency_mean_ms": p50 * 1.02,
                "throughput_sps": cell.batch_size * 1e3 / p50,
                "throughput_ci_low_sps": cell.batch_size * 1e3 / p50 * 0.99,
                "throughput_ci_high_sps": cell.batch_size * 1e3 / p50 * 1.01,
                "iterations": 100,
            }
        )
    return found


def make_run(
    results: Path,
    run_id: str,
    p50s: dict[Cell, float],
    *,
    environment: dict[str, Any] | None = None,
    profile: str = "nightly",
    statuses: dict[Cell, str] | None = None,
    settings_hash: str | None = None,
) -> Path:
    run_dir = results / run_id
    records = [
        record(cell, p50, run_id, status=(statuses or {}).get(cell, "ok"), settings_hash=settings_hash)
        for cell, p50 in p50s.items()
    ]
    for r in records:
        save_cell(run_dir, r)
    write_csv(run_dir, records)
    (run_dir / "env.json").write_text(json.dumps(environment or env()))
    (run_dir / "config.json").write_text(json.dumps({"name": profile, "schema_version": SCHEMA_VERSION}))
    return run_dir


MLP = Cell("mlp", "onnxruntime", "fp32", 1, 2)
CNN = Cell("tiny-cnn", "openvino", "int8", 8, 2)
