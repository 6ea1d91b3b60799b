"""The gate's A/A calibration: each cell's noise from A/A rounds, the statistic it gates on,
the plan of what the runner can decide, and the file that carries it to the next run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.ab.calibration import Calibration, CellNoise, cell_noise, plan, rounds_allowed
from inferbench.ab.core import AbOptions, paired_rows
from inferbench.ab.rounds import aa_rounds, pair_processes, run_rounds
from inferbench.compare.core import CompareOptions
from inferbench.compare.verdict import paired_estimate
from inferbench.errors import UserError
from tests.test_ab import CELL, FakeMachine


def _pairs(
    first: list[float], second: list[float], body: float = 1.0
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A/A rounds whose fastest calls are `first`/`second` and whose p50s are `body` times them."""
    return [
        ({"latency_min_ms": a, "latency_p50_ms": body * a}, {"latency_min_ms": b, "latency_p50_ms": body * b})
        for a, b in zip(first, second, strict=True)
    ]


def test_noise_is_the_gate_estimators_spread_per_round_and_the_processes_p50_spread() -> None:
    rng = np.random.default_rng(1)
    first = list(10 * np.exp(rng.normal(0, 0.02, 6)))
    second = list(10 * np.exp(rng.normal(0, 0.02, 6)))
    noise = cell_noise(_pairs(first, second), round_s=4.0)
    estimate = paired_estimate(first, second, higher_is_better=False)
    assert estimate is not None
    assert noise.sigma_pct["min"] == pytest.approx(100 * estimate.se * math.sqrt(6))
    p50s = [*first, *second]
    assert noise.spread_pct == pytest.approx(100 * (max(p50s) - min(p50s)) / float(np.median(p50s)))
    assert (noise.rounds, noise.round_s) == (6, 4.0)
    assert cell_noise(_pairs([10.0], [11.0]), 1.0).sigma_pct == {}  # one round has no spread


def test_each_cell_gates_on_its_steadier_statistic() -> None:
    steady_min = CellNoise({"min": 1.0, "p50": 4.0}, 2.0, 4, 3.0)
    steady_p50 = CellNoise({"min": 8.0, "p50": 2.0}, 2.0, 4, 3.0)
    calibration = Calibration("abc", "a machine", "gate-cpu", {"a": steady_min, "b": steady_p50})
    assert calibration.gate_on("a", "p50") == "min"
    assert calibration.gate_on("b", "min") == "p50"
    assert calibration.gate_on("not calibrated", "p50") == "p50"
    tie = CellNoise({"min": 2.0, "p50": 2.0}, 2.0, 4, 3.0)
    assert tie.steadiest == "min"


@pytest.mark.parametrize(
    ("sigma_min", "sigma_p50", "rounds", "chosen"),
    [
        (11.1, 9.7, 4, "min"),  # the campaign's tiny-cnn/openvino: a 13% edge is chance at 4 rounds
        (6.0, 2.0, 4, "min"),  # 3x, but F(3, 3) needs 3.05x at 5%
        (6.0, 2.0, 12, "p50"),  # the same 3x over 12 rounds is evidence
        (3.0, 2.0, 30, "p50"),  # 1.5x: evidence only with many rounds
        (3.0, 2.0, 8, "min"),
        (2.0, 6.0, 30, "min"),
        (2.0, 0.0, 4, "p50"),  # p50 did not move at all
        (0.0, 0.0, 4, "min"),
    ],
)
def test_p50_replaces_the_minimum_only_on_evidence(
    sigma_min: float, sigma_p50: float, rounds: int, chosen: str
) -> None:
    """Few A/A rounds estimate a spread within a factor of about 2: the smaller of two such
    estimates is often the worse statistic, so the default (min) stands unless p50 is steadier
    beyond what chance gives at these rounds."""
    assert CellNoise({"min": sigma_min, "p50": sigma_p50}, 2.0, rounds, 3.0).steadiest == chosen
    assert Calibration("abc", "m", "p", {"c": CellNoise({}, 0.0, 0, 1.0)}).gate_on("c", "p50") == "p50"


def test_a_serve_cells_noise_is_its_peak_rates_and_it_gates_on_nothing_else() -> None:
    rng = np.random.default_rng(2)
    first = list(400 * np.exp(rng.normal(0, 0.05, 6)))
    second = list(400 * np.exp(rng.normal(0, 0.05, 6)))
    # The peak's own latency columns vary independently: the noise must not read them.
    pairs = [
        (
            {"mode": "serve", "max_qps_at_slo": a, "latency_min_ms": 1.0, "latency_p50_ms": 1.0 + i},
            {"mode": "serve", "max_qps_at_slo": b, "latency_min_ms": 2.0, "latency_p50_ms": 5.0},
        )
        for i, (a, b) in enumerate(zip(first, second, strict=True))
    ]
    pairs.append(({"mode": "serve", "max_qps_at_slo": None}, {"mode": "serve", "max_qps_at_slo": 300.0}))
    noise = cell_noise(pairs, round_s=20.0)
    estimate = paired_estimate(first, second, higher_is_better=True)  # the round with no peak is left out
    assert estimate is not None and set(noise.sigma_pct) == {"max_qps_at_slo"}
    assert noise.sigma_pct["max_qps_at_slo"] == pytest.approx(100 * estimate.se * math.sqrt(6))
    peaks = [*first, *second, 300.0]
    assert noise.spread_pct == pytest.approx(100 * (max(peaks) - min(peaks)) / float(np.median(peaks)))
    calibration = Calibration("abc", "a machine", "serve-cpu", {"s": noise})
    assert calibration.gate_on("s", "p50") == "p50"  # nothing to choose: compare gates it on its peak
    planned = plan("s", "p50", noise, threshold=0.05, alpha=0.05, tests=1, rounds_allowed=30)
    assert planned.statistic == "max_qps_at_slo" and planned.sigma_pct == noise.sigma_pct["max_qps_at_slo"]
    assert Calibration.from_dict(calibration.to_dict(), "file").cells["s"] == noise  # the file keeps it


def test_a_gate_runs_rounds_refresh_the_spread_pooled_by_degrees_of_freedom() -> None:
    """4 A/A rounds that read 9% and a run's 10 clean rounds at 3%: (3 * 81 + 9 * 9) / 12 = 27,
    so 5.2% over 14 rounds; p50, which the A/A rounds did not estimate, takes the run's. The
    process spread and round time stay the A/A's; a cell with under 2 rounds, or not in the
    calibration, changes nothing."""
    cells = {"a": CellNoise({"min": 9.0}, 2.0, 4, 3.0), "b": CellNoise({"min": 1.0}, 1.0, 4, 2.0)}
    old = Calibration("f", "m", "gate-cpu", cells)
    run = {
        "a": CellNoise({"min": 3.0, "p50": 4.0}, 7.0, 10, 1.0),
        "b": CellNoise({}, 0.0, 1, 1.0),
        "new": CellNoise({"min": 1.0}, 1.0, 10, 1.0),
    }
    new = old.refreshed(run)
    assert new.cells["a"] == CellNoise({"min": pytest.approx(math.sqrt(27)), "p50": 4.0}, 2.0, 14, 3.0)
    assert new.cells["b"] == old.cells["b"] and set(new.cells) == {"a", "b"}
    assert old.cells["a"].sigma_pct == {"min": 9.0}  # the old one is left as it was
    assert (new.machine, new.machine_label, new.profile) == ("f", "m", "gate-cpu")


def test_refreshes_count_at_most_memory_rounds_so_a_drift_is_followed() -> None:
    """A runner whose spread fell from 10% to 2%: the old rounds weigh at most MEMORY_ROUNDS
    less the run's, so ten 30-round runs bring the file to 2.02% (a plain pool over all 360
    rounds would still read 4.5%)."""
    from inferbench.ab.calibration import MEMORY_ROUNDS

    calibration = Calibration("f", "m", "p", {"c": CellNoise({"min": 10.0}, 2.0, MEMORY_ROUNDS, 3.0)})
    for _ in range(10):
        calibration = calibration.refreshed({"c": CellNoise({"min": 2.0}, 1.0, 30, 1.0)})
        assert calibration.cells["c"].rounds == MEMORY_ROUNDS
    assert 2.0 < calibration.cells["c"].sigma_pct["min"] < 2.05


def test_a_run_that_cannot_refresh_its_file_says_so_and_keeps_its_verdicts(tmp_path: Path) -> None:
    """The refresh after the A/B rounds: a file that cannot be written, or a run with no cell of
    2 clean rounds, leaves a note instead of a traceback (the run's outputs come after it)."""
    from inferbench.ab.command import _refresh_calibration
    from inferbench.ab.rounds import Rounds

    calibration = Calibration("f", "m", "gate-cpu", {"x": CellNoise({"min": 3.0}, 2.0, 4, 3.0)})
    ok = {"status": "ok", "latency_min_ms": 1.0, "latency_p50_ms": 1.1}
    one_round = Rounds({"x": {"base": [ok], "head": [ok]}}, {"x": ()})
    path = tmp_path / "calibration.json"
    assert "left as it was" in _refresh_calibration(calibration, one_round, path)
    assert Calibration.load(path) == calibration
    blocked = tmp_path / "a-folder"
    blocked.mkdir()
    (blocked / "inside").write_text("keeps the folder from being replaced")
    note = _refresh_calibration(calibration, one_round, blocked)
    assert note.startswith(f"The calibration {blocked} was not refreshed")
    rounds = Rounds({"x": {"base": [ok, ok, ok], "head": [ok, {**ok, "latency_min_ms": 1.1}, ok]}}, {"x": ()})
    assert "this run's 3 clean rounds" in _refresh_calibration(calibration, rounds, path)
    assert Calibration.load(path).cells["x"].rounds == 7


def test_a_constant_change_leaves_the_spread_a_run_adds() -> None:
    """The refresh reads A/B rounds: head 10% slower in every round moves each log ratio alike,
    so the spread is the same as with no change."""
    rng = np.random.default_rng(3)
    first = list(10 * np.exp(rng.normal(0, 0.03, 12)))
    second = list(10 * np.exp(rng.normal(0, 0.03, 12)))
    unchanged = cell_noise(_pairs(first, second), 1.0)
    slower = cell_noise(_pairs(first, [1.1 * b for b in second]), 1.0)
    assert slower.sigma_pct["min"] == pytest.approx(unchanged.sigma_pct["min"])
    assert unchanged.sigma_pct["min"] > 0


def test_the_plan_says_what_a_quiet_and_a_noisy_cell_can_decide() -> None:
    quiet = CellNoise({"min": 1.0}, 1.0, 4, 2.0)
    noisy = CellNoise({"min": 30.0}, 1.0, 4, 2.0)
    kwargs: dict[str, Any] = {"threshold": 0.05, "alpha": 0.05, "tests": 6, "rounds_allowed": 30}
    fast = plan("q", "min", quiet, **kwargs)
    slow = plan("n", "min", noisy, **kwargs)
    assert fast.rounds_to_pass == 8  # early looks spend little alpha: 3 and 5 rounds cannot pass
    assert fast.detects_pct is not None and 5 < fast.detects_pct < 7
    assert slow.rounds_to_pass is None and slow.detects_pct is not None and slow.detects_pct > 25
    fewer = plan("n", "min", noisy, **{**kwargs, "rounds_allowed": 10})
    assert fewer.detects_pct is not None and fewer.detects_pct > slow.detects_pct
    assert plan("x", "p50", quiet, **kwargs).sigma_pct is None  # not calibrated on p50: no plan


@pytest.mark.slow
def test_the_planned_rounds_match_how_the_gate_decides_simulated_a_a_cells() -> None:
    """The plan is a normal approximation of the gate's own rule. On 120 simulated A/A cells
    with a 4% per-round spread, run through the real sequential rounds, about 80% (the planned
    power) have passed by the planned rounds; the approximation ignores earlier looks and the
    t-distribution's sampling of the spread, so it may err a little either way."""
    sigma = 0.04
    planned = plan(
        "m", "p50", CellNoise({"p50": 100 * sigma * math.sqrt(2)}, 0.0, 8, 1.0),
        threshold=0.05, alpha=0.05, tests=1, rounds_allowed=30,
    )  # fmt: skip
    assert planned.rounds_to_pass is not None
    passed = 0
    for seed in range(120):
        machine = FakeMachine(noise=sigma, seed=seed)  # each side's log noise: the ratio's is sqrt(2) x
        options = AbOptions(rounds=planned.rounds_to_pass, compare=CompareOptions(max_regression=0.05))
        run = run_rounds(["m"], options, machine.launch, cells={"m": CELL})
        frame = paired_rows(run.results, {"m": CELL}, options, looks=run.looks)
        passed += frame[frame["gating"]]["verdict"].iloc[0] == "no change"
    assert 0.65 <= passed / 120 <= 0.97


def test_aa_rounds_run_the_base_twice_from_round_1_and_leave_out_disturbed_pairs() -> None:
    machine = FakeMachine(noise=0.01, seed=3)
    machine.disturbed = {("base", 2)}  # every process of A/A round 2
    noise = aa_rounds(["x", "y"], 3, machine.launch, clock=lambda: machine.now)
    assert {side for side, _, _ in machine.calls} == {"base"}
    assert [r for _, k, r in machine.calls if k == "x"] == [1, 1, 2, 2, 3, 3]
    assert [k for _, k, _ in machine.calls[:4]] == ["x", "x", "y", "y"]  # over all cells first
    assert noise["x"].rounds == 2 and set(noise["x"].sigma_pct) == {"min", "p50"}
    assert noise["x"].round_s == 2.0  # two ticks a round


def test_a_calibration_file_round_trips_and_is_refused_elsewhere(tmp_path: Path) -> None:
    calibration = Calibration(
        "f1", "AMD EPYC, 2 CPUs", "gate-cpu", {"k": CellNoise({"min": 1.5}, 3.0, 4, 5.0)}
    )
    path = tmp_path / "calibration.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration
    calibration.check_machine("f1", "AMD EPYC, 2 CPUs", path)
    with pytest.raises(UserError, match="calibrated on AMD EPYC, 2 CPUs, not this machine"):
        calibration.check_machine("f2", "Intel Xeon, 2 CPUs", path)
    for text in (
        "{",
        "[]",
        json.dumps({**calibration.to_dict(), "cells": {"k": {"sigma_pct": {"min": -1}}}}),
    ):
        path.write_text(text)
        with pytest.raises(UserError, match="calibration"):
            Calibration.load(path)
    with pytest.raises(UserError, match="no such file"):
        Calibration.load(tmp_path / "missing.json")


def test_options_refuse_auto_without_a_calibration_and_one_a_a_round() -> None:
    with pytest.raises(UserError, match="--gate-on auto needs a calibration"):
        AbOptions(gate_auto=True)
    with pytest.raises(UserError, match="at least 2 A/A rounds"):
        AbOptions(calibrate=1)


def test_a_cell_gates_on_its_own_statistic() -> None:
    """Two cells, one gating on min and one on p50: each row says which, and only the cell's
    own statistic gates it. The p50 cell's slowdown lives in its body only, so it fails, while
    the min cell, whose fastest call did not move, passes."""

    class BodySlower(FakeMachine):
        def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
            record = super().launch(side, key, round_index)
            if side == "head":
                record["latency_p50_ms"] *= 1.3
            return record

    keys = ["on-min", "on-p50"]
    cells = {k: {**CELL, "model": k} for k in keys}
    options = AbOptions(rounds=8, gate_on_by_cell={"on-min": "min", "on-p50": "p50"})
    run = run_rounds(keys, options, BodySlower(noise=0.01, seed=4).launch, cells=cells)
    frame = paired_rows(run.results, cells, options, looks=run.looks)
    gating = frame[frame["gating"]].set_index("model")
    assert gating.loc["on-min", "metric"] == "min" and gating.loc["on-p50", "metric"] == "p50"
    assert gating.loc["on-min", "verdict"] == "no change" and gating.loc["on-p50", "verdict"] == "regression"
    assert set(frame["gate_on"]) == {"min", "p50"}


def test_rounds_allowed_by_the_budget() -> None:
    noise = {"a": CellNoise({}, 0.0, 2, 10.0), "b": CellNoise({}, 0.0, 2, 20.0)}
    assert rounds_allowed(noise, 30, None) == 30
    assert rounds_allowed(noise, 30, 300.0) == 10
    assert rounds_allowed(noise, 5, 300.0) == 5


@pytest.mark.slow
def test_a_run_with_the_runners_calibration_carries_its_spread_and_refuses_another_machines(
    tmp_path: Path,
) -> None:
    """One-process rows get the calibrated spread (the runner's median: the fake cell was not
    calibrated), unsupported rows none; a calibration of another machine class is refused
    before the run folder exists."""
    from inferbench.history.fingerprint import machine_from_env
    from inferbench.machine import env
    from inferbench.store.runfolder import read_csv
    from inferbench.sweep.runner import run_sweep
    from tests.conftest import fake_sweep

    here = machine_from_env(env.capture([1]))
    noise = {"a": CellNoise({"min": 1.0}, 4.0, 4, 1.0), "b": CellNoise({"min": 1.0}, 8.0, 4, 1.0)}
    config = fake_sweep(["tests.fakes:FakeBackend"], precisions=("fp32", "int8"), batch_sizes=(1,))
    elsewhere = Calibration("another", "Intel Xeon, 64 CPUs", "gate-cpu", noise)
    with pytest.raises(UserError, match="calibrated on Intel Xeon, 64 CPUs, not this machine"):
        run_sweep(config, tmp_path / "refused", cache_dir=tmp_path / "cache", calibration=elsewhere)
    assert not (tmp_path / "refused").exists()
    calibration = Calibration(here.fingerprint, here.label, "gate-cpu", noise)
    run_sweep(config, tmp_path / "run", cache_dir=tmp_path / "cache", calibration=calibration)
    rows = read_csv(tmp_path / "run").set_index("precision")
    assert rows.loc["fp32", "calibrated_spread_pct"] == 6.0
    assert math.isnan(rows.loc["int8", "calibrated_spread_pct"])


ENV = {"cpu": {"model": "AMD EPYC", "isa": {"avx2": True}, "logical_cpus": 2}, "memory_gb": 24}


def _run_calibrated(tmp_path: Path, options: AbOptions, machine: FakeMachine) -> tuple[AbOptions, list[str]]:
    from types import SimpleNamespace

    from inferbench.ab.command import _calibrated

    running = {"base": SimpleNamespace(info={"env": ENV}, run=lambda key, r: machine.launch("base", key, r))}
    options, lines, calibration = _calibrated(
        options, running, ["x"], "gate-cpu", tmp_path, None, None, started=0.0
    )
    assert calibration is not None
    return options, lines


def test_a_calibration_file_is_read_when_it_fits_and_measured_again_when_it_does_not(tmp_path: Path) -> None:
    """The file stands in for the A/A rounds on its own machine class, profile and cells; a file
    from elsewhere is measured again with --calibrate (and rewritten for the next run), and
    refused without it."""
    from inferbench.history.fingerprint import machine_from_env

    here = machine_from_env(ENV)
    path = tmp_path / "calibration.json"
    Calibration(
        here.fingerprint, here.label, "gate-cpu", {"x": CellNoise({"min": 9.0, "p50": 1.0}, 2.0, 4, 3.0)}
    ).save(path)
    machine = FakeMachine(noise=0.01, seed=5)
    options, lines = _run_calibrated(
        tmp_path, AbOptions(calibrate=3, calibration=path, gate_auto=True), machine
    )
    assert machine.calls == [] and options.gate_on_by_cell == {"x": "p50"}  # read, not measured
    assert "from 4 rounds measured here" in lines[0]
    Calibration("elsewhere", "Intel Xeon", "gate-cpu", {"x": CellNoise({"min": 1.0}, 2.0, 4, 3.0)}).save(path)
    with pytest.raises(UserError, match="calibrated on Intel Xeon, not this machine"):
        _run_calibrated(tmp_path, AbOptions(calibration=path), machine)
    _run_calibrated(tmp_path, AbOptions(calibrate=3, calibration=path), machine)
    assert len(machine.calls) == 6  # three A/A rounds of two base workers
    assert (
        Calibration.load(path).machine
        == here.fingerprint
        == Calibration.load(tmp_path / "calibration.json").machine
    )
    missing = tmp_path / "first" / "calibration.json"
    _run_calibrated(tmp_path, AbOptions(calibrate=2, calibration=missing), machine)
    assert Calibration.load(missing).cells["x"].rounds <= 2
    with pytest.raises(UserError, match="no such file"):
        _run_calibrated(tmp_path, AbOptions(calibration=tmp_path / "nowhere.json"), machine)


def test_a_rounds_processes_alternate_the_sides_and_pool_per_side() -> None:
    """`ab --processes 3`: A B B A A B in an even round (B A A B B A in an odd one), each side's
    three processes pooled (the fastest call of all); a side whose process failed runs no more
    that round. A slow stretch of the machine two processes long reaches both sides."""
    calls: list[tuple[str, int]] = []

    def launch(side: str, key: str, r: int) -> dict[str, Any]:
        calls.append((side, r))
        slow = 1.5 if len(calls) in (3, 4) else 1.0  # the third and fourth process: one per side
        latencies = [int(slow * (100_000 + 1000 * len(calls) + i)) for i in range(50)]
        if key == "broken" and side == "head":
            return {"status": "error", "reason": "crashed", "batch_size": 1}
        return {
            "status": "ok",
            "batch_size": 1,
            "latencies_ns": latencies,
            "latency_min_ms": min(latencies) / 1e6,
            "latency_p50_ms": float(np.median(latencies)) / 1e6,
            "throughput_sps": 1e9 / float(np.mean(latencies)),
            "interfered": False,
        }

    pooled = pair_processes("m", 0, launch, processes=3)
    assert [side for side, _ in calls] == ["base", "head", "head", "base", "base", "head"]
    assert pooled["base"]["repeats"] == pooled["head"]["repeats"] == 3
    assert pooled["base"]["latency_min_ms"] == pytest.approx(0.101)  # its first process
    assert pooled["head"]["latency_min_ms"] == pytest.approx(0.102)
    calls.clear()
    pair_processes("m", 1, launch, processes=3)
    assert [side for side, _ in calls] == ["head", "base", "base", "head", "head", "base"]
    calls.clear()
    broken = pair_processes("broken", 0, launch, processes=3)
    assert [side for side, _ in calls] == ["base", "head", "base", "base"]
    assert broken["head"]["status"] == "error" and broken["base"]["repeats"] == 3


def test_processes_per_round_reach_the_agents_sweep() -> None:
    """An agent asked for N processes per request runs them as its repeats, pooled by the side's
    runner (variance_sources' `three-processes`; `ab` asks for one and alternates them itself)."""
    import tomllib

    from inferbench.ab.agent import _setup
    from tests.test_ab import AA_PROFILE

    request = {"profile": tomllib.loads(AA_PROFILE), "name": "aa", "overrides": {}}
    assert _setup(request)[0].measure.repeats == 1
    assert _setup({**request, "processes": 3})[0].measure.repeats == 3
    with pytest.raises(UserError, match="--processes must be >= 1"):
        AbOptions(processes=0)
