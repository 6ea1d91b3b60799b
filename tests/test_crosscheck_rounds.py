"""The crosscheck's rounds with fake measurements: the alternating order, the paired ratio and
its t interval over rounds, the target, and a cell's row (no benchmark_app or ORT process)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from inferbench.config import Cell
from inferbench.tools import crosscheck
from inferbench.tools.paired_rounds import (
    METHOD,
    OURS,
    THEIRS,
    Measurement,
    interleave,
    paired_ratio,
    side_order,
)

T_975_2DF = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom


def test_sides_alternate_as_abs_rounds_do() -> None:
    calls: list[tuple[str, int]] = []

    def side(name: str) -> Any:
        def measure(k: int) -> Measurement:
            calls.append((name, k))
            return {"p50_ms": 1.0}

        return measure

    found = interleave(4, {OURS: side(OURS), THEIRS: side(THEIRS)})
    assert calls == [
        (OURS, 0),
        (THEIRS, 0),
        (THEIRS, 1),
        (OURS, 1),
        (OURS, 2),
        (THEIRS, 2),
        (THEIRS, 3),
        (OURS, 3),
    ]
    assert [len(found[s]) for s in (OURS, THEIRS)] == [4, 4]
    assert side_order(0) == (OURS, THEIRS) and side_order(7) == (THEIRS, OURS)
    with pytest.raises(ValueError, match="at least 1"):
        interleave(0, {OURS: side(OURS), THEIRS: side(THEIRS)})


def test_paired_ratio_is_the_geometric_mean_with_a_t_interval_over_rounds() -> None:
    # Round ratios e^0.01, e^-0.01, e^0.03: log mean 0.01, log sd 0.02.
    theirs = [10.0, 20.0, 5.0]
    ours = [t * math.exp(d) for t, d in zip(theirs, (0.01, -0.01, 0.03), strict=True)]
    paired = paired_ratio(ours, theirs)
    half = T_975_2DF * 0.02 / math.sqrt(3)
    assert paired.rounds == 3
    assert paired.ratio == pytest.approx(math.exp(0.01))
    assert paired.low == pytest.approx(math.exp(0.01 - half))
    assert paired.high == pytest.approx(math.exp(0.01 + half))
    assert paired.half_width_pct == pytest.approx(100 * (math.exp(half) - 1))
    # The pairing matters: the sides' own spread (5 to 20 ms) is not in the interval.
    assert paired.half_width_pct < 6


def test_a_round_without_both_numbers_is_left_out_and_one_round_has_no_interval() -> None:
    paired = paired_ratio([1.1, math.nan, 2.2], [1.0, 1.0, 2.0])
    assert paired.rounds == 2 and paired.ratio == pytest.approx(1.1)
    assert paired.low == pytest.approx(1.1) and paired.high == pytest.approx(1.1)  # no spread
    single = paired_ratio([1.1], [1.0])
    assert single.rounds == 1 and math.isnan(single.low) and math.isnan(single.half_width_pct)
    assert not single.inside(50.0)  # one pair cannot meet any target
    assert paired_ratio([math.nan], [1.0]).rounds == 0
    with pytest.raises(ValueError, match="rounds of ours"):
        paired_ratio([1.0], [1.0, 1.0])


def test_target_is_the_whole_interval_inside_one_plus_minus_target() -> None:
    close = paired_ratio([1.0, 1.01, 0.995, 1.005], [1.0, 1.0, 1.0, 1.0])
    assert close.inside(2.0)
    off = paired_ratio([1.04, 1.05, 1.045], [1.0, 1.0, 1.0])  # precise, but 4-5% apart
    assert off.half_width_pct < 2 and not off.inside(2.0)


def _args(tmp_path: Path, rounds: int) -> argparse.Namespace:
    args = crosscheck.build_parser().parse_args(["--rounds", str(rounds), "--out", str(tmp_path)])
    args.threads = 2
    return args


def test_a_cell_alternates_fresh_processes_and_reports_its_paired_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = Cell("mlp", "onnxruntime", "fp32", 1, 2)
    events: list[str] = []
    ours_p50 = iter([2.00, 2.02, 1.98, 2.01])
    tool_p50 = iter([2.00, 2.00, 2.00, 2.00])

    def fake_sweep(config: Any, run_dir: Path, **kw: Any) -> list[dict[str, Any]]:
        events.append(f"ours {run_dir.name}")
        p50 = next(ours_p50)
        record = {"cell_key": cell.key, "status": "ok", "latency_p50_ms": p50, "throughput_sps": 1e3 / p50}
        return [{**record, "model": "mlp", "artifact_path": "m.onnx", "batch_size": 1, "threads": 2}]

    def fake_tool(record: dict[str, Any], args: argparse.Namespace) -> Any:
        assert record["artifact_path"] == "m.onnx"  # set up from our round 0's record

        def one_round(k: int) -> Measurement:
            events.append(f"tool {k}")
            p50 = next(tool_p50)
            return {"p50_ms": p50, "sps": 1e3 / p50}

        return one_round

    monkeypatch.setattr(crosscheck, "run_sweep", fake_sweep)
    monkeypatch.setattr(crosscheck, "ort_loop_round", fake_tool)
    row = crosscheck._crosscheck_cell(cell, crosscheck._sweep(_args(tmp_path, 4)), _args(tmp_path, 4))
    pairs = [["ours round-0", "tool 0"], ["tool 1", "ours round-1"]]
    pairs += [["ours round-2", "tool 2"], ["tool 3", "ours round-3"]]
    assert events == [event for pair in pairs for event in pair]
    assert row["tool"] == "ort io-binding loop" and row["rounds"] == 4 and row["interval"] == METHOD
    assert row["p50_ratio"] == pytest.approx(math.prod([1.0, 1.01, 0.99, 1.005]) ** 0.25)
    assert row["p50_ratio_low"] < row["p50_ratio"] < row["p50_ratio_high"]
    assert row["sps_ratio"] == pytest.approx(1 / row["p50_ratio"])
    assert row["target_met"] is True and row["target_pct"] == 2.0
    assert row["ours_p50_ms"] == pytest.approx(2.005)


def test_cells_without_a_tool_or_with_a_failed_side_cost_only_their_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _args(tmp_path, 2)
    row = crosscheck._crosscheck_cell(Cell("mlp", "torch", "fp32", 1, 2), crosscheck._sweep(args), args)
    assert row["tool"] == "-" and "no reference tool" in row["note"]

    def failing(config: Any, run_dir: Path, **kw: Any) -> list[dict[str, Any]]:
        cell = Cell("mlp", "openvino", "fp32", 1, 2)
        return [{"cell_key": cell.key, "status": "unsupported", "reason": "no bf16"}]

    monkeypatch.setattr(crosscheck, "run_sweep", failing)
    row = crosscheck._crosscheck_cell(Cell("mlp", "openvino", "fp32", 1, 2), crosscheck._sweep(args), args)
    assert row["tool"] == "-" and row["note"] == "unsupported: no bf16"


def test_throughput_cells_are_judged_on_samples_per_second() -> None:
    rounds = {
        OURS: [{"p50_ms": math.nan, "sps": s} for s in (100.0, 100.5, 99.5)],
        THEIRS: [{"p50_ms": math.nan, "sps": 100.0, "fps_printed": 12.5} for _ in range(3)],
    }
    row = crosscheck.paired_row(rounds, "throughput", 2.0)
    assert math.isnan(row["p50_ratio"]) and row["sps_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert row["target_met"] is True and row["tool_fps_printed"] == 12.5
    assert "met on 1 of 1" in crosscheck.target_line(pd.DataFrame([row]), 2.0)


def test_bad_rounds_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert crosscheck.main(["--rounds", "0", "--out", str(tmp_path)]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err
