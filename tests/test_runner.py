"""The runner with fake backends: isolation, statuses, resume, and the CSV schema."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from inferbench.config import MeasureConfig
from inferbench.machine.peak import peak_cache_path
from inferbench.store.runfolder import COLUMNS, NUMERIC, SCHEMA_VERSION, load_cells, read_csv
from inferbench.sweep.runner import SweepEvents, run_sweep
from tests.conftest import FAST_MEASURE, fake_sweep

pytestmark = pytest.mark.slow
FAKE = "tests.fakes:FakeBackend"
SLEEP = "tests.fakes:SleepBackend"


def _by_backend(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {name: group for name, group in frame.groupby("backend")}


def test_sweep_records_every_outcome_and_goes_on(run_dir: Path, cache_dir: Path) -> None:
    backends = [
        "tests.fakes:CrashBackend",
        "tests.fakes:RaiseBackend",
        FAKE,
        "tests.fakes:RefuseBackend",
        "tests.fakes:MissingEngineBackend",
    ]
    config = fake_sweep(backends, precisions=("fp32", "int8"), batch_sizes=(1,))
    run_sweep(config, run_dir, cache_dir=cache_dir)
    frame = read_csv(run_dir)
    assert len(frame) == len(backends) * 2  # nothing dropped
    groups = _by_backend(frame)

    crash = groups["tests.fakes:CrashBackend"].set_index("precision")
    assert crash.loc["fp32", "status"] == "error"
    assert "SIGSEGV" in crash.loc["fp32", "reason"]
    raised = groups["tests.fakes:RaiseBackend"].set_index("precision")
    assert raised.loc["fp32", "status"] == "error"
    assert raised.loc["fp32", "reason"] == "RuntimeError: engine exploded"

    ok = groups[FAKE].set_index("precision")
    assert ok.loc["fp32", "status"] == "ok"
    assert ok.loc["fp32", "iterations"] >= FAST_MEASURE.min_iterations
    assert ok.loc["fp32", "latency_p50_ms"] > 0
    # int8 is not among FakeBackend's precisions: a row with the reason, decided up front.
    assert ok.loc["int8", "status"] == "unsupported"
    assert "does not implement int8" in ok.loc["int8", "reason"]

    refused = groups["tests.fakes:RefuseBackend"].set_index("precision")
    assert refused.loc["fp32", "status"] == "unsupported"
    assert "no kernels" in refused.loc["fp32", "reason"]

    missing = groups["tests.fakes:MissingEngineBackend"]
    assert set(missing["status"]) == {"unavailable"}
    assert "pip install 'inferbench[no-such-engine]'" in missing["reason"].iloc[0]


def test_hanging_cell_times_out_and_sweep_continues(run_dir: Path, cache_dir: Path) -> None:
    measure = MeasureConfig(**{**FAST_MEASURE.__dict__, "timeout_seconds": 3.0})
    config = fake_sweep(["tests.fakes:HangBackend", FAKE], batch_sizes=(1,), measure=measure)
    records = run_sweep(config, run_dir, cache_dir=cache_dir)
    statuses = {r["backend"]: r["status"] for r in records}
    assert statuses == {"tests.fakes:HangBackend": "timeout", FAKE: "ok"}
    hang = next(r for r in records if r["status"] == "timeout")
    assert "no result after 3 s" in hang["reason"]


def test_csv_schema_and_numeric_types(run_dir: Path, cache_dir: Path) -> None:
    run_sweep(fake_sweep([FAKE]), run_dir, cache_dir=cache_dir)
    frame = read_csv(run_dir)
    assert tuple(frame.columns) == COLUMNS
    golden = Path(__file__).parent / "golden" / "results_header.csv"
    assert (run_dir / "results.csv").read_text().splitlines()[0] == golden.read_text().strip()
    for col in (
        "batch_size",
        "threads",
        "latency_p50_ms",
        "latency_p99_ms",
        "throughput_sps",
        "iterations",
        "peak_rss_mb",
        "prepare_s",
        "first_inference_ms",
    ):
        assert pd.api.types.is_numeric_dtype(frame[col]), col
        assert frame[col].notna().all(), col
    assert set(NUMERIC) <= set(COLUMNS)
    assert (frame["schema_version"] == SCHEMA_VERSION).all()
    # Percentiles are ordered, throughput agrees with the latencies in latency mode.
    row = frame.iloc[0]
    assert (
        row["latency_min_ms"]
        <= row["latency_p50_ms"]
        <= row["latency_p90_ms"]
        <= row["latency_p99_ms"]
        <= row["latency_max_ms"]
    )
    # Raw samples are kept per cell, and env/config beside the CSV.
    cells = load_cells(run_dir)
    assert all(len(c["latencies_ns"]) == c["iterations"] for c in cells)
    env = json.loads((run_dir / "env.json").read_text())
    assert {"cpu", "packages", "threads", "python"} <= set(env)
    assert "native_bf16" in env["cpu"]


def test_resume_skips_finished_cells_and_retries_failed(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep([FAKE, "tests.fakes:RaiseBackend"], batch_sizes=(1,))
    first = {r["cell_key"]: r for r in run_sweep(config, run_dir, cache_dir=cache_dir)}
    started: list[str] = []
    events = SweepEvents(on_cell_start=lambda cell: started.append(cell.backend))
    second = {
        r["cell_key"]: r for r in run_sweep(config, run_dir, resume=True, cache_dir=cache_dir, events=events)
    }
    assert started == ["tests.fakes:RaiseBackend"]  # only the failed cell runs again
    ok_key = next(k for k, r in first.items() if r["status"] == "ok")
    assert second[ok_key]["latencies_ns"] == first[ok_key]["latencies_ns"]
    assert len(read_csv(run_dir)) == 2


def test_interrupted_sweep_keeps_finished_cells(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep([FAKE], batch_sizes=(1, 2, 3))

    def stop_after_first(cell: object, record: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, run_dir, cache_dir=cache_dir, events=SweepEvents(on_cell_done=stop_after_first))
    frame = read_csv(run_dir)
    assert len(frame) == 1 and frame["status"].iloc[0] == "ok"
    records = run_sweep(config, run_dir, resume=True, cache_dir=cache_dir)
    assert [r["batch_size"] for r in records] == [1, 2, 3]


def test_old_schema_is_refused(run_dir: Path, cache_dir: Path) -> None:
    run_sweep(fake_sweep([FAKE], batch_sizes=(1,)), run_dir, cache_dir=cache_dir)
    cell_file = next((run_dir / "cells").glob("*.json"))
    record = json.loads(cell_file.read_text())
    record["schema_version"] = 0
    cell_file.write_text(json.dumps(record))
    from inferbench.errors import UserError

    with pytest.raises(UserError, match="schema_version 0 is not supported"):
        load_cells(run_dir)


def test_wrong_outputs_are_accuracy_fail_but_still_timed(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep(
        ["tests.fakes:WrongAnswerBackend"], models=("tests.fakes:torch_linear_model",), batch_sizes=(2,)
    )
    (record,) = run_sweep(config, run_dir, cache_dir=cache_dir)
    assert record["status"] == "accuracy-fail"
    assert record["reason"].startswith("rel_l2_err 1 > 0.001 (fp32 threshold)")
    assert record["latency_p50_ms"] > 0 and len(record["latencies_ns"]) >= FAST_MEASURE.min_iterations
    assert record["cpu_native_bf16"] in (True, False)


def test_throughput_mode_counts_completions_of_concurrent_streams(run_dir: Path, cache_dir: Path) -> None:
    measure = replace(FAST_MEASURE, min_seconds=0.3, streams=4)
    config = fake_sweep([SLEEP], batch_sizes=(2,), modes=("latency", "throughput"), measure=measure)
    latency, throughput = run_sweep(config, run_dir, cache_dir=cache_dir)
    assert (latency["mode"], throughput["mode"]) == ("latency", "throughput")
    assert throughput["cell_key"] == latency["cell_key"] + "__throughput"
    assert throughput["streams"] == 4 and "streams" not in latency
    # Four 1 ms requests in flight at once: far more than one at a time, counted not derived.
    assert throughput["throughput_sps"] > 2 * latency["throughput_sps"]
    assert (
        throughput["throughput_ci_low_sps"]
        <= throughput["throughput_sps"]
        <= throughput["throughput_ci_high_sps"]
    )
    assert len(throughput["throughput_slices_sps"]) == 20
    frame = read_csv(run_dir)
    assert list(frame["mode"]) == ["latency", "throughput"]


def test_repeats_merge_intervals_and_spreads(run_dir: Path, cache_dir: Path) -> None:
    measure = replace(FAST_MEASURE, repeats=2)
    (record,) = run_sweep(fake_sweep([FAKE], batch_sizes=(1,), measure=measure), run_dir, cache_dir=cache_dir)
    assert record["repeats"] == 2 and len(record["process_latencies_ns"]) == 2
    assert record["latency_p50_ci_low_ms"] <= record["latency_p50_ms"] <= record["latency_p50_ci_high_ms"]
    assert record["process_p50_spread_pct"] >= 0 and record["process_throughput_spread_pct"] >= 0
    assert record["p99_reliable"] is True  # 2 processes x >= 50 samples


def test_pinned_worker_runs_on_its_first_cores(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep([SLEEP], batch_sizes=(1,), threads=(1,), pin=True)
    (record,) = run_sweep(config, run_dir, cache_dir=cache_dir)
    first = min(os.sched_getaffinity(0))
    assert record["pinned_cpus"] == str(first)
    assert record["details"]["affinity"] == [first]


def test_rows_get_percent_of_the_cached_peak(run_dir: Path, cache_dir: Path) -> None:
    peaks = {"fp32_gflops": 100.0, "bf16_gflops": 400.0, "int8_gops": 800.0, "memory_gbps": 20.0}
    path = peak_cache_path(cache_dir, 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(peaks))
    # Accuracy-fail rows are timed too, so they get their share of the peak like any other.
    backend = "tests.fakes:WrongAnswerBackend"
    config = fake_sweep([backend], models=("tests.fakes:torch_linear_model",), batch_sizes=(1,))
    (record,) = run_sweep(config, run_dir, cache_dir=cache_dir, peak="cached")
    assert record["flops_per_sample"] > 0
    assert record["achieved_gflops"] == pytest.approx(
        record["flops_per_sample"] * record["throughput_sps"] / 1e9
    )
    assert record["pct_of_peak"] == pytest.approx(record["achieved_gflops"])  # peak 100 -> same number
    assert json.loads((run_dir / "env.json").read_text())["peaks"]["1"]["fp32_gflops"] == 100.0
    # Without a cached ceiling the achieved rate is still there, the share is not.
    (plain,) = run_sweep(config, run_dir.with_name("other"), cache_dir=cache_dir / "empty", peak="cached")
    assert plain["achieved_gflops"] > 0 and "pct_of_peak" not in plain


@pytest.mark.slow
def test_structural_unsupported_verdict_needs_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dynamic int8 cannot quantize convolutions: known from the model's layers, learned once
    before the sweep (and cached), so no worker is started for the cell."""
    from inferbench.sweep import runner

    def no_worker(*args: object, **kwargs: object) -> dict[str, object]:
        raise AssertionError("a worker was started for a statically unsupported cell")

    monkeypatch.setattr(runner, "run_repeats", no_worker)
    config = fake_sweep(["torch", "torchscript"], precisions=("int8",), batch_sizes=(1,))
    config = replace(config, models=("tiny-cnn",))
    records = run_sweep(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert [r["status"] for r in records] == ["unsupported", "unsupported"]
    assert all("convolutions would stay fp32" in r["reason"] for r in records)
    assert list((tmp_path / "cache" / "model-layers").glob("tiny-cnn-*.json"))  # cached
