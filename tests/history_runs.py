"""Run folders written the way the runner writes them (through inferbench.store.runfolder), with chosen
numbers, so history tests can make weeks of sweeps in milliseconds. The records come from
the history benchmark's builder (`inferbench.tools.synthetic_runs`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from inferbench.config import Cell
from inferbench.tools.synthetic_runs import synthetic_record, write_run

EVIL = "<script>alert('x')</script>"
BASE_TIME = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)


def env(
    cpu: str = "Test CPU 9000",
    memory_gb: float = 23.4,
    when: dt.datetime = BASE_TIME,
    host: str | None = None,
) -> dict[str, Any]:
    """A run's env.json; without `host`, one from before env.json named the machine."""
    found: dict[str, Any] = {
        "captured_at": when.isoformat(timespec="seconds"),
        "cpu": {"model": cpu, "logical_cpus": 2, "isa": {"avx2": True, "fma": True, "avx512f": False}},
        "memory_gb": memory_gb,
        "packages": {},
    }
    if host is not None:
        found["hostname"] = found["node"] = host
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
    records = [
        synthetic_record(
            cell, p50, run_id, status=(statuses or {}).get(cell, "ok"), settings_hash=settings_hash
        )
        for cell, p50 in p50s.items()
    ]
    return write_run(results / run_id, records, environment or env(), {"name": profile})


MLP = Cell("mlp", "onnxruntime", "fp32", 1, 2)
CNN = Cell("tiny-cnn", "openvino", "int8", 8, 2)
