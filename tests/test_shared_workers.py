"""Shared workers (inferbench.sweep.launch): a group's cells share one process, one at a time; a
crash or a hang costs the cell it happened in, and the next cell runs in a new worker."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from inferbench.config import MeasureConfig
from inferbench.errors import UserError
from inferbench.store.runfolder import load_cells
from inferbench.sweep.runner import run_sweep
from tests.conftest import FAST_MEASURE, fake_sweep

pytestmark = pytest.mark.slow
PID = "tests.fakes:PidBackend"
FAKE = "tests.fakes:FakeBackend"


def _pids(run_dir: Path) -> dict[int, int]:
    return {int(r["batch_size"]): r["details"]["pid"] for r in load_cells(run_dir) if r["status"] == "ok"}


def test_group_shares_one_worker_and_a_crash_costs_one_cell(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep([PID], batch_sizes=(1, 4, 2, 5, 6))
    records = {r["batch_size"]: r for r in run_sweep(config, run_dir, cache_dir=cache_dir)}
    assert records[2]["status"] == "error"
    assert "SIGSEGV" in records[2]["reason"]
    assert {b: records[b]["status"] for b in (1, 4, 5, 6)} == dict.fromkeys((1, 4, 5, 6), "ok")
    pids = _pids(run_dir)
    assert pids[1] == pids[4]  # one worker served the cells before the crash
    assert pids[5] == pids[6] != pids[1]  # and a new one those after it
    # Every cell keeps its own log, the crash's included.
    assert "SIGSEGV" not in (run_dir / "logs" / f"{records[1]['cell_key']}.log").read_text()
    assert (run_dir / "logs" / f"{records[2]['cell_key']}.log").exists()


def test_a_hang_costs_one_cell_and_the_group_goes_on(run_dir: Path, cache_dir: Path) -> None:
    measure = replace(FAST_MEASURE, timeout_seconds=3.0)
    config = fake_sweep([PID], batch_sizes=(1, 3, 4), measure=measure)
    records = {r["batch_size"]: r for r in run_sweep(config, run_dir, cache_dir=cache_dir)}
    assert records[3]["status"] == "timeout"
    assert records[1]["status"] == records[4]["status"] == "ok"
    pids = _pids(run_dir)
    assert pids[1] != pids[4]


def test_groups_run_together_rows_stay_in_sweep_order(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep([PID, FAKE], batch_sizes=(1, 4), modes=("latency", "throughput"))
    run_sweep(config, run_dir, cache_dir=cache_dir)
    cells = load_cells(run_dir)
    pid_rows = [r for r in cells if r["backend"] == PID]
    assert len({r["details"]["pid"] for r in pid_rows}) == 1  # both modes, one worker
    csv = (run_dir / "results.csv").read_text().splitlines()[1:]
    modes = [line.split(",")[5] for line in csv]
    assert modes == ["latency"] * 4 + ["throughput"] * 4  # the sweep's order, not the run's


def test_fresh_workers_and_repeats_use_a_process_per_cell(run_dir: Path, cache_dir: Path) -> None:
    fresh = replace(FAST_MEASURE, shared_workers=0)
    run_sweep(fake_sweep([PID], batch_sizes=(1, 4), measure=fresh), run_dir, cache_dir=cache_dir)
    pids = _pids(run_dir)
    assert pids[1] != pids[4]
    repeated = replace(FAST_MEASURE, repeats=2)
    other = run_dir.parent / "run-2"
    run_sweep(fake_sweep([PID], batch_sizes=(1, 4), measure=repeated), other, cache_dir=cache_dir)
    assert len(set(_pids(other).values())) == 2


def test_shared_workers_is_validated_and_not_hashed() -> None:
    with pytest.raises(UserError, match="shared_workers"):
        MeasureConfig(shared_workers=2)
    config = fake_sweep([FAKE])
    cell = config.cells()[0]
    other = replace(config, measure=replace(config.measure, shared_workers=0))
    assert config.cell_settings(cell, {}) == other.cell_settings(cell, {})
    assert json.dumps(config.to_dict()) != json.dumps(other.to_dict())  # recorded, though


def test_throughput_cell_takes_its_latency_twins_check_only_when_outputs_agree(
    run_dir: Path, cache_dir: Path
) -> None:
    same, other = "tests.fakes:LinearBackend", "tests.fakes:ModeDependentBackend"
    config = fake_sweep(
        [same, other], models=("tests.fakes:torch_linear_model",), modes=("latency", "throughput")
    )
    run_sweep(config, run_dir, cache_dir=cache_dir)
    cells = {(r["backend"], r["batch_size"], r["mode"]): r for r in load_cells(run_dir)}
    for batch in (1, 2):
        latency, throughput = cells[(same, batch, "latency")], cells[(same, batch, "throughput")]
        # Its own full check (a re-measure of a disturbed window may reuse the cell's own).
        assert latency.get("accuracy_from") in (None, latency["cell_key"]) and latency["eval_samples"] == 64
        assert latency["status"] == throughput["status"] == "ok"
        assert throughput["accuracy_from"] == latency["cell_key"]
        assert throughput["accuracy_from_rel_diff"] <= 1e-5
        assert throughput["rel_l2_err"] == latency["rel_l2_err"]
        # Outputs 1% apart in throughput mode: the full check runs there, and fails it (fp32).
        latency, throughput = cells[(other, batch, "latency")], cells[(other, batch, "throughput")]
        assert throughput.get("accuracy_from") != latency["cell_key"]  # (a re-measure may reuse its own)
        assert throughput["rel_l2_err"] > 0.005 > latency["rel_l2_err"]
        assert (latency["status"], throughput["status"]) == ("ok", "accuracy-fail")
