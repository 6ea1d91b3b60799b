"""`inferbench export`: a run in the formats of the tools teams already run.

- `bmf`: Bencher Metric Format JSON, `{benchmark: {measure: {value, lower_value, upper_value}}}`,
  for `bencher run --adapter json --file ...`. Bencher's built-in `latency` measure is in
  nanoseconds and `throughput` in operations per second; we send p50 latency with its 95%
  interval, p99 latency (`latency-p99`, ns) and throughput in samples/s with its interval.
- `mlflow` (optional extra): see inferbench.history.mlflow_export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from inferbench.status import OK
from inferbench.store.runfolder import load_run
from inferbench.util import atomic_write_text

FORMATS = ("bmf", "mlflow")
NS_PER_MS = 1e6


def benchmark_name(record: dict[str, Any]) -> str:
    """One Bencher benchmark per cell: model/backend/precision/b<batch>/t<threads>[/mode]."""
    name = (
        f"{record['model']}/{record['backend']}/{record['precision']}"
        f"/b{record['batch_size']}/t{record['threads']}"
    )
    mode = record.get("mode") or "latency"
    return name if mode == "latency" else f"{name}/{mode}"


def _number(value: Any, scale: float = 1.0) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) * scale


def _measure(
    record: dict[str, Any], value: str, low: str | None, high: str | None, scale: float
) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, column in (("value", value), ("lower_value", low), ("upper_value", high)):
        number = _number(record.get(column), scale) if column else None
        if number is not None:
            found[key] = number
    return found if "value" in found else {}


def to_bmf(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Measured (`ok`) cells as BMF; cells that did not run have no numbers to send."""
    bmf: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        if record.get("status") != OK:
            continue
        measures = {
            "latency": _measure(
                record, "latency_p50_ms", "latency_p50_ci_low_ms", "latency_p50_ci_high_ms", NS_PER_MS
            ),
            "latency-p99": _measure(record, "latency_p99_ms", None, None, NS_PER_MS),
            "throughput": _measure(
                record, "throughput_sps", "throughput_ci_low_sps", "throughput_ci_high_sps", 1.0
            ),
        }
        bmf[benchmark_name(record)] = {slug: m for slug, m in measures.items() if m}
    return bmf


def write_bmf(run_dir: Path, out: Path | None) -> tuple[Path | None, str]:
    """Write BMF JSON to `out` (default <run>/bmf.json; `-` returns it for stdout)."""
    _, records, _ = load_run(run_dir)
    text = json.dumps(to_bmf(records), indent=1, sort_keys=True) + "\n"
    if out is not None and str(out) == "-":
        return None, text
    path = out or run_dir / "bmf.json"
    atomic_write_text(path, text)
    return path, text
