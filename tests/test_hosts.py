"""A run merged from two machines: answered, reported and compared host by host, never across.

Hand-made run folders (two shards whose env.json name different CPUs, merged for real) and
hand-made frames; one-host runs keep their exact output (the golden files pin that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from inferbench.cli import main
from inferbench.compare.core import CompareOptions, compare_records
from inferbench.compare.runs import compare_runs
from inferbench.config import cell_of
from inferbench.errors import UserError
from inferbench.history.fingerprint import machine_from_env
from inferbench.machine.hosts import host_labels, hosts_in, keys_with_host, with_host
from inferbench.report.answer import answers, with_speedup
from inferbench.report.answer_text import answer_lines
from inferbench.report.page import render_html, write_report
from inferbench.report.summary import summary_markdown
from inferbench.store.runfolder import SCHEMA_VERSION, load_host_envs, save_cell, to_frame, write_csv
from inferbench.sweep.merge import merge_runs
from tests.test_answer import GOLDEN, _golden_frame

FAST = CompareOptions(n_resamples=300)


def _env(cpu: str, cpus: int) -> dict[str, Any]:
    return {
        "cpu": {"model": cpu, "logical_cpus": cpus, "isa": {"avx2": True}},
        "memory_gb": 16.0,
        "packages": {"onnxruntime": "1.22.0", "torch": "2.13.0"},
        "threads": {"inter_op": 1, "env": {}},
    }


ENV_A, ENV_B = _env("Fast CPU", 8), _env("Slow CPU", 2)
HOST_A, HOST_B = machine_from_env(ENV_A).fingerprint, machine_from_env(ENV_B).fingerprint


def _cell(host: str, backend: str, p50: float, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A latency-mode cell of model m at batch 1 with raw samples around `p50` ms."""
    ns = [int(x) for x in p50 * 1e6 * np.random.default_rng(seed).lognormal(0.0, 0.02, 200)]
    ms = np.asarray(ns) / 1e6
    row: dict[str, Any] = {
        "model": "m",
        "backend": backend,
        "precision": "fp32",
        "batch_size": 1,
        "threads": 2,
        "mode": "latency",
        "status": "ok",
        "latencies_ns": ns,
        "latency_p50_ms": float(np.median(ms)),
        "latency_p50_ci_low_ms": float(np.median(ms)) * 0.99,
        "latency_p50_ci_high_ms": float(np.median(ms)) * 1.01,
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "throughput_sps": float(1e3 / ms.mean()),
        "rel_l2_err": 0.0,
        "engine_precision": "fp32",
        "iterations": len(ns),
        "cell_key": f"m__{backend}__fp32__b1__t2",
        "host": host,
        "schema_version": SCHEMA_VERSION,
    }
    row.update(extra)
    return row


# Machine A: onnxruntime 2x faster than eager torch. Machine B (4x slower overall): torch wins.
# Ranked together, A's onnxruntime (5 ms) would be "the" answer and B's cells mere losers.
TWO_HOSTS = [
    _cell(HOST_A, "torch", 10.0),
    _cell(HOST_A, "onnxruntime", 5.0),
    _cell(HOST_B, "torch", 40.0, cell_key="m__torch__fp32__b1__t2__B"),
    _cell(HOST_B, "onnxruntime", 60.0, cell_key="m__onnxruntime__fp32__b1__t2__B"),
]


def test_answer_picks_a_winner_per_host_with_speedups_on_that_host() -> None:
    frame = to_frame(TWO_HOSTS)
    found = answers(frame)
    assert [(a.host, a.winner.name if a.winner else None) for a in found] == [
        (HOST_A, "onnxruntime fp32"),
        (HOST_B, "torch fp32"),
    ]
    a, b = found
    assert a.winner and a.winner.speedup_vs_eager_fp32 == pytest.approx(2.0, rel=0.05)
    assert b.winner and b.winner.speedup_vs_eager_fp32 == pytest.approx(1.0)
    assert b.runner_up and b.runner_up.name == "onnxruntime fp32"  # B's own, never A's
    speedups = with_speedup(frame).set_index(["backend", "host"])["speedup_vs_eager_fp32"]
    assert speedups[("onnxruntime", HOST_B)] == pytest.approx(40 / 60, rel=0.05)
    lines = answer_lines(found)
    assert f"m on host {HOST_A}" in lines and f"m on host {HOST_B}" in lines


def test_summary_and_report_group_by_host_and_filter_on_it() -> None:
    frame = to_frame(TWO_HOSTS)
    labels = host_labels([ENV_A, ENV_B])
    text = summary_markdown(frame, ENV_A, "merged", labels)
    assert f"### host {HOST_A} (Fast CPU, 8 CPUs, 16 GiB, avx2)" in text
    assert f"### host {HOST_B} (Slow CPU, 2 CPUs, 16 GiB, avx2)" in text
    assert "CPU: Fast CPU" not in text  # one machine's CPU line would misdescribe the run
    assert text.count("| host |") == 1  # the all-cells table of model m
    page = render_html(frame, TWO_HOSTS, ENV_A, "merged", [ENV_A, ENV_B])
    assert 'id="filter-host"' in page and f'data-host="{HOST_B}"' in page
    assert 'id="answer-table-1"' in page and 'id="answer-table-2"' in page
    assert page.count('<h3 class="host">') == 4  # answer and environment, per host
    assert f"m on host {HOST_A}: p50 latency" in page  # charts per host too


def test_one_host_output_is_unchanged() -> None:
    """A host column with one value changes nothing: the golden summary, no host filter."""
    env = {"cpu": {"model": "Golden CPU", "logical_cpus": 2, "native_bf16": True, "native_int8_dot": True}}
    frame = _golden_frame().assign(host=HOST_A)
    assert summary_markdown(frame, env, "golden-run", host_labels([ENV_A])) == GOLDEN.read_text()
    page = render_html(frame, frame.to_dict("records"), env, "one-host")
    assert "filter-host" not in page and 'class="host"' not in page
    assert all(a.host == "" for a in answers(frame))
    assert keys_with_host(["model"], frame.assign(host=float("nan"))) == ["model"]


def test_compare_matches_on_key_and_host_and_never_across() -> None:
    base = [*TWO_HOSTS, _cell(HOST_B, "openvino", 50.0)]
    # NEW: same speeds but B's torch, 2x slower on the same host (a real regression); B's
    # openvino cell was measured on A this time (2.5x "faster": the machine, not the code).
    new = [
        *(_cell(r["host"], r["backend"], r["latency_p50_ms"], seed=1) for r in TWO_HOSTS[:2]),
        _cell(HOST_B, "torch", 80.0, seed=1),
        _cell(HOST_B, "onnxruntime", 60.0, seed=1),
        _cell(HOST_A, "openvino", 20.0, seed=1),
    ]
    frame, unmatched = compare_records(base, new, FAST)
    p50 = frame[frame["metric"] == "p50"].set_index(["backend", "base_host"])
    assert p50.loc[("torch", HOST_A), "verdict"] == "no change"
    assert p50.loc[("onnxruntime", HOST_B), "verdict"] == "no change"
    assert p50.loc[("torch", HOST_B), "verdict"] == "regression"
    moved = p50.loc[("openvino", HOST_B)]
    assert moved["new_host"] == HOST_A and moved["verdict"] == "inconclusive"
    assert moved["note"] == f"host differs (BASE {HOST_B}, NEW {HOST_A})"
    assert not moved["regression"] and unmatched.empty
    # One host per side: exactly the old matching on the key alone.
    one, _ = compare_records([_cell(HOST_A, "torch", 10.0)], [_cell(HOST_B, "torch", 10.0, seed=1)], FAST)
    assert "base_host" not in one and set(one["verdict"]) == {"no change"}


def _shard(run_dir: Path, env: dict[str, Any], records: list[dict[str, Any]], shard: str) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"models": ["m"], "shard": shard}))
    (run_dir / "env.json").write_text(json.dumps(env))
    for record in records:
        save_cell(run_dir, {**record, "run_id": run_dir.name, "shard": shard})
    write_csv(run_dir, records)
    return run_dir


def _merged(root: Path, records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> Path:
    shards = [
        _shard(root / "s1", ENV_A, records_a, "1/2"),
        _shard(root / "s2", ENV_B, records_b, "2/2"),
    ]
    merge_runs(shards, root / "merged")
    return root / "merged"


def _honest(records: list[dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    """Cells whose key is their axes' (merge recomputes it): B's at another thread count, since
    one cell measured on two hosts is two shards claiming one key, which merge refuses."""
    moved = [{**r, "threads": threads} for r in records]
    return [{**r, "cell_key": cell_of(r).key} for r in moved]


def test_merged_run_folders_report_and_compare_by_host(tmp_path: Path) -> None:
    base = _merged(tmp_path / "base", TWO_HOSTS[:2], _honest(TWO_HOSTS[2:], 4))
    assert hosts_in(to_frame(json.loads(p.read_text()) for p in (base / "cells").glob("*.json")))
    assert host_labels(load_host_envs(base)) == host_labels([ENV_A, ENV_B])
    html_path, md_path = write_report(base, tmp_path / "reports")
    assert f"host {HOST_B} (Slow CPU" in md_path.read_text()
    assert "Slow CPU" in html_path.read_text() and "Fast CPU" in html_path.read_text()

    # Same hosts on both sides: each host's environment is checked against its own only.
    again = _merged(tmp_path / "again", TWO_HOSTS[:2], _honest(TWO_HOSTS[2:], 4))
    assert main(["compare", str(base), str(again), "--out", str(tmp_path / "out0")]) == 0

    # Shards that swapped machines: every cell of NEW ran on the other host.
    one = _merged(tmp_path / "one", [_cell(HOST_A, "torch", 10.0)], [_cell(HOST_B, "onnxruntime", 60.0)])
    other = _merged(tmp_path / "other", [_cell(HOST_A, "onnxruntime", 15.0)], [_cell(HOST_B, "torch", 40.0)])
    with pytest.raises(
        UserError, match=r"cells on another host: m/torch/fp32/1/2/latency: host differs .*\(and 1 more\)"
    ):
        compare_runs(one, other, FAST, tmp_path / "out")
    frame, _, md = compare_runs(one, other, FAST, tmp_path / "out", allow_mismatch=True)
    assert not frame["regression"].any() and set(frame["verdict"]) == {"inconclusive"}
    assert "Compared despite a mismatch" in md.read_text()
    assert main(["compare", str(one), str(other), "--out", str(tmp_path / "out2")]) == 2


def test_frames_without_a_host_column_are_one_host() -> None:
    frame = pd.DataFrame({"model": ["m"], "status": ["ok"]})
    assert hosts_in(frame) == [] and keys_with_host(["model"], frame) == ["model"]


def test_rows_from_before_the_host_column_take_their_runs_machine() -> None:
    old = [{k: v for k, v in r.items() if k != "host"} for r in TWO_HOSTS[:2]]
    assert with_host(old, {}) is old
    base = with_host(old, ENV_A)
    assert {r["host"] for r in base} == {HOST_A}
    frame, unmatched = compare_records(base, TWO_HOSTS, FAST)
    assert set(frame["new_host"]) == {HOST_A} and set(frame["verdict"]) == {"no change"}
    assert list(unmatched["host"]) == [HOST_B, HOST_B] and set(unmatched["only_in"]) == {"new"}
