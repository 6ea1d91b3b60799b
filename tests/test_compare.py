"""Comparison statistics on synthetic samples, output formats, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from inferbench.cli import main
from inferbench.compare.core import CompareOptions, compare_records
from inferbench.compare.runs import compare_runs
from inferbench.errors import UserError
from inferbench.store.runfolder import SCHEMA_VERSION, save_cell, write_csv

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


@pytest.mark.slow
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
        assert (p50["verdict"] == "regression").all()
        assert (p50["ci_low"] > 1.05).all()  # the interval excludes the threshold


def test_three_percent_slowdown_passes_a_five_percent_threshold() -> None:
    for seed in range(10):
        base, new = _sweep(np.random.default_rng(200 + seed), cells=3, shift=1.03, cv=0.005)
        frame, _ = compare_records(base, new, FAST)
        assert not frame["regression"].any()
        # The change is real, but the interval lies within the allowed budget.
        p50 = frame[frame["metric"] == "p50"]
        assert (p50["verdict"] == "no change").all()
        assert (p50["ci_low"] > 1.0).all()


def test_per_metric_threshold_override() -> None:
    base, new = _sweep(np.random.default_rng(5), cells=2, shift=1.03, cv=0.005)
    options = CompareOptions(n_resamples=1000, thresholds={"p50": 0.01})
    frame, _ = compare_records(base, new, options)
    assert set(frame[frame["regression"]]["metric"]) == {"p50"}


def test_speedup_is_faster_not_a_regression() -> None:
    base, new = _sweep(np.random.default_rng(7), cells=2, shift=0.8)
    frame, _ = compare_records(base, new, FAST)
    assert not frame["regression"].any()
    assert set(frame["verdict"]) == {"improvement"}
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
    gone = frame[frame["model"] == "gone"].iloc[0]  # missing from NEW: a failure, by cell
    assert gone["verdict"] == "broken (missing)" and gone["regression"]
    broken = frame[frame["model"] == "b"].iloc[0]
    assert broken["metric"] == "status" and broken["regression"] and broken["verdict"] == "broken (error)"
    assert not frame[frame["model"] == "a"]["regression"].any()


def test_options_validation() -> None:
    with pytest.raises(
        UserError,
        match="metric must be one of p50, p99, throughput, min, instructions, max_qps_at_slo; got 'p95'",
    ):
        CompareOptions(thresholds={"p95": 0.1})
    for bad in (1.5, 0.0):
        with pytest.raises(UserError, match="between 0% and 100%"):
            CompareOptions(max_regression=bad)


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
    assert counted["regression"] and counted["verdict"] == "regression"
    assert not rows.loc[("latency", "throughput")]["regression"]


def test_one_cell_fifty_percent_slower_among_300_is_flagged_with_one_process_per_side() -> None:
    """The old bootstrap p-value could not go below 1/(resamples+1); after correcting over
    900 tests a lone regression passed. A normal test on the bootstrap's standard error has no
    such floor."""
    rng = np.random.default_rng(11)
    base, new = _sweep(rng, cells=300, cv=0.02)
    new[137] = _record("m137", _samples(rng, cv=0.02) * 1.5)
    frame, _ = compare_records(base, new, CompareOptions(n_resamples=300))
    flagged = frame[frame["regression"]]
    assert set(flagged["model"]) == {"m137"}
    assert set(flagged["metric"]) == {"p50"}  # p99, and throughput in latency mode, are advisory
    slower = frame[frame["model"] == "m137"].set_index("metric")
    assert slower.loc["throughput", "verdict"] == "regression" and not slower.loc["throughput", "gating"]
    assert (frame[frame["model"] != "m137"]["verdict"] == "no change").mean() > 0.95


@pytest.mark.parametrize("status", ["unavailable", "unsupported", "error", "timeout", "accuracy-fail"])
def test_ok_to_any_other_status_is_a_failure_listed_by_cell(status: str) -> None:
    rng = np.random.default_rng(4)
    base = [_record("a", _samples(rng)), _record("b", _samples(rng))]
    new = [_record("a", _samples(rng)), _record("b", _samples(rng), status=status)]
    frame, _ = compare_records(base, new, FAST)
    from inferbench.compare.core import exit_code
    from inferbench.compare.report import compare_markdown, failing_cells

    assert failing_cells(frame) == ["b/torch/fp32/b1/latency"]
    assert exit_code(frame) == 1
    md = compare_markdown(frame, pd.DataFrame(), FAST, "base", "new")
    assert "### Broken or missing cells" in md and f"broken ({status})" in md


def test_nothing_timed_on_either_side_is_undecided_not_a_pass() -> None:
    """Every engine missing on this runner: no cell was measured, so there is no verdict."""
    base = [_record("a", np.ones(3), status="unavailable"), _record("b", np.ones(3), status="unsupported")]
    new = [_record("a", np.ones(3), status="unavailable"), _record("b", np.ones(3), status="unsupported")]
    frame, _ = compare_records(base, new, FAST)
    from inferbench.compare.core import exit_code
    from inferbench.compare.report import headline

    assert set(frame["verdict"]) == {"still unavailable", "still unsupported"}
    assert exit_code(frame) == 3
    assert headline(frame) == "**UNDECIDED**: no cell was timed on both sides, and none was fixed"


def test_mde_inconclusive_and_no_change() -> None:
    """A noisy cell gets a wide interval and a large MDE: inconclusive, never "no change"."""
    rng = np.random.default_rng(8)
    quiet_b, quiet_n = _samples(rng, cv=0.005), _samples(rng, cv=0.005)
    noisy_b, noisy_n = _samples(rng, n=30, cv=0.3), _samples(rng, n=30, cv=0.3)
    base = [_record("quiet", quiet_b), _record("noisy", noisy_b)]
    new = [_record("quiet", quiet_n), _record("noisy", noisy_n)]
    frame, _ = compare_records(base, new, FAST)
    p50 = frame[frame["metric"] == "p50"].set_index("model")
    assert p50.loc["quiet", "verdict"] == "no change"
    assert p50.loc["noisy", "verdict"] == "inconclusive"
    assert p50.loc["quiet", "mde_pct"] < 6 < p50.loc["noisy", "mde_pct"]
    from inferbench.compare.core import exit_code

    assert exit_code(frame) == 3


def test_interfered_cell_is_inconclusive_not_a_change() -> None:
    rng = np.random.default_rng(2)
    base = [_record("m", _samples(rng))]
    disturbed = {**_record("m", _samples(rng) * 3), "interfered": True, "interference_pct": 60.0}
    frame, _ = compare_records(base, [disturbed], FAST)
    assert not frame["regression"].any()
    assert set(frame["verdict"]) == {"inconclusive"}
    assert set(frame["note"]) == {"interfered (new)"}


def _env(
    model: str = "Intel Xeon", ort: str = "1.32.0", omp: str | None = None, cpus: int = 2
) -> dict[str, Any]:
    return {
        "cpu": {
            "model": model,
            "isa": {"amx_bf16": model == "Intel Xeon", "avx2": True},
            "logical_cpus": 8,
            "affinity": list(range(cpus)),  # what the run could use: a 2-CPU container on 8
        },
        "packages": {"onnxruntime": ort, "numpy": "2"},
        "threads": {"inter_op": 1, "env": {"OMP_NUM_THREADS": omp}},
    }


def test_runs_from_different_machines_or_settings_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    base = _write_run(tmp_path / "base", [_record("m", _samples(rng))])
    new = _write_run(tmp_path / "new", [_record("m", _samples(rng))])
    cases = [
        (_env(model="AMD EPYC"), "CPU model 'AMD EPYC' vs 'Intel Xeon'; ISA amx_bf16 only in new"),
        (_env(ort="1.31.0"), "onnxruntime '1.31.0' vs '1.32.0'"),
        (_env(omp="4"), "OMP_NUM_THREADS '4' vs None"),
        (_env(cpus=4), "CPUs 4 vs 2"),  # threads = 0 means all of them
    ]
    (new / "env.json").write_text(json.dumps(_env()))
    for base_env, named in cases:
        (base / "env.json").write_text(json.dumps(base_env))
        assert main(["compare", str(base), str(new)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err, err
    # Measurement settings too; --allow-mismatch compares anyway and says so in compare.md.
    (base / "env.json").write_text(json.dumps(_env()))
    (base / "config.json").write_text(json.dumps({"measure": {"min_seconds": 1.0, "repeats": 3}}))
    (new / "config.json").write_text(json.dumps({"measure": {"min_seconds": 2.0, "repeats": 1}}))
    assert main(["compare", str(base), str(new)]) == 2
    assert "measure.min_seconds 1.0 vs 2.0" in capsys.readouterr().err
    assert main(["compare", str(base), str(new), "--allow-mismatch"]) == 0
    md = (new / "compare.md").read_text()
    assert "Compared despite a mismatch" in md and "One process per side" in md
