"""How fast a sweep is appended to the history, and how large the database grows.

    python -m inferbench.tools.history_bench --url sqlite:///tmp/h.sqlite [--cells 360] [--sweeps 100]

Synthetic sweeps with the shape of real ones (every summary column, 1000 raw latencies per
cell in the run folder). Times (1) appending one sweep from its run folder on disk, the way
`inferbench run` does at its end, and (2) the database part alone; then appends `--sweeps`
more from memory and reports the database's size: the SQLite file, or pg_database_size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from inferbench.config import Cell
from inferbench.history.db import connect
from inferbench.history.fingerprint import Commit
from inferbench.history.store import append_records, append_run
from inferbench.storage import SCHEMA_VERSION, save_cell, write_csv
from inferbench.util import atomic_write_json

ENV = {
    "captured_at": "2026-11-01T02:00:00+00:00",
    "cpu": {"model": "Synthetic CPU", "logical_cpus": 16, "isa": {"avx2": True, "avx512f": True}},
    "memory_gb": 64.0,
}


def cells(count: int) -> list[Cell]:
    models = [f"model-{i}" for i in range(max(1, count // 36))]
    grid = [
        Cell(m, b, p, bs, 4)
        for m in models
        for b in ("torch", "onnxruntime", "openvino")
        for p in ("fp32", "bf16", "int8")
        for bs in (1, 8, 32, 64)
    ]
    return grid[:count]


def records(grid: list[Cell], run_id: str, rng: np.random.Generator, samples: int) -> list[dict[str, Any]]:
    found = []
    for cell in grid:
        p50 = float(rng.uniform(0.5, 50.0))
        found.append(
            {
                **{
                    k: getattr(cell, k)
                    for k in ("model", "backend", "precision", "batch_size", "threads", "mode")
                },
                "status": "ok",
                "cell_key": cell.key,
                "run_id": run_id,
                "schema_version": SCHEMA_VERSION,
                "latencies_ns": (p50 * 1e6 * rng.lognormal(0, 0.03, samples)).astype(int).tolist(),
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
                "iterations": samples,
                "repeats": 1,
                "capped": False,
            }
        )
    return found


def size_bytes(url: str, engine: sa.Engine) -> int:
    if engine.dialect.name == "sqlite":
        return Path(engine.url.database or "").stat().st_size
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar() or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", required=True, help="an empty history database")
    parser.add_argument("--cells", type=int, default=360)
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="timed appends from a run folder")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    grid = cells(args.cells)
    engine = connect(args.url)
    commit = Commit("0" * 40, False)
    folder_times, db_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            run_dir = Path(tmp) / f"folder-{i}"
            sweep = records(grid, run_dir.name, rng, args.samples)
            for r in sweep:
                save_cell(run_dir, r)
            write_csv(run_dir, sweep)
            atomic_write_json(run_dir / "env.json", ENV)
            started = time.perf_counter()
            if append_run(engine, run_dir, commit=commit) != len(grid):
                raise SystemExit(f"{args.url} is not empty: give the benchmark an empty database")
            folder_times.append(time.perf_counter() - started)
    when = dt.datetime(2026, 11, 1)
    for i in range(args.sweeps - args.repeats):
        sweep = records(grid, f"sweep-{i}", rng, 0)
        started = time.perf_counter()
        append_records(
            engine,
            sweep,
            ENV,
            run_id=f"sweep-{i}",
            run_path=f"/results/sweep-{i}",
            profile="synthetic",
            run_time=when + dt.timedelta(days=i),
            commit=commit,
        )
        db_times.append(time.perf_counter() - started)
    size = size_bytes(args.url, engine)
    engine.dispose()
    print(f"{engine.dialect.name}: {len(grid)} cells per sweep")
    print(
        f"append from a run folder ({args.samples} samples/cell): "
        f"median {statistics.median(folder_times):.3f} s "
        f"(min {min(folder_times):.3f}, max {max(folder_times):.3f}; {args.repeats} sweeps)"
    )
    if db_times:
        print(
            f"append, database part only: median {statistics.median(db_times):.3f} s "
            f"(min {min(db_times):.3f}, max {max(db_times):.3f}; {len(db_times)} sweeps)"
        )
    print(f"size after {args.sweeps} sweeps ({args.sweeps * len(grid)} rows): {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
