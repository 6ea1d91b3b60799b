"""The counted rate of a saturated run (inferbench.cell.rate): per stream, edge-free, with an
interval that covers the true rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferbench.backends.base import ThroughputRun
from inferbench.cell.measure import measure_throughput
from inferbench.cell.rate import GROUPS, counted_rate, pooled
from inferbench.config import MeasureConfig


def closed_loops(cycles: list[list[float]], batch: int = 1, begin: int = 0) -> ThroughputRun:
    """Streams that each run their requests back to back; `cycles[k]` in seconds."""
    starts: list[int] = []
    ends: list[int] = []
    ids: list[int] = []
    last = begin
    for k, stream in enumerate(cycles):
        t = begin
        for seconds in stream:
            starts.append(t)
            t += int(seconds * 1e9)
            ends.append(t)
            ids.append(k)
        last = max(last, t)
    return ThroughputRun(starts, ends, batch, len(cycles), begin, last, ids)


def test_two_streams_of_few_slow_requests_have_no_edge_effect() -> None:
    # bert-base at batch 32 on two cores: 4 s a request per stream, the streams out of step.
    # 6 + 5 requests: the wall-time count (11 * 32 / 24 s) is 8% low; per stream it is exact.
    run = closed_loops([[4.0] * 6, [4.0] * 5], batch=32)
    rate = counted_rate(run)
    assert rate.sps == pytest.approx(2 * 32 / 4.0)
    assert run.samples / run.wall_seconds < 0.93 * rate.sps
    assert rate.half_width == pytest.approx(0.0, abs=1e-9)  # identical cycles: exact


def test_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    hits, trials = 0, 400
    for _ in range(trials):
        n = int(rng.integers(10, 120))
        streams = [list(rng.lognormal(math.log(0.05), 0.1, n)) for _ in range(2)]
        rate = counted_rate(closed_loops(streams))
        true = 2 / (0.05 * math.exp(0.1**2 / 2))  # two streams, 1 / mean cycle each
        low, high = rate.interval
        hits += low <= true <= high
    assert 0.9 <= hits / trials <= 0.99


def test_many_requests_use_batch_means() -> None:
    rng = np.random.default_rng(1)
    run = closed_loops([list(rng.uniform(0.009, 0.011, 500)) for _ in range(2)])
    rate = counted_rate(run)
    assert len(rate.group_sps) == GROUPS
    assert rate.sps == pytest.approx(200, rel=0.01)
    assert 0 < rate.half_width < 0.01
    assert np.mean(rate.group_sps) == pytest.approx(rate.sps, rel=0.01)


def test_runs_without_stream_ids_are_taken_round_robin() -> None:
    run = closed_loops([[1.0] * 4, [1.0] * 4])
    bare = ThroughputRun(run.starts_ns, run.ends_ns, 1, 2, run.begin_ns, run.end_ns)
    assert counted_rate(bare).sps == pytest.approx(counted_rate(run).sps)


def test_pooled_runs_never_count_the_gap_between_them() -> None:
    first = closed_loops([[0.5] * 4, [0.5] * 4])
    second = closed_loops([[0.5] * 8, [0.5] * 8], begin=int(100e9))  # 98 s later
    both = pooled([first, second])
    assert counted_rate(both).sps == pytest.approx(4.0)
    assert len(both.ends_ns) == 24


def test_empty_run_has_no_rate() -> None:
    rate = counted_rate(ThroughputRun([], [], 1, 2, 0, 1))
    assert rate.sps == 0 and math.isinf(rate.half_width)
    assert rate.interval == (0.0, math.inf)


def test_measure_throughput_runs_on_until_precise_then_pools() -> None:
    rng = np.random.default_rng(3)
    lengths: list[float] = []
    clock = [0]

    def run(seconds: float, min_requests: int) -> ThroughputRun:
        lengths.append(seconds)
        n = max(min_requests // 2, int(seconds / 0.05))
        loops = closed_loops([list(rng.lognormal(math.log(0.05), 0.2, n)) for _ in range(2)], begin=clock[0])
        clock[0] = loops.end_ns + 1
        return loops

    config = MeasureConfig(
        warmup_iterations=0,
        warmup_seconds=0.0,
        min_iterations=4,
        min_seconds=0.5,
        max_seconds=30.0,
        precision=0.5,  # the p50's target: throughput mode follows its own
        throughput_precision=0.02,
    )
    _, timed = measure_throughput(run, config)
    assert len(lengths) >= 2  # 10 cycles of 20% spread are not within 2%: it ran on
    assert counted_rate(timed).half_width <= 0.02
    assert len(timed.ends_ns) > 40  # every timed run is in the answer


def test_measure_throughput_stops_at_max_seconds() -> None:
    rng = np.random.default_rng(4)

    def run(seconds: float, min_requests: int) -> ThroughputRun:
        n = max(2, int(seconds / 0.05))
        return closed_loops([list(rng.lognormal(math.log(0.05), 0.8, n)) for _ in range(2)])

    config = MeasureConfig(
        warmup_iterations=0,
        warmup_seconds=0.0,
        min_iterations=4,
        min_seconds=0.5,
        max_seconds=2.0,
        throughput_precision=0.001,
    )
    lengths: list[float] = []
    _, timed = measure_throughput(lambda s, m: (lengths.append(s), run(s, m))[1], config)
    assert counted_rate(timed).half_width > 0.001
    assert sum(lengths) <= 2.0 + 1e-9  # the runs asked for stay within max_seconds
