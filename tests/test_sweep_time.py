"""The sweep-time report: phases and overhead of hand-made cell records."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferbench.store.runfolder import SCHEMA_VERSION, save_cell
from inferbench.tools.sweep_time import phases, report


def test_overhead_is_wall_minus_the_measured_phases() -> None:
    record = {
        "wall_s": 10.0,
        "setup_s": 1.0,
        "prepare_s": 2.0,
        "first_inference_ms": 500.0,
        "eval_s": 1.5,
        "measure_s": 5.0,
    }
    got = phases(record)
    assert got["overhead"] == pytest.approx(1.0)
    old = {"wall_s": 4.0, "warmup_s": 1.0, "latency_mean_ms": 10.0, "latencies_ns": [1] * 100}
    assert phases(old)["measure"] == pytest.approx(2.0)  # warm-up + 100 x 10 ms


def test_report_splits_first_and_later_cells(tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = {"model": "m", "backend": "b", "precision": "fp32", "mode": "latency", "threads": 1}
    base["schema_version"] = SCHEMA_VERSION
    for batch, (wall, served) in enumerate([(8.0, 0), (3.0, 1), (3.5, 2)], start=1):
        key = f"m__b__fp32__b{batch}__t1"
        save_cell(
            run,
            {
                **base,
                "batch_size": batch,
                "cell_key": key,
                "status": "ok",
                "wall_s": wall,
                "prepare_s": 1.0,
                "eval_s": 0.5,
                "measure_s": 1.0,
                "worker_cell": served,
            },
        )
    save_cell(run, {**base, "batch_size": 9, "cell_key": "x", "status": "unsupported"})
    text = report(run)
    assert "4 cells, 3 measured" in text
    assert "a worker's first cell (start-up): median 5.50 s over 1 cells" in text
    assert "later cells: median 0.75 s over 2 cells" in text
    assert "ok 3, unsupported 1" in text
