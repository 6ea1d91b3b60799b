"""The synthetic run builder shared by the history benchmark and the history tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from inferbench.config import Cell
from inferbench.store.runfolder import load_config, load_run
from inferbench.tools import history_bench
from inferbench.tools.synthetic_runs import synthetic_record, write_run

CELL = Cell("mlp", "onnxruntime", "fp32", 4, 2)


def test_record_summary_follows_the_chosen_median() -> None:
    record = synthetic_record(CELL, 2.0, "r1")
    assert record["cell_key"] == CELL.key and record["status"] == "ok"
    assert record["latencies_ns"] == [2_000_000] * 5
    assert record["latency_p50_ms"] == 2.0 and record["latency_p99_ms"] == pytest.approx(2.6)
    assert record["throughput_sps"] == pytest.approx(2000.0)  # batch 4 in 2 ms
    failed = synthetic_record(CELL, 2.0, "r1", status="error", settings_hash="abc")
    assert failed["reason"] and failed["settings_hash"] == "abc"
    assert "latencies_ns" not in failed and "latency_p50_ms" not in failed


def test_written_folder_reads_back_like_a_real_run(tmp_path: Path) -> None:
    run_dir = write_run(
        tmp_path / "r1", [synthetic_record(CELL, 3.0, "r1")], {"cpu": {"model": "X"}}, {"name": "p"}
    )
    frame, records, env = load_run(run_dir)
    assert list(frame["latency_p50_ms"]) == [3.0] and records[0]["latencies_ns"] == [3_000_000] * 5
    assert env == {"cpu": {"model": "X"}}
    assert load_config(run_dir)["name"] == "p"


def test_benchmark_records_carry_their_sampled_latencies() -> None:
    grid = history_bench.cells(3)
    found = history_bench.records(grid, "s", np.random.default_rng(0), samples=50)
    assert [r["cell_key"] for r in found] == [c.key for c in grid]
    for record in found:
        assert record["iterations"] == 50 and len(record["latencies_ns"]) == 50
        p50_ns = record["latency_p50_ms"] * 1e6
        assert 0.8 * p50_ns < float(np.median(record["latencies_ns"])) < 1.2 * p50_ns


def test_history_benchmark_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    argv = [
        "history_bench",
        "--url",
        url,
        "--cells",
        "4",
        "--sweeps",
        "3",
        "--repeats",
        "2",
        "--samples",
        "20",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    history_bench.main()
    out = capsys.readouterr().out
    assert "sqlite: 4 cells per sweep" in out
    assert "size after 3 sweeps (12 rows)" in out
