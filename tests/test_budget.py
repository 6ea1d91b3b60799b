"""The budget planner on fake timings: estimates from history, what fits, what is reported."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pytest

from inferbench.config import Cell, SweepConfig
from inferbench.errors import UserError
from inferbench.store.runfolder import write_csv
from inferbench.sweep.budget import (
    DEFAULT_CELL_SECONDS,
    BudgetClock,
    History,
    _priority,
    parse_budget,
    plan_sweep,
)


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


def test_estimates_fall_back_from_cell_to_model_backend_model_backend_any_then_default() -> None:
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
    assert history.estimate(ort) == (4.0, "same model")  # mlp on torch
    only_backend = History.from_records(
        [{"cell_key": "x", "model": "resnet50", "backend": "onnxruntime", "wall_s": 8.0}]
    )
    assert only_backend.estimate(ort) == (8.0, "same backend")
    assert only_backend.estimate(cells[0]) == (8.0, "any cell")
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


def test_the_clock_skips_a_planned_cell_once_earlier_cells_ran_long(tmp_path: Path) -> None:
    """Fake clock, every cell estimated at 10 s (history), 40 s budget: four cells planned. The
    clock started before the plan (the model check and the ceilings count too)."""
    cells = _cells()[:6]
    _run_folder(tmp_path, "earlier", [(c, 10.0) for c in cells])
    now = [100.0]
    clock = BudgetClock(cells, tmp_path, 40.0, clock=lambda: now[0], started=95.0)
    planned, left_out = clock.plan.selected, clock.plan.skipped
    assert len(planned) == 4 and len(left_out) == 2
    assert clock.verdict(planned[0]) is None  # 5 s gone + 10 s estimate: fits
    now[0] = 95.0 + 33.0  # earlier cells ran long: 33 s gone, 43 s > 40 s x 1.05
    late = clock.verdict(planned[-1])
    assert late is not None and late["status"] == "skipped"
    assert (
        late["reason"]
        == "does not fit the 0.666667 min budget with the time left (estimated 10 s, from this cell)"
    )
    now[0] = 95.0 + 31.0  # 41 s <= 42 s: within the slack
    assert clock.verdict(planned[-1]) is None


def test_cells_the_plan_left_out_run_last_estimated_from_this_runs_timings(tmp_path: Path) -> None:
    """No history (a fresh clone): the plan assumes 30 s a cell and fits 2 of 8 in 60 s. The
    cells really take 5 s; once two have run, the others are estimated at 5 s and run while
    the time lasts, in the plan's order of priority, instead of being skipped at the start."""
    cells = _cells()[:8]
    now = [0.0]
    clock = BudgetClock(cells, tmp_path, 60.0, clock=lambda: now[0])
    assert len(clock.plan.selected) == 2
    planned, later = clock.split(cells)
    order = planned + later
    assert order[:2] == clock.plan.selected  # planned first, then the rest by priority
    assert [c.key for c in order[2:]] == [c.key for c in sorted(clock.plan.skipped, key=_priority)]
    statuses = []
    for cell in order:
        verdict = clock.verdict(cell)
        if verdict is None:
            now[0] += 5.0
            clock.learn(cell, {"status": "ok", "wall_s": 5.0})
        statuses.append(verdict["status"] if verdict else "ran")
    # 12 cells' worth of time: all 8 ran, in 40 s
    assert statuses == ["ran"] * 8 and now[0] == 40.0
    # A tighter budget: the last cells are skipped, each with the estimate that kept it out.
    now[0] = 0.0
    tight = BudgetClock(cells, tmp_path, 22.0, clock=lambda: now[0])
    seen = []
    first, then = tight.split(cells)
    for cell in first + then:
        verdict = tight.verdict(cell)
        if verdict is None:
            now[0] += 5.0
            tight.learn(cell, {"status": "ok", "wall_s": 5.0})
        seen.append(verdict["reason"] if verdict else "ran")
    # A failed cell's time (a timeout's is the timeout) is not learned.
    tight.learn(cells[0], {"status": "timeout", "wall_s": 600.0})
    assert tight.history.any_cell == 5.0
    # Nothing fits the fixed guess: the first cell runs as the probe, then three more fit.
    assert seen[:4] == ["ran"] * 4 and now[0] == 20.0
    assert all(
        r.startswith("does not fit the 0.366667 min budget with the time left (estimated 5 s")
        for r in seen[4:]
    )


def _run_folder(results_dir: Path, name: str, rows: list[tuple[Cell, float | None]]) -> Path:
    """A run folder as the runner leaves it, written through storage."""
    run_dir = results_dir / name
    records = [
        {**asdict(cell), "cell_key": cell.key, "status": "ok" if wall else "skipped", "wall_s": wall}
        for cell, wall in rows
    ]
    write_csv(run_dir, records)
    return run_dir


def test_history_reads_each_run_folders_results_csv(tmp_path: Path) -> None:
    cells = _cells()
    mlp_torch = [c for c in cells if (c.model, c.backend) == ("mlp", "torch")]
    _run_folder(tmp_path, "run-1", [(mlp_torch[0], 2.0), (mlp_torch[1], 5.0), (mlp_torch[2], None)])
    _run_folder(tmp_path, "run-2", [(mlp_torch[0], 4.0)])
    history = History.from_results_dir(tmp_path)
    assert history.by_key == {mlp_torch[0].key: 3.0, mlp_torch[1].key: 5.0}  # the skipped cell: no time
    assert history.estimate(mlp_torch[0]) == (3.0, "this cell")
    assert history.estimate(mlp_torch[2]) == (4.0, "same model and backend")  # median of 2, 4, 5
    lstm_torch = next(c for c in cells if (c.model, c.backend) == ("lstm", "torch"))
    assert history.estimate(lstm_torch) == (4.0, "same backend")
    lstm_ort = next(c for c in cells if (c.model, c.backend) == ("lstm", "onnxruntime"))
    assert history.estimate(lstm_ort) == (4.0, "any cell")


def test_history_uses_the_table_not_the_cell_files(tmp_path: Path) -> None:
    cell = _cells()[0]
    run_dir = _run_folder(tmp_path, "run-1", [(cell, 7.0)])
    (run_dir / "cells").mkdir()
    (run_dir / "cells" / f"{cell.key}.json").write_text("{not json")
    only_cells = tmp_path / "run-2" / "cells"  # no results.csv: nothing to learn from
    only_cells.mkdir(parents=True)
    (only_cells / "x.json").write_text(
        json.dumps({"cell_key": "x", "model": "m", "backend": "b", "wall_s": 9})
    )
    assert History.from_results_dir(tmp_path).by_key == {cell.key: 7.0}


def test_history_skips_folders_whose_table_does_not_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cell = _cells()[0]
    _run_folder(tmp_path, "good", [(cell, 6.0)])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.csv").write_text("")
    (tmp_path / "old").mkdir()  # a table without wall_s
    (tmp_path / "old" / "results.csv").write_text("model,backend,cell_key\nmlp,torch,k\n")
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "results.csv").write_bytes(b"\xff\xfe\x00garbage")
    with caplog.at_level(logging.DEBUG, logger="inferbench.sweep.budget"):
        history = History.from_results_dir(tmp_path)
    assert history.by_key == {cell.key: 6.0}
    skipped = sorted(Path(str(r.args[0])).name for r in caplog.records if isinstance(r.args, tuple))
    assert skipped == ["binary", "empty", "old"]


def test_no_results_dir_means_no_history(tmp_path: Path) -> None:
    assert History.from_results_dir(tmp_path / "missing") == History()
