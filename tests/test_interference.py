"""Interference detection: counter arithmetic on synthetic readings, the runner's bounded
re-measure, and a real cell measured beside a CPU hog (flagged) and without it (not)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from inferbench.cell.interference import (
    Counters,
    InterferenceProbe,
    Thresholds,
    _cpu_lines,
    _own_times,
    run_delay_ns,
    window_stats,
)
from inferbench.config import Cell, MeasureConfig, SweepConfig
from inferbench.models import resolve_model
from inferbench.sweep.repeats import merge_repeats, run_clean
from inferbench.sweep.runner import run_sweep

STAT = """cpu  100 0 50 1000 0 0 0 7 0 0
cpu0 60 0 30 500 0 0 0 3 0 0
cpu1 40 0 20 500 0 5 5 4 0 0
intr 1 2 3
"""


def test_proc_parsing() -> None:
    assert _cpu_lines(STAT, [0]) == (90, 3)
    assert _cpu_lines(STAT, [0, 1]) == (90 + 70, 7)
    # A command name with spaces and a parenthesis does not shift the fields.
    fields = ["S"] + ["0"] * 10 + ["123", "45"] + ["0"] * 30
    assert _own_times("4242 (my (odd) name) " + " ".join(fields)) == (123, 45)


def test_window_stats_subtracts_own_time() -> None:
    before = Counters(wall_ns=0, busy=1000, steal=10, own_user=100, own_system=0, nivcsw=5)
    # 2 s on 2 CPUs at 100 ticks/s = 400 ticks of capacity; we used 190, the machine 290.
    after = Counters(wall_ns=2_000_000_000, busy=1290, steal=30, own_user=270, own_system=20, nivcsw=65)
    stats = window_stats(before, after, n_cpus=2, ticks_per_s=100)
    assert stats["interference_pct"] == pytest.approx(25.0)  # 100 of 400 ticks were others'
    assert stats["steal_pct"] == pytest.approx(5.0)
    assert stats["sys_pct"] == pytest.approx(100 * 20 / 190)
    assert stats["nivcsw"] == 60


def test_run_delay_is_read_in_nanoseconds_from_every_threads_schedstat(tmp_path: Path) -> None:
    for tid, line in {"101": "900000 2500 7", "102": "5 500 1", "103": ""}.items():
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "schedstat").write_text(line + "\n")
    assert run_delay_ns(tmp_path) == 3000  # the second field of each; a blank one counts 0
    assert run_delay_ns(tmp_path / "missing") == 0  # no CONFIG_SCHED_INFO: nothing, no error


def test_run_delay_share_resolves_below_one_clock_tick() -> None:
    # 4 s on 2 CPUs: one tick is 0.125% of capacity; 1 ms of waiting is 0.0125%, which the
    # tick-based share cannot show and the run-delay share does.
    before = Counters(0, 0, 0, 0, 0, 0, run_delay_ns=10_000)
    after = Counters(4_000_000_000, 1, 0, 0, 0, 0, run_delay_ns=1_010_000)
    stats = window_stats(before, after, n_cpus=2, ticks_per_s=100)
    assert stats["tick_pct"] == pytest.approx(0.125)
    assert stats["interference_pct"] == pytest.approx(0.125)  # one tick, the coarsest step
    assert stats["run_delay_pct"] == pytest.approx(0.0125)


@pytest.mark.skipif(not Path("/proc/thread-self/schedstat").is_file(), reason="no per-thread schedstat")
def test_real_schedstat_counts_nanoseconds() -> None:
    """This thread's schedstat run time grows with its CPU time in the same unit (ns): read in
    ticks it would be ten million times smaller."""
    stat = Path("/proc/thread-self/schedstat")
    run_before, cpu_before = int(stat.read_text().split()[0]), time.thread_time_ns()
    while time.thread_time_ns() - cpu_before < 200_000_000:  # 0.2 s of this thread's CPU
        pass
    ran, cpu = int(stat.read_text().split()[0]) - run_before, time.thread_time_ns() - cpu_before
    assert 0.5 < ran / cpu < 2, (ran, cpu)
    probe = InterferenceProbe()
    probe.start()
    probe.stop()
    result = probe.result()
    assert 0 <= result["run_delay_pct"] <= 100 and result["tick_pct"] > 0


def test_probe_accumulates_windows_and_flags_over_the_threshold() -> None:
    readings = iter(
        [
            Counters(0, 0, 0, 0, 0, 0),
            Counters(10**9, 100, 0, 90, 0, 1),  # 1 s alone: 10 ticks by others
            Counters(5 * 10**9, 100, 0, 90, 0, 1),
            Counters(6 * 10**9, 200, 0, 100, 0, 9),  # 1 s, others took 90 ticks
        ]
    )
    probe = InterferenceProbe(Thresholds(interference_max_pct=20.0), read=lambda cpus: next(readings))
    probe._cpus, probe._ticks, probe.available = [0], 100.0, True
    for _ in range(2):
        probe.start()
        probe.stop()
    result = probe.result()
    assert result["interference_pct"] == pytest.approx(50.0)  # 100 of 200 ticks, the gap skipped
    assert result["nivcsw"] == 9
    assert result["interfered"] is True


def _cell() -> Cell:
    return Cell("tests.fakes:numpy_model", "fake", "fp32", 1, 1)


def test_disturbed_cell_is_measured_again_a_bounded_number_of_times(tmp_path: Path) -> None:
    config = SweepConfig(
        models=("tests.fakes:numpy_model",),
        backends=("fake",),
        measure=MeasureConfig(interference_retries=2),
    )
    calls: list[int] = []

    def disturbed_twice(*args: Any) -> dict[str, Any]:
        calls.append(1)
        return {"status": "ok", "interfered": len(calls) <= 2, "interference_pct": 50.0}

    ref = resolve_model("tests.fakes:numpy_model")
    record = run_clean(_cell(), ref, config, tmp_path, tmp_path, run=disturbed_twice)
    assert len(calls) == 3 and record["remeasured"] == 2 and not record["interfered"]

    calls.clear()

    def always(*args: Any) -> dict[str, Any]:
        calls.append(1)
        return {"status": "ok", "interfered": True, "interference_pct": 80.0}

    record = run_clean(_cell(), ref, config, tmp_path, tmp_path, run=always)
    assert len(calls) == 3 and record["interfered"]  # gave up after 2 retries, still flagged


def test_merged_repeats_keep_the_flag_and_the_worst_window() -> None:
    base = {"status": "ok", "latencies_ns": [1_000_000] * 5, "latency_p50_ms": 1.0, "throughput_sps": 1e3}
    records = [
        {**base, "interference_pct": 2.0, "steal_pct": 0.0, "interfered": False},
        {**base, "interference_pct": 40.0, "steal_pct": 1.0, "interfered": True},
    ]
    merged = merge_repeats(records, 1, resamples=100)
    assert merged["interfered"] and merged["interference_pct"] == 40.0


def _real_cell(tmp_path: Path, name: str, retries: int) -> dict[str, Any]:
    measure = MeasureConfig(
        warmup_iterations=5,
        warmup_seconds=0.1,
        warmup_max_seconds=1.0,
        min_iterations=50,
        min_seconds=1.0,
        max_seconds=3.0,
        tail_samples=50,
        bootstrap_resamples=200,
        interference_retries=retries,
    )
    # One thread pinned to one core: the hog below keeps both cores busy, so it shares ours.
    config = SweepConfig(models=("mlp",), backends=("torch",), threads=(1,), pin=True, measure=measure)
    return run_sweep(config, tmp_path / name, cache_dir=tmp_path / "cache")[0]


@pytest.mark.slow
@pytest.mark.engine
def test_cpu_hog_beside_a_real_cell_sets_the_flag(tmp_path: Path) -> None:
    # One busy process pinned to each CPU: left free, the scheduler may move every hog off
    # the worker's pinned core and leave it alone (which the probe then rightly reports).
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
        )
        for cpu in sorted(os.sched_getaffinity(0))
    ]
    try:
        record = _real_cell(tmp_path, "hog", retries=0)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert record["status"] == "ok", record.get("reason")
    assert record["interfered"] is True, record
    assert record["interference_pct"] > 20, record["interference_pct"]

    # The same cell alone. The machine may be shared (other test runs): the runner's own
    # re-measure is what absorbs a passing neighbour, so give it a few tries.
    alone = _real_cell(tmp_path, "alone", retries=4)
    if alone["interfered"]:
        pytest.skip(f"the machine is not quiet: others used {alone['interference_pct']:.0f}% in 5 tries")
    assert alone["interference_pct"] < MeasureConfig().interference_max_pct


def test_report_banner_names_disturbed_cells() -> None:
    from inferbench.machine.env import noise_warnings

    rows = [
        {"cell_key": "a", "interfered": False, "interference_pct": 2.0},
        {"cell_key": "b", "interfered": True, "interference_pct": 64.0},
    ]
    (warning,) = noise_warnings({}, rows)
    assert "1 cell(s) shared their cores" in warning and "64%: b" in warning
