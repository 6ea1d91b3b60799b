"""Where a sweep's time went: per model, per phase, and the fixed overhead per cell.

    python -m inferbench.tools.sweep_time results/<run> [results/<other run> ...]

Reads the run folder's cell records (`inferbench.store.runfolder`). For every measured cell the
worker records its phases: `setup_s` (model from the worker's memo, FLOP count and FP32
reference, both cached on disk), `prepare_s` (the engine's export/compile/quantise),
`first_inference_ms`, `eval_s` (the engine's side of the accuracy check) and `measure_s`
(warm-up plus the timed loop). `wall_s` is what the runner waited for the cell, so

    overhead = wall_s - prepare_s - first inference - eval_s - measure_s

is what the harness adds to a cell: process start (the first cell of a shared worker's
group pays it), imports, spec and record files, model copy, reference lookup, summaries.
Cells decided in the parent (`unsupported`, `unavailable`, `skipped`) have no worker; their
cost shows in the run's elapsed time only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
from pathlib import Path
from typing import Any

from inferbench.status import MEASURED
from inferbench.store.runfolder import load_cells, load_config


def phases(record: dict[str, Any]) -> dict[str, float]:
    """The phases of one measured cell, in seconds, and the overhead left over."""
    got = {
        "wall": float(record.get("wall_s") or 0.0),
        "setup": float(record.get("setup_s") or 0.0),
        "prepare": float(record.get("prepare_s") or 0.0),
        "first": float(record.get("first_inference_ms") or 0.0) / 1e3,
        "eval": float(record.get("eval_s") or 0.0),
        "measure": float(record.get("measure_s") or 0.0),
    }
    if "measure_s" not in record:  # a record from before the phases were kept: warm-up + loop
        loop = len(record.get("latencies_ns") or []) * float(record.get("latency_mean_ms") or 0) / 1e3
        got["measure"] = float(record.get("warmup_s") or 0.0) + loop
    got["overhead"] = got["wall"] - got["prepare"] - got["first"] - got["eval"] - got["measure"]
    return got


def elapsed_s(run_dir: Path, records: list[dict[str, Any]]) -> float | None:
    """From the run's start (config.json) to the last cell file written."""
    try:
        started = dt.datetime.fromisoformat(load_config(run_dir)["started_at"])
    except (KeyError, OSError, ValueError, TypeError):
        return None
    last = max((p.stat().st_mtime for p in (run_dir / "cells").glob("*.json")), default=None)
    return None if last is None else last - started.timestamp()


def report(run_dir: Path) -> str:
    records = load_cells(run_dir)
    measured = [r for r in records if r.get("status") in MEASURED and r.get("wall_s")]
    lines = [f"## {run_dir.name}: {len(records)} cells, {len(measured)} measured in a worker"]
    total = elapsed_s(run_dir, records)
    if total is not None:
        lines.append(f"elapsed: {total / 60:.1f} min")
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.get("status", "?")] = statuses.get(r.get("status", "?"), 0) + 1
    lines.append("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    lines.append("")
    lines.append("| model | cells | wall min | setup | prepare | eval | measure | overhead median s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    timed = [(r, phases(r)) for r in measured]  # each record's phases, worked out once
    by_model: dict[str, list[dict[str, float]]] = {}
    for r, got in timed:
        by_model.setdefault(str(r["model"]), []).append(got)
    for model, rows in by_model.items():
        sums = {k: sum(row[k] for row in rows) for k in rows[0]}
        lines.append(
            f"| {model} | {len(rows)} | {sums['wall'] / 60:.1f} | {sums['setup'] / 60:.1f} | "
            f"{sums['prepare'] / 60:.1f} | {sums['eval'] / 60:.1f} | {sums['measure'] / 60:.1f} | "
            f"{statistics.median(row['overhead'] for row in rows):.2f} |"
        )
    overheads = [got["overhead"] for _, got in timed]
    if overheads:
        first = [got["overhead"] for r, got in timed if not r.get("worker_cell")]
        later = [got["overhead"] for r, got in timed if r.get("worker_cell")]
        lines.append("")
        lines.append(
            f"overhead per measured cell: median {statistics.median(overheads):.2f} s, "
            f"mean {statistics.fmean(overheads):.2f} s ({len(overheads)} cells)"
        )
        for what, values in (("a worker's first cell (start-up)", first), ("later cells", later)):
            if values:
                lines.append(f"  {what}: median {statistics.median(values):.2f} s over {len(values)} cells")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        print(report(run_dir))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
