"""The budget planner on fake timings: estimates from history, what fits, what is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferbench.budget import DEFAULT_CELL_SECONDS, History, parse_budget, plan_sweep
from inferbench.config import Cell, SweepConfig
from inferbench.errors import UserError


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("90s", 90), ("1h30m", 5400), ("42", 42)])
def test_parse_budget(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "15x", "m15", "0m", "1h 30m"])
def test_bad_budget_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="budget"):
        parse_budget(text)


def _cells() -> list[Cell]:
    sweep = SweepConfig(
        models=("mlp", "lstm"),
        backends=("torch", "onnxruntime"),
        precisions=("fp32", "int8"),
        batch_sizes=(1, 8),
        threads=(1,),
        modes=("latency", "throughput"),
    )
    return sweep.cells()


def test_estimates_fall_back_from_cell_to_model_backend_to_backend_to_default() -> None:
    cells = _cells()
    history = History.from_records(
        [
            {"cell_key": cells[0].key, "model": cells[0].model, "backend": cells[0].backend, "wall_s": 4.0},
            {"cell_key": "other", "model": "lstm", "backend": "torch", "wall_s": 6.0},
            {"cell_key": "x", "model": "resnet50", "backend": "onnxruntime", "wall_s": 8.0},
            {"cell_key": "y", "model": "mlp", "backend": "torch", "wall_s": None},  # unmeasured
        ]
    )
    by_key = {c.key: c for c in cells}
    assert history.estimate(cells[0]) == (4.0, "this cell")
    lstm_torch = next(c for c in cells if c.model == "lstm" and c.backend == "torch")
    assert history.estimate(lstm_torch) == (6.0, "same model and backend")
    ort = next(c for c in cells if c.backend == "onnxruntime")
    assert history.estimate(ort) == (8.0, "same backend")
    assert History().estimate(by_key[cells[1].key]) == (DEFAULT_CELL_SECONDS, "no history")


def test_plan_fits_the_budget_and_reports_the_rest() -> None:
    cells = _cells()
    history = History.from_records(
        [{"cell_key": c.key, "model": c.model, "backend": c.backend, "wall_s": 10.0} for c in cells]
    )
    plan = plan_sweep(cells, history, budget_s=95.0)
    assert len(plan.selected) == 9 and plan.planned_s == 90.0
    assert len(plan.skipped) == len(cells) - 9
    assert {c.key for c in plan.selected} | {c.key for c in plan.skipped} == {c.key for c in cells}
    # Batch-1 latency cells of every model come first; throughput mode is what gets skipped.
    first = [c for c in cells if c.mode == "latency" and c.batch_size == 1]
    assert len(first) == 8 and all(c in plan.selected for c in first)
    assert all(c.mode == "throughput" or c.batch_size == 8 for c in plan.skipped)
    # The ninth is an eager FP32 cell: the reference of the next group.
    extra = next(c for c in plan.selected if c not in first)
    assert (extra.backend, extra.precision, extra.batch_size) == ("torch", "fp32", 8)
    # The selection keeps the sweep's own order.
    order = [c.key for c in cells]
    assert [c.key for c in plan.selected] == sorted((c.key for c in plan.selected), key=order.index)


def test_everything_fits_a_large_budget() -> None:
    plan = plan_sweep(_cells(), History(), budget_s=1e6)
    assert not plan.skipped


def test_history_reads_run_folders(tmp_path: Path) -> None:
    cells_dir = tmp_path / "run-1" / "cells"
    cells_dir.mkdir(parents=True)
    (cells_dir / "a.json").write_text(
        json.dumps({"cell_key": "a", "model": "m", "backend": "b", "wall_s": 3})
    )
    (cells_dir / "broken.json").write_text("{not json")
    history = History.from_results_dir(tmp_path)
    assert history.by_key == {"a": 3.0}
