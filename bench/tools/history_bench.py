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
from inferbench.tools.synthetic_runs import synthetic_record, write_run

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
        latencies = (p50 * 1e6 * rng.lognormal(0, 0.03, samples)).astype(int).tolist()
        found.append(synthetic_record(cell, p50, run_id, latencies_ns=latencies, iterations=samples))
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
            write_run(run_dir, records(grid, run_dir.name, rng, args.samples), ENV)
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
