"""Comparison statistics on synthetic samples, output formats, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.cli import main
from inferbench.compare import CompareOptions, compare_records, compare_runs
from inferbench.errors import UserError
from inferbench.storage import SCHEMA_VERSION, save_cell, write_csv

GOLDEN = Path(__file__).parent / "golden"
FAST = CompareOptions(n_resamples=1000)


def _record(
    model: str, latencies_ms: np.ndarray, backend: str = "torch", status: str = "ok", batch: int = 1
) -> dict[str, Any]:
    ns = [int(x) for x in latencies_ms * 1e6]
    ms = np.asarray(ns) / 1e6
    return {
        "model": model,
        "backend": backend,
        "precision": "fp32",
        "batch_size": batch,
        "threads": 1,
        "status": status,
        "reason": "" if status == "ok" else "boom",
        "latencies_ns": ns if status == "ok" else None,
        "latency_p50_ms": float(np.median(ms)),
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "throughput_sps": float(batch / ms.mean() * 1e3),
        "iterations": len(ns),
        "cell_key": f"{model}__{backend}__fp32__b{batch}__t1",
        "run_id": "x",
        "schema_version": SCHEMA_VERSION,
    }


def _samples(rng: np.random.Generator, n: int = 200, scale: float = 10.0, cv: float = 0.02) -> np.ndarray:
    return scale * rng.lognormal(0.0, cv, n)


def _sweep(
    rng: np.random.Generator, cells: int, shift: float = 1.0, cv: float = 0.02
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    base = [_record(f"m{i}", _samples(rng, cv=cv)) for i in range(cells)]
    new = [_record(f"m{i}", _samples(rng, cv=cv) * shift) for i in range(cells)]
    return base, new


def test_a_a_never_fails_over_many_seeds() -> None:
    false_alarms = 0
    for seed in range(25):
        base, new = _sweep(np.random.default_rng(seed), cells=20)
        frame, _ = compare_records(base, new, CompareOptions(n_resamples=1000, seed=seed))
        false_alarms += int(frame["regression"].any())
    assert false_alarms == 0


def test_ten_percent_slowdown_in_low_noise_always_fails() -> None:
    for seed in range(10):
        base, new = _sweep(np.random.default_rng(100 + seed), cells=3, shift=1.10)
        frame, _ = compare_records(base, new, FAST)
        p50 = frame[frame["metric"] == "p50"]
        assert p50["regression"].all(), p50
        assert (p50["change"] == "slower").all()
        assert (p50["ci_low"] > 1.05).all()  # the interval excludes the threshold


def test_three_percent_slowdown_passes_a_five_percent_threshold() -> None:
    for seed in range(10):
        base, new = _sweep(np.random.default_rng(200 + seed), cells=3, shift=1.03, cv=0.005)
        frame, _ = compare_records(base, new, FAST)
        assert not frame["regression"].any()
        # The change is real and detected, it is just within the allowed budget.
        assert (frame[frame["metric"] == "p50"]["change"] == "slower").all()


def test_per_metric_threshold_override() -> None:
    base, new = _sweep(np.random.default_rng(5), cells=2, shift=1.03, cv=0.005)
    options = CompareOptions(n_resamples=1000, thresholds={"p50": 0.01})
    frame, _ = compare_records(base, new, options)
    assert set(frame[frame["regression"]]["metric"]) == {"p50"}


def test_speedup_is_faster_not_a_regression() -> None:
    base, new = _sweep(np.random.default_rng(7), cells=2, shift=0.8)
    frame, _ = compare_records(base, new, FAST)
    assert not frame["regression"].any()
    assert set(frame["change"]) == {"faster"}
    thr = frame[frame["metric"] == "throughput"]
    assert (thr["ratio"] > 1.2).all()  # throughput ratio NEW/BASE rises when latency falls


def test_unmatched_cells_are_listed_and_broken_cells_regress() -> None:
    rng = np.random.default_rng(1)
    base = [
        _record("a", _samples(rng)),
        _record("b", _samples(rng)),
        _record("gone", _samples(rng)),
    ]
    new = [
        _record("a", _samples(rng)),
        _record("b", _samples(rng), status="error"),
        _record("added", _samples(rng)),
    ]
    frame, unmatched = compare_records(base, new, FAST)
    assert sorted(zip(unmatched["model"], unmatched["only_in"], strict=True)) == [
        ("added", "new"),
        ("gone", "base"),
    ]
    broken = frame[frame["model"] == "b"].iloc[0]
    assert broken["metric"] == "status" and broken["regression"] and broken["change"] == "broke (error)"
    assert not frame[frame["model"] == "a"]["regression"].any()


def test_options_validation() -> None:
    with pytest.raises(UserError, match="metric must be one of p50, p99, throughput; got 'p95'"):
        CompareOptions(thresholds={"p95": 0.1})
    with pytest.raises(UserError, match="between 0% and 100%"):
        CompareOptions(max_regression=1.5)


def _write_run(path: Path, records: list[dict[str, Any]]) -> Path:
    for r in records:
        save_cell(path, {**r, "run_id": path.name})
    write_csv(path, records)
    (path / "env.json").write_text(json.dumps({"cpu": {"model": "test"}}))
    return path


def test_compare_cli_exit_codes_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    base_records = [_record("m", _samples(rng)), _record("n", _samples(rng))]
    base = _write_run(tmp_path / "base", base_records)
    same = _write_run(tmp_path / "same", [_record("m", _samples(rng)), _record("n", _samples(rng))])
    slow = _write_run(tmp_path / "slow", [_record("m", _samples(rng) * 1.2), _record("n", _samples(rng))])
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(slow / "results.csv")]) == 1
    err = capsys.readouterr().err
    assert "REGRESSION in 1 cell(s): m/torch/fp32/b1" in err
    md = (slow / "compare.md").read_text()
    assert "**FAIL**" in md and "### Regressions" in md
    assert (slow / "compare.csv").is_file()
    assert main(["compare", str(base), str(tmp_path / "nope")]) == 2
    assert main(["compare", str(base), str(slow), "--max-regression", "lots"]) == 2
    assert main(["compare", str(base), str(slow), "--max-regression", "25%"]) == 0


def test_golden_compare_markdown_and_csv(tmp_path: Path) -> None:
    """Pin the output formats: deterministic inputs and seed give byte-identical files."""
    base = [_record("m", np.linspace(10, 11, 50)), _record("n", np.linspace(5, 5.5, 50))]
    new = [_record("m", np.linspace(12, 13.2, 50)), _record("n", np.linspace(5, 5.5, 50))]
    _write_run(tmp_path / "base", base)
    _write_run(tmp_path / "new", new)
    compare_runs(tmp_path / "base", tmp_path / "new", FAST)
    for name in ("compare.md", "compare.csv"):
        produced = (tmp_path / "new" / name).read_text()
        golden = GOLDEN / name
        if os.environ.get("INFERBENCH_UPDATE_GOLDEN"):  # regenerate deliberately, then review
            golden.write_text(produced)
        assert produced == golden.read_text(), name


def _multi(model: str, processes: list[np.ndarray]) -> dict[str, Any]:
    record = _record(model, np.concatenate(processes))
    record["process_latencies_ns"] = [[int(x * 1e6) for x in p] for p in processes]
    return record


def test_process_level_noise_is_not_a_regression() -> None:
    """Each process has its own level (a shared machine): pooled samples would call a 6% shift
    between processes significant; resampling processes does not."""
    for seed in range(10):
        rng = np.random.default_rng(300 + seed)

        def run(rng: np.random.Generator = rng) -> list[np.ndarray]:
            return [_samples(rng, n=300, cv=0.01) * rng.normal(1.0, 0.06) for _ in range(5)]

        frame, _ = compare_records([_multi("m", run())], [_multi("m", run())], FAST)
        assert set(frame["unit"]) == {"process"}
        assert not frame["regression"].any(), frame


def test_process_level_comparison_still_catches_a_clear_slowdown() -> None:
    rng = np.random.default_rng(9)
    base = [_multi("m", [_samples(rng, cv=0.01) * rng.normal(1.0, 0.02) for _ in range(5)])]
    new = [_multi("m", [_samples(rng, cv=0.01) * 1.3 * rng.normal(1.0, 0.02) for _ in range(5)])]
    frame, _ = compare_records(base, new, FAST)
    assert frame[frame["metric"] == "p50"]["regression"].all()


def _throughput_record(model: str, rates: np.ndarray) -> dict[str, Any]:
    """A throughput-mode row: request latencies plus the run's per-slice counted rates."""
    rng = np.random.default_rng(7)
    record = _record(model, _samples(rng))
    record.update(
        {
            "mode": "throughput",
            "throughput_sps": float(rates.mean()),
            "throughput_slices_sps": [float(r) for r in rates],
            "cell_key": record["cell_key"] + "__throughput",
        }
    )
    return record


def test_throughput_mode_compares_counted_rates_beside_the_latency_row() -> None:
    rng = np.random.default_rng(3)
    base = [_record("m", _samples(rng)), _throughput_record("m", rng.normal(1000, 10, 20))]
    new = [_record("m", _samples(rng)), _throughput_record("m", rng.normal(800, 10, 20))]
    frame, unmatched = compare_records(base, new, FAST)
    assert unmatched.empty
    rows = frame.set_index(["mode", "metric"])
    assert set(rows.index.get_level_values("mode")) == {"latency", "throughput"}
    counted = rows.loc[("throughput", "throughput")]
    assert counted["ratio"] == pytest.approx(0.8, abs=0.02)  # from the rates, not the latencies
    assert counted["regression"] and counted["change"] == "slower"
    assert not rows.loc[("latency", "throughput")]["regression"]
