"""`inferbench ab`: interleaving and pairing with fake workers on a fake clock, verdicts and exit
codes, and real A/A runs whose sides run their own code."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tomllib
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from inferbench.ab.agent import round_config
from inferbench.ab.calibration import CellNoise
from inferbench.ab.command import profile_data
from inferbench.ab.core import AbOptions, Agent, clean_pairs, paired_rows, round_order
from inferbench.ab.rounds import BUDGET, BUDGET_RESERVE, DECIDED, MOST_ROUNDS, Rounds, interleave, run_rounds
from inferbench.ab.sides import Side
from inferbench.cli import main
from inferbench.compare.core import CompareOptions, exit_code
from inferbench.compare.verdict import decide, paired_estimate
from inferbench.config import Cell, load_profile
from inferbench.errors import InternalError, UserError
from inferbench.layout import PROJECT_ROOT, link_tree

CELL = asdict(Cell("m", "b", "fp32", 1, 1))  # the cell's axes, each as the sweep names it


class FakeMachine:
    """Workers on a fake clock: each launch takes one tick; the machine slows down linearly
    with time (drift), and each side may carry its own slowdown and noise."""

    def __init__(self, drift_per_tick: float = 0.0, slowdown: float = 1.0, noise: float = 0.0, seed: int = 0):
        self.now = 0
        self.calls: list[tuple[str, str, int]] = []
        self.drift, self.slowdown, self.noise = drift_per_tick, slowdown, noise
        self.rng = np.random.default_rng(seed)
        self.status: dict[tuple[str, str], str] = {}
        self.disturbed: set[tuple[str, int]] = set()

    def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
        self.calls.append((side, key, round_index))
        self.now += 1
        status = self.status.get((side, key), "ok")
        if status != "ok":
            return {"status": status, "reason": "fake"}
        level = (1 + self.drift * self.now) * (self.slowdown if side == "head" else 1.0)
        p50 = 10.0 * level * float(np.exp(self.rng.normal(0, self.noise)))
        return {
            "status": "ok",
            "latency_p50_ms": p50,
            "latency_p99_ms": 1.2 * p50,
            "latency_min_ms": 0.9 * p50,
            "throughput_sps": 1000 / p50,
            "interfered": (side, round_index) in self.disturbed,
        }


def _verdicts(machine: FakeMachine, keys: list[str], rounds: int, threshold: float = 0.05) -> Any:
    results = interleave(keys, rounds, machine.launch)
    cells = {k: {**CELL, "model": k} for k in keys}
    options = AbOptions(rounds=rounds, compare=CompareOptions(max_regression=threshold))
    return paired_rows(results, cells, options)


def test_rounds_alternate_abba_and_go_over_all_cells_first() -> None:
    machine = FakeMachine()
    interleave(["c1", "c2"], 4, machine.launch)
    assert [round_order(r) for r in range(4)] == [("base", "head"), ("head", "base")] * 2
    assert machine.calls[:8] == [
        ("base", "c1", 0),
        ("head", "c1", 0),
        ("base", "c2", 0),
        ("head", "c2", 0),
        ("head", "c1", 1),
        ("base", "c1", 1),
        ("head", "c2", 1),
        ("base", "c2", 1),
    ]
    assert len(machine.calls) == 16  # one fresh worker per side per cell per round


def test_pairing_cancels_a_drifting_machine() -> None:
    """The machine slows 1% per worker launch: 60% over the run. A/A must stay no change; the
    same drift with the sides run one after the other would read as a huge regression."""
    frame = _verdicts(FakeMachine(drift_per_tick=0.01), ["m"], rounds=10)
    p50 = frame[frame["metric"] == "p50"].iloc[0]
    assert p50["verdict"] == "no change", p50
    assert p50["ratio"] == pytest.approx(1.0, abs=0.01)
    assert exit_code(frame) == 0


def test_a_real_slowdown_is_a_regression_despite_drift() -> None:
    frame = _verdicts(FakeMachine(drift_per_tick=0.01, slowdown=1.10, noise=0.01), ["m"], rounds=10)
    assert set(frame[frame["gating"]]["verdict"]) == {"regression"}
    assert exit_code(frame) == 1


def test_mde_shrinks_with_rounds_and_noisy_cells_are_inconclusive() -> None:
    few = _verdicts(FakeMachine(noise=0.03, seed=1), ["m"], rounds=4)
    many = _verdicts(FakeMachine(noise=0.03, seed=1), ["m"], rounds=20)
    mde = [float(f[f["metric"] == "p50"]["mde_pct"].iloc[0]) for f in (few, many)]
    assert mde[0] > mde[1] > 5.0  # never below the threshold itself
    noisy = _verdicts(FakeMachine(noise=0.2, seed=2), ["m"], rounds=4)
    assert set(noisy[noisy["gating"]]["verdict"]) == {"inconclusive"}
    assert exit_code(noisy) == 3


def test_one_regressed_cell_among_300() -> None:
    class OneSlowCell(FakeMachine):
        def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
            record = super().launch(side, key, round_index)
            if side == "head" and key == "c123":
                record["latency_p50_ms"] *= 1.5
                record["throughput_sps"] /= 1.5
            return record

    keys = [f"c{i}" for i in range(300)]
    frame = _verdicts(OneSlowCell(noise=0.02, seed=3), keys, rounds=6)
    assert set(frame[frame["regression"]]["model"]) == {"c123"}
    assert exit_code(frame) == 1


def test_one_wild_round_in_ten_does_not_leave_a_quiet_cell_undecided() -> None:
    """A process that lands badly (one round 40% off, nothing the probe sees) is trimmed; a plain
    paired t over the same rounds could not decide."""

    class OneWildRound(FakeMachine):
        def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
            record = super().launch(side, key, round_index)
            if side == "head" and round_index == 7:
                record["latency_p50_ms"] *= 1.4
            return record

    machine = OneWildRound(noise=0.005, seed=4)
    results = interleave(["m"], 10, machine.launch)
    frame = paired_rows(results, {"m": {**CELL, "model": "m"}}, AbOptions(rounds=10))
    p50 = frame[frame["metric"] == "p50"].iloc[0]
    assert p50["verdict"] == "no change" and exit_code(frame) == 0, p50
    base = [r["latency_p50_ms"] for r in results["m"]["base"]]
    head = [r["latency_p50_ms"] for r in results["m"]["head"]]
    plain = decide([paired_estimate(base, head, higher_is_better=False, trim=0.0)], [0.05])[0]
    assert plain.verdict == "inconclusive"


def test_trimmed_estimate_worked_by_hand() -> None:
    """Ten rounds, log ratios 0..9 (in %) with one wild round: trim two from each end, winsorize
    to [2, 7]; Yuen's se = s_w * sqrt(9) / sqrt(6 * 5), 5 degrees of freedom."""
    diffs = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 90]) / 100
    base = np.full(10, 10.0)
    estimate = paired_estimate(base, base * np.exp(diffs), higher_is_better=False)
    assert estimate is not None
    assert estimate.worse_log == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]) / 100)
    winsorized = np.array([2, 2, 2, 3, 4, 5, 6, 7, 7, 7]) / 100
    assert estimate.se == pytest.approx(winsorized.std(ddof=1) * 3 / np.sqrt(30))
    assert (estimate.df, estimate.n) == (5, 10)
    # Throughput: base over head is worse, same numbers.
    flipped = paired_estimate(base * np.exp(diffs), base, higher_is_better=True)
    assert flipped is not None and flipped.worse_log == pytest.approx(estimate.worse_log)
    # A round with no value (inf/NaN ratio) is dropped, leaving nine: one trimmed from each end.
    holed = paired_estimate(base, np.append(base[:9] * np.exp(diffs[:9]), np.nan), higher_is_better=False)
    assert holed is not None and (holed.n, holed.df) == (9, 6)


def test_trimmed_estimate_is_the_plain_paired_t_below_eight_rounds() -> None:
    base = [10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8]
    head = [10.3, 10.4, 10.0, 10.6, 14.0, 10.2, 10.1]
    trimmed = paired_estimate(base, head, higher_is_better=False)
    diff = np.log(head) - np.log(base)
    assert trimmed is not None
    assert trimmed.worse_log == pytest.approx(diff.mean())
    assert trimmed.se == pytest.approx(diff.std(ddof=1) / np.sqrt(7))
    assert trimmed.df == 6


def test_later_rounds_check_one_sample_and_do_not_judge_it() -> None:
    """Round 0 judges accuracy on the full set; later rounds (the same code) check one sample
    and record it, never failing on it: one sample of an int8 cell can exceed a limit the set
    meets. A side whose settings have no such fields runs as configured."""
    config = load_profile("gate-cpu")
    assert round_config(config, 0) is config
    later = round_config(config, 4)
    assert later.accuracy.eval_samples == 1
    assert set(later.accuracy.max_rel_l2) == set(config.accuracy.max_rel_l2)
    assert all(math.isinf(v) for v in later.accuracy.max_rel_l2.values())
    assert later.accuracy.threshold("int8") == math.inf
    assert (later.measure, later.models) == (config.measure, config.models)
    old = SimpleNamespace(models=["lstm"])  # an old side's config without accuracy settings
    assert round_config(old, 4) is old


@pytest.mark.parametrize(("mode", "gated"), [("latency", False), ("throughput", True)])
def test_throughput_gates_in_throughput_mode_only(mode: str, gated: bool) -> None:
    """In latency mode throughput is 1/mean of the calls p50 is the median of: a change only in
    the mean (stalls) is shown, advisory, and does not fail the gate."""

    class StallsOnly(FakeMachine):
        def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
            record = super().launch(side, key, round_index)
            if side == "head":
                record["throughput_sps"] /= 1.3
            return record

    results = interleave(["m"], 8, StallsOnly(noise=0.005, seed=5).launch)
    frame = paired_rows(results, {"m": {**CELL, "mode": mode}}, AbOptions(rounds=8))
    throughput = frame[frame["metric"] == "throughput"].iloc[0]
    assert throughput["verdict"] == "regression"
    assert bool(throughput["gating"]) is gated
    assert exit_code(frame) == (1 if gated else 0)


def test_gate_on_min_sees_a_slowdown_through_a_noisy_body() -> None:
    """Measured on the shared VM: host contention shifts a process's p50 by 10-40% in some
    rounds while its fastest call stays within 1%. A 10% slower head: the minimum catches it,
    p50 cannot decide; with --gate-on min, p50 is shown, advisory."""

    class NoisyBody(FakeMachine):
        def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
            record = super().launch(side, key, round_index)
            record["latency_min_ms"] = 9.0 * (1.10 if side == "head" else 1.0)
            if round_index % 3 == (0 if side == "head" else 1):
                record["latency_p50_ms"] *= 1.4
            return record

    results = interleave(["m"], 10, NoisyBody(noise=0.005, seed=6).launch)
    cells = {"m": {**CELL, "model": "m"}}
    by_min = paired_rows(results, cells, AbOptions(rounds=10, compare=CompareOptions(gate_on="min")))
    rows = by_min.set_index("metric")
    assert rows.loc["min", "verdict"] == "regression" and rows.loc["min", "gating"]
    assert not rows.loc["p50", "gating"] and exit_code(by_min) == 1
    by_p50 = paired_rows(results, cells, AbOptions(rounds=10))
    assert "min" not in set(by_p50["metric"])
    assert by_p50.set_index("metric").loc["p50", "verdict"] == "inconclusive" and exit_code(by_p50) == 3
    with pytest.raises(UserError, match="--gate-on must be one of p50, min"):
        CompareOptions(gate_on="p90")


def test_interfered_rounds_are_left_out_and_too_few_clean_rounds_are_inconclusive() -> None:
    machine = FakeMachine(noise=0.01)
    machine.disturbed = {("head", 1), ("base", 3)}
    frame = _verdicts(machine, ["m"], rounds=6)
    p50 = frame[frame["metric"] == "p50"].iloc[0]
    assert p50["n_base"] == 4 and "2 of 6 rounds interfered" in p50["note"]
    machine = FakeMachine(slowdown=3.0)
    machine.disturbed = {("head", r) for r in range(5)}  # a hog beside every head round
    frame = _verdicts(machine, ["m"], rounds=6)
    assert not frame["regression"].any() and exit_code(frame) == 3


@pytest.mark.parametrize("status", ["unavailable", "unsupported", "error", "timeout", "accuracy-fail"])
def test_head_side_breaking_a_cell_fails_and_stops_it(status: str) -> None:
    machine = FakeMachine()
    machine.status[("head", "broken")] = status
    frame = _verdicts(machine, ["fine", "broken"], rounds=4)
    row = frame[frame["model"] == "broken"].iloc[0]
    assert row["verdict"] == f"broken ({status})" and row["regression"]
    assert sum(1 for _, key, _ in machine.calls if key == "broken") == 2  # stopped after round 1
    assert exit_code(frame) == 1


def test_a_base_failing_after_ok_rounds_is_undecided_not_fixed() -> None:
    """A flaky base does not make the head a fix: the cell is not judged, and the run says so."""
    machine = FakeMachine()

    def launch(side: str, key: str, round_index: int) -> dict[str, Any]:
        record = machine.launch(side, key, round_index)
        return {"status": "timeout", "reason": "hung"} if (side, round_index) == ("base", 2) else record

    results = interleave(["m"], 4, launch)
    frame = paired_rows(results, {"m": CELL}, AbOptions(rounds=4))
    row = frame.iloc[0]
    assert row["verdict"] == "inconclusive" and row["inconclusive"] and not row["regression"]
    assert row["note"] == "the base side was ok, then timeout in round 3 (hung): not judged"
    assert exit_code(frame) == 3
    # Both sides failing in that round: still undecided, and the head's failure is in the row.
    machine = FakeMachine()

    def both(side: str, key: str, round_index: int) -> dict[str, Any]:
        record = machine.launch(side, key, round_index)
        return {"status": "error", "reason": None} if round_index == 2 else record

    frame = paired_rows(interleave(["m"], 4, both), {"m": CELL}, AbOptions(rounds=4))
    row = frame.iloc[0]
    assert row["verdict"] == "inconclusive" and row["new_status"] == "error" and exit_code(frame) == 3
    assert row["note"] == (
        "the base side was ok, then error in round 3 (no reason given); "
        "the head error too (no reason given): not judged"
    )
    # Failing from its first round the base was broken before the change: the head fixed it.
    machine = FakeMachine()
    machine.status[("base", "m")] = "error"
    frame = paired_rows(interleave(["m"], 4, machine.launch), {"m": CELL}, AbOptions(rounds=4))
    assert frame.iloc[0]["verdict"] == "fixed (was error)" and exit_code(frame) == 0


def test_a_cell_the_head_no_longer_sweeps_fails_and_nothing_compared_is_undecided() -> None:
    machine = FakeMachine()
    results = interleave(["m"], 2, machine.launch)
    gone = {**CELL, "model": "gone", "key": "gone-key"}
    frame = paired_rows(results, {"m": CELL}, AbOptions(rounds=2), missing=[gone])
    row = frame.set_index("model").loc["gone"]
    assert row["verdict"] == "broken (missing)" and row["regression"] and row["new_status"] == "missing"
    assert exit_code(frame) == 1
    # No cell on both sides: no verdict, which is not a pass.
    assert exit_code(paired_rows({}, {}, AbOptions(rounds=2))) == 3


class NoisePerCell(FakeMachine):
    """A machine on which each cell has its own round-to-round noise (log scale)."""

    def __init__(self, noise: dict[str, float], seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self.noise_of = noise

    def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
        self.noise = self.noise_of[key]
        return super().launch(side, key, round_index)

    def launches(self, key: str) -> int:
        return sum(1 for _, k, _ in self.calls if k == key)


def _sequential(
    machine: FakeMachine, keys: list[str], options: AbOptions, **kwargs: Any
) -> tuple[Rounds, Any]:
    """`run_rounds` as `ab` runs it, on the fake machine, and the verdicts at each cell's last look."""
    cells = {k: {**CELL, "model": k} for k in keys}
    run = run_rounds(keys, options, machine.launch, cells=cells, **kwargs)
    return run, paired_rows(run.results, cells, options, looks=run.looks)


def test_a_decided_cell_stops_and_the_open_one_runs_on() -> None:
    """A quiet A/A cell is decided within a few rounds and stops; a noisy one runs to the most
    rounds and stays undecided: rounds go only where they can still change the answer."""
    machine = NoisePerCell({"quiet": 0.005, "noisy": 0.3}, seed=7)
    run, frame = _sequential(machine, ["quiet", "noisy"], AbOptions(rounds=30))
    assert run.stopped == {"quiet": DECIDED, "noisy": MOST_ROUNDS}
    assert machine.launches("quiet") <= 2 * 12 < machine.launches("noisy") == 2 * 30
    rows = frame[frame["gating"]].set_index("model")
    assert rows.loc["quiet", "verdict"] == "no change" and rows.loc["noisy", "verdict"] == "inconclusive"
    assert rows.loc["quiet", "n_base"] == len(run.results["quiet"]["base"]) < 30
    assert run.looks["noisy"][-1] == (30, 1.0)  # the last look spends what is left
    assert exit_code(frame) == 3


def test_a_clear_slowdown_fails_early_and_a_drifting_a_a_passes() -> None:
    machine = FakeMachine(drift_per_tick=0.01, slowdown=1.25, noise=0.01, seed=8)
    run, frame = _sequential(machine, ["m"], AbOptions(rounds=30))
    assert run.stopped == {"m": DECIDED} and len(run.results["m"]["base"]) <= 8
    assert set(frame[frame["gating"]]["verdict"]) == {"regression"} and exit_code(frame) == 1
    run, frame = _sequential(
        FakeMachine(drift_per_tick=0.01, noise=0.01, seed=9), ["m"], AbOptions(rounds=30)
    )
    assert run.stopped == {"m": DECIDED} and exit_code(frame) == 0


def test_the_budget_ends_the_rounds_and_frees_time_for_open_cells() -> None:
    """A fake clock, one tick per worker: with a budget of 41 ticks (40.18 once the outputs'
    reserve is kept) no round starts that would not fit it. Two noisy cells share it (10 rounds
    each); when a quiet cell stops early, its rounds go to the noisy one. Cells still open get
    a last look at tau = 1."""
    machine = NoisePerCell({"a": 0.3, "b": 0.3}, seed=10)
    options = AbOptions(rounds=30, budget_s=41)
    run, _ = _sequential(machine, ["a", "b"], options, clock=lambda: machine.now, started=0)
    assert machine.now <= 41 * (1 - BUDGET_RESERVE) and run.stopped == {"a": BUDGET, "b": BUDGET}
    assert [len(run.results[k]["base"]) for k in "ab"] == [10, 10]
    assert all(run.looks[k][-1] == (10, 1.0) for k in "ab")
    machine = NoisePerCell({"quiet": 0.005, "noisy": 0.3}, seed=11)
    run, _ = _sequential(machine, ["quiet", "noisy"], options, clock=lambda: machine.now, started=0)
    assert machine.now <= 41 * (1 - BUDGET_RESERVE) and run.stopped == {"quiet": DECIDED, "noisy": BUDGET}
    assert len(run.results["noisy"]["base"]) > 10
    with pytest.raises(UserError, match="--budget must be positive"):
        AbOptions(budget_s=0)


def test_an_improvement_never_blocks_a_pass() -> None:
    """One cell twice as fast, one unchanged: both pass, and the headline says one is faster."""
    from inferbench.compare.report import headline

    class OneFaster(FakeMachine):
        def launch(self, side: str, key: str, round_index: int) -> dict[str, Any]:
            record = super().launch(side, key, round_index)
            if side == "head" and key == "fast":
                for column in ("latency_p50_ms", "latency_p99_ms", "latency_min_ms"):
                    record[column] *= 0.5
                record["throughput_sps"] /= 0.5
            return record

    _, frame = _sequential(OneFaster(noise=0.01, seed=12), ["fast", "same"], AbOptions(rounds=20))
    gating = frame[frame["gating"]].set_index("model")
    assert gating.loc["fast", "verdict"] == "improvement" and gating.loc["same", "verdict"] == "no change"
    assert exit_code(frame) == 0
    assert headline(frame) == "**PASS**: no regression (1 cell(s) faster)"


def test_ci_logs_get_the_whole_verdict_and_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal (a CI log, 80 columns) the verdict table is plain fixed-width lines: rich
    cut the verdict to `i…` and the ratio to `0.901 [0…` there. On a terminal it is a table."""
    from rich.console import Console

    from inferbench.commands.compare import print_verdict
    from inferbench.compare.report import plain_table, terminal_table

    machine = NoisePerCell({"tiny-cnn-with-a-long-name": 0.3}, seed=13)
    _, frame = _sequential(machine, ["tiny-cnn-with-a-long-name"], AbOptions(rounds=4))
    row = frame[frame["gating"]].iloc[0]
    interval = f"{row['ratio']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    code = print_verdict(frame, frame.iloc[:0], Path("compare.md"), "base -> head (ratio head/base, 95% CI)")
    err = capsys.readouterr().err
    assert code == 3
    line = next(ln for ln in err.splitlines() if ln.startswith("tiny-cnn-with-a-long-name") and " p50 " in ln)
    assert "inconclusive" in line and interval in line and "…" not in err
    lines = plain_table(frame, "title").splitlines()
    assert len({ln.index("metric") if i == 1 else None for i, ln in enumerate(lines)} - {None}) == 1
    assert len({ln.find(" p50 ") for ln in lines[2:] if " p50 " in ln}) == 1  # one column, aligned
    on_terminal = Console(force_terminal=True, width=200, record=True)
    on_terminal.print(terminal_table(frame, "title"))
    assert "┃" in on_terminal.export_text() or "│" in on_terminal.export_text()


def test_an_agent_dying_mid_run_is_an_internal_error_not_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 means "fix your input"; an agent that started and then died is the harness's
    failure (exit 4), and one that cannot start is the side's code or interpreter (exit 2)."""
    fake = tmp_path / "python"
    # Answers the set-up message, then dies on the first cell; a second one never answers.
    fake.write_text("#!/bin/sh\nread line\necho '{\"cells\": []}'\nread line\necho gone >&2\nexit 9\n")
    fake.chmod(0o755)
    agent = Agent(Side("base", "fake", str(fake)), {}, tmp_path / "agent.log")
    assert agent.info == {"cells": []}
    with pytest.raises(InternalError, match=r"the base side \(fake\): its agent died during the run: gone"):
        agent.run("k")
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho cannot import inferbench >&2\nexit 1\n")
    silent.chmod(0o755)
    with pytest.raises(UserError, match="failed to start: cannot import inferbench"):
        Agent(Side("head", "fake", str(silent)), {}, tmp_path / "silent.log")


def test_make_gate_leaves_the_gates_own_exit_code_for_ci(tmp_path: Path) -> None:
    """make exits 2 whenever a recipe fails, so CI could never tell "undecided" (3, a warning)
    from a crash (4): the recipe writes the code down. A stand-in interpreter exits 3."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (tmp_path / "pyproject.toml").write_text("")
    venv = _stand_in_venv(tmp_path, exit_with=3)
    makefile = str(PROJECT_ROOT / "Makefile")
    done = subprocess.run(
        ["make", "-f", makefile, "gate", f"VENV={venv}", "BASE=abc123"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert (tmp_path / "results" / "gate-cpu" / "exit-code").read_text().strip() == "3"
    called = (tmp_path / "args").read_text()
    expected = "-m inferbench ab --base abc123 --profile gate-cpu --rounds 30 --budget 10m"
    expected += " --gate-on auto --calibrate 4 --calibration results/calibration-cpu.json"
    expected += " --processes 3 --fork-workers auto --confidence 0.8"
    assert called.startswith(expected), called


#: A pull request's Makefile that passes its own gate.
PASSING_MAKEFILE = "gate:\n\tmkdir -p results/gate-cpu && echo 0 > results/gate-cpu/exit-code\n"


def _stand_in_venv(where: Path, exit_with: int) -> Path:
    """A virtual environment that `make` takes as set up, whose python records its arguments
    and exits with the given code: the Makefile's plumbing without a measurement."""
    venv = where / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed-cpu-dev").touch()  # set up already (not older than pyproject.toml)
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" > args\nexit {exit_with}\n')
    fake.chmod(0o755)
    return venv


def test_make_gate_from_the_base_checkout_measures_the_head_folder(tmp_path: Path) -> None:
    """CI runs the base's Makefile with HEAD_SRC at the pull request's checkout. The head's own
    Makefile, which here writes a passing exit code, is never run; the harness's code (1, a
    regression) is the one written down."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (tmp_path / "pyproject.toml").write_text("")
    venv = _stand_in_venv(tmp_path, exit_with=1)
    head = tmp_path / "head tree"  # a space: the folder is passed as one argument
    head.mkdir()
    (head / "Makefile").write_text(PASSING_MAKEFILE + "\ttouch head-ran\n")
    done = subprocess.run(
        [
            "make",
            "-f",
            str(PROJECT_ROOT / "Makefile"),
            "gate",
            f"VENV={venv}",
            "BASE=abc123",
            f"HEAD_SRC={head}",
            "HEAD_PYTHON=/opt/head-venv/bin/python",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert (tmp_path / "results" / "gate-cpu" / "exit-code").read_text().strip() == "1"
    assert not (head / "head-ran").exists() and not (head / "results").exists()
    called = (tmp_path / "args").read_text()
    assert called.startswith(
        f"-m inferbench ab --base abc123 --head {head} --head-python /opt/head-venv/bin/python "
        "--profile gate-cpu "
    ), called


def test_a_named_profile_is_read_from_the_base_tree_never_the_heads(tmp_path: Path) -> None:
    """The sweep that judges a change comes from the base's tree (or, without one, from the
    harness): `run_ab` hands this the base side, so a head's own profile is never read."""
    tree = tmp_path / "base"
    (tree / "bench" / "profiles").mkdir(parents=True)
    (tree / "bench" / "profiles" / "gate-cpu.toml").write_text("[sweep]\nbatch_sizes = [1, 2]\n")
    base = Side("base", "base", sys.executable, source=tree)
    assert profile_data("gate-cpu", base) == ({"sweep": {"batch_sizes": [1, 2]}}, "gate-cpu")
    shipped = (PROJECT_ROOT / "bench" / "profiles" / "gate-cpu.toml").read_text()
    # A base side without a tree (an installed copy) reads the harness's own profile.
    installed = Side("base", "installed", sys.executable)
    assert profile_data("gate-cpu", installed)[0] == tomllib.loads(shipped)
    # A base tree without that profile (a profile newer than the base): the harness's own.
    assert profile_data("gate-cpu", Side("base", "b", sys.executable, source=tmp_path / "none")) == (
        tomllib.loads(shipped),
        "gate-cpu",
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["ab", "--profile", "smoke"]) == 2
    assert "needs --base" in capsys.readouterr().err
    assert main(["ab", "--base", "no-such-ref-xyz", "--profile", "smoke", "--out", str(tmp_path / "x")]) == 2
    assert "neither a directory nor a git ref" in capsys.readouterr().err
    assert main(["ab", "--base", ".", "--rounds", "1"]) == 2
    assert main(["ab", "--base", ".", "--budget", "soon"]) == 2
    assert "budget must look like 15m" in capsys.readouterr().err
    assert main(["ab", "--base", ".", "--model", "nope", "--out", str(tmp_path / "y")]) == 2


def test_link_tree_maps_the_installed_layout(tmp_path: Path) -> None:
    link = link_tree(PROJECT_ROOT, tmp_path / "link")
    out = subprocess.run(
        [sys.executable, "-P", "-c", "import inferbench.backends.base as b, inferbench; print(b.__file__)"],
        env={"PYTHONPATH": str(link), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith(str(link / "inferbench" / "backends"))


AA_PROFILE = """
# A 1 ms off-CPU call (tests.fakes:SleepBackend) through the real agent, runner and workers.
# Interference is tested in test_interference; on a shared test machine it could make every
# round of this A/A inconclusive, so it is off here.
[sweep]
models = ["tests.fakes:numpy_model"]
backends = ["tests.fakes:SleepBackend"]
batch_sizes = [1]
threads = [1]

[measure]
warmup_iterations = 2
warmup_seconds = 0.0
min_iterations = 50
min_seconds = 0.1
max_seconds = 2.0
timeout_seconds = 60.0
interference_max_pct = 100.0
steal_max_pct = 100.0
"""


def _copy_tree(where: Path) -> Path:
    """A copy of this source tree whose worker marks every record it writes."""
    for folder in ("bench", "backends", "models"):
        shutil.copytree(PROJECT_ROOT / folder, where / folder, ignore=shutil.ignore_patterns("__pycache__"))
    worker = where / "bench" / "cell" / "worker.py"
    marker = '    record["timing_scope"] = backend.timing_scope\n'
    assert marker in worker.read_text()
    worker.write_text(worker.read_text().replace(marker, marker + '    record["side_marker"] = "copy"\n'))
    return where


@pytest.mark.slow
def test_a_a_exits_0_and_each_side_runs_its_own_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base is a copy of this tree whose worker marks its records; the head is the working
    tree. Same timing on both sides: exit 0."""
    base = _copy_tree(tmp_path / "base-tree")
    profile = tmp_path / "aa.toml"
    profile.write_text(AA_PROFILE)
    out = tmp_path / "ab"
    argv = ["ab", "--base", str(base), "--profile", str(profile), "-k", "3", "--max-regression", "50%"]
    runner = tmp_path / "runner-calibration.json"
    options = ["--calibrate", "2", "--calibration", str(runner), "--gate-on", "auto"]
    code = main([*argv, *options, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    # Two A/A rounds of the base side first: the cell's noise, the statistic it gates on, the plan.
    calibration = json.loads((out / "calibration.json").read_text())
    ((key, noise),) = calibration["cells"].items()
    assert noise["rounds"] <= 2 and set(noise["sigma_pct"]) <= {"min", "p50"}
    # The runner's file, for the next run, also pools the A/B rounds' spread (3, unless disturbed).
    clean = len(clean_pairs(json.loads((out / "ab.json").read_text())["rounds_per_cell"][key]))
    refreshed = json.loads(runner.read_text())["cells"][key]
    assert refreshed["rounds"] == noise["rounds"] + (clean if clean >= 2 else 0)
    chosen = json.loads((out / "ab.json").read_text())["gate_on_by_cell"]
    expected = CellNoise(noise["sigma_pct"], noise["spread_pct"], noise["rounds"], noise["round_s"]).steadiest
    assert chosen == {key: expected}  # the calibration's own rule (min unless p50 is clearly steadier)
    base_cell = json.loads(next((out / "base" / "cells").glob("*.json")).read_text())
    head_cell = json.loads(next((out / "head" / "cells").glob("*.json")).read_text())
    assert base_cell["side_marker"] == "copy"
    assert "side_marker" not in head_cell
    assert base_cell["repeats"] == 3  # the rounds, merged
    md = (out / "compare.md").read_text()
    assert "**PASS**" in md and "3 rounds" in md and "What this runner" in md
    assert "per cell, the statistic its calibration found steadier" in md
    assert f"The calibration {runner}" in md
    page = (out / "compare.html").read_text()  # the same verdicts, both sides named
    assert "<b>PASS</b>" in page and "head (working tree)" in page and 'class="chart-spec"' in page


def _hostile_head(where: Path) -> Path:
    """A copy of this tree as a pull request that tries to pass its own gate: its gate profile
    trimmed to one short cell at batch 64, its verdict code always passing, its Makefile writing
    exit code 0, and its worker breaking every cell (so the harness has something to catch)."""
    for folder in ("bench", "backends", "models"):
        shutil.copytree(PROJECT_ROOT / folder, where / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (where / "bench" / "profiles" / "smoke.toml").write_text(
        AA_PROFILE.replace("batch_sizes = [1]", "batch_sizes = [64]").replace(
            "min_iterations = 50", "min_iterations = 1"
        )
    )
    with (where / "bench" / "compare" / "core.py").open("a") as compare:
        compare.write("\n\ndef exit_code(frame, *args, **kwargs):  # noqa\n    return 0\n")
    (where / "Makefile").write_text(PASSING_MAKEFILE)
    worker = where / "bench" / "cell" / "worker.py"
    marker = '    """Prepare, check and time one cell; the returned record is JSON-serialisable."""\n'
    assert marker in worker.read_text()
    broken = marker + '    raise RuntimeError("broken by the head")\n'
    worker.write_text(worker.read_text().replace(marker, broken))
    return where


@pytest.mark.slow
def test_a_head_cannot_pass_its_own_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gate as CI runs it: this harness, the base a source tree (its gate profile: one cell,
    50 calls at least), the head a folder. The head's profile, verdict code and Makefile are
    not used: the base's sweep is measured on both sides, the head's broken cell fails the
    gate (exit 1), and both sides ran with the base's measurement settings."""
    base = _copy_tree(tmp_path / "base-tree")
    (base / "bench" / "profiles" / "smoke.toml").write_text(AA_PROFILE)
    head = _hostile_head(tmp_path / "head-tree")
    out = tmp_path / "gate"
    fakes = ["-m", "tests.fakes:numpy_model", "-b", "tests.fakes:SleepBackend"]  # the harness's check
    argv = ["ab", "--base", str(base), "--head", str(head), "--profile", "smoke", *fakes, "-k", "2"]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    rounds = json.loads((out / "ab.json").read_text())["rounds_per_cell"]
    assert len(rounds) == 1  # the base's one cell...
    (by_side,) = rounds.values()
    assert [r["status"] for r in by_side["head"]] == ["error"]  # ...broken by the head in round 1
    for side in ("base", "head"):
        cells = [json.loads(p.read_text()) for p in (out / side / "cells").glob("*.json")]
        assert [c["batch_size"] for c in cells] == [1], side  # not the head's batch 64
        config = json.loads((out / side / "config.json").read_text())
        assert config["measure"]["min_iterations"] == 50, side  # not the head's 1
    assert "broken (error)" in (out / "compare.md").read_text()
    assert not (out / "exit-code").exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.engine
def test_real_engine_a_a_on_the_smoke_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One real cell of the smoke profile, both sides this tree, gated on each process's fastest
    call (as `make gate` is): never a regression; passed, or undecided where the rounds
    disagree (disturbed rounds are left out of the pairs, and process-to-process modes of a
    small VM can leave three rounds short of a decision)."""
    out = tmp_path / "ab"
    # The smoke profile, without re-measuring disturbed windows: on a busy machine that alone
    # would triple this test's time (the flag itself is tested in test_interference).
    smoke = (PROJECT_ROOT / "bench" / "profiles" / "smoke.toml").read_text()
    profile = tmp_path / "smoke.toml"
    if "interference_retries" not in smoke:
        smoke = smoke.replace("[measure]\n", "[measure]\ninterference_retries = 0\n")
    profile.write_text(smoke)
    argv = ["ab", "--base", str(PROJECT_ROOT), "--profile", str(profile), "-m", "mlp", "-b", "torch"]
    code = main(
        [
            *argv,
            "--batch-size",
            "1",
            "--mode",
            "latency",
            "-k",
            "3",
            "--max-regression",
            "50%",
            "--gate-on",
            "min",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    rounds = json.loads((out / "ab.json").read_text())["rounds_per_cell"]["mlp__torch__fp32__b1__t1"]
    assert [r["status"] for r in rounds["base"] + rounds["head"]] == ["ok"] * 6
    # Never a false alarm. Undecided (3) is an honest answer at K=3: on the 2-vCPU Zen 3 VM
    # (2026-12-01) a process's fastest call landed at 31 or at 46 us, at random, with nothing
    # flagged by the interference probe, so one odd round of three leaves the pair open
    # (issue 30 works on deciding with fewer such rounds).
    assert code in (0, 3), (code, err, rounds)
    assert "REGRESSION" not in err
    # Round 0 made each side's full accuracy check; later rounds, the same code, check one sample.
    assert [r["eval_samples"] for r in rounds["head"]] == [64, 1, 1]
    assert all(r["interference_pct"] is not None for r in rounds["head"])
