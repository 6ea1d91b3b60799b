from __future__ import annotations

import numpy as np
import pytest

from inferbench.backends.base import ThroughputRun
from inferbench.cell.measure import measure, measure_throughput, settled, stability_window
from inferbench.cell.stats import (
    MIN_INTERVAL_SAMPLES,
    accuracy,
    bootstrap_ci,
    latency_intervals,
    summarize,
)
from inferbench.config import MeasureConfig


class FakeClock:
    """Advances by a fixed step per call run, so the stop rule is tested without real time."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def work(self, ns: int) -> None:
        self.now += ns


def _config(**kwargs: float) -> MeasureConfig:
    base = {
        "warmup_iterations": 3,
        "warmup_seconds": 0.0,
        "min_iterations": 10,
        "min_seconds": 0.0,
        "max_seconds": 100.0,
        "tail_samples": 1,  # the tail rule has its own tests
        "precision": 0.0,  # and so has the precision rule
    }
    base.update(kwargs)
    return MeasureConfig(**base)  # type: ignore[arg-type]


def test_stops_when_min_iterations_reached_if_duration_already_met() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def call(i: int) -> None:
        calls.append(i)
        clock.work(1_000_000)  # 1 ms per iteration

    result = measure(call, _config(), clock)
    # Constant speed: settled as soon as two stability windows (10 each) exist.
    assert result.warmup_iterations == 20 and result.warmup.stable
    assert len(result.latencies_ns) == 10
    assert all(lat == 1_000_000 for lat in result.latencies_ns)
    assert calls == list(range(30))  # warm-up iterations continue the input cycle
    assert not result.capped


def test_min_duration_extends_the_loop() -> None:
    clock = FakeClock()
    result = measure(lambda i: clock.work(10_000_000), _config(min_seconds=0.5), clock)
    # 10 ms per iteration: 10 iterations give 0.1 s, so the 0.5 s minimum decides.
    assert len(result.latencies_ns) == 50


def test_warmup_duration_is_respected() -> None:
    clock = FakeClock()
    result = measure(lambda i: clock.work(100_000_000), _config(warmup_seconds=3.0), clock)
    assert result.warmup_iterations == 30  # 3 s of 100 ms calls, more than the 3 asked for
    assert result.warmup.seconds == pytest.approx(3.0)


def test_max_seconds_caps_a_slow_cell() -> None:
    clock = FakeClock()
    result = measure(lambda i: clock.work(1_000_000_000), _config(max_seconds=3.0), clock)
    assert len(result.latencies_ns) == 3
    assert result.capped


def test_summarize_known_values() -> None:
    latencies = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    s = summarize(latencies, batch_size=4)
    assert s["latency_p50_ms"] == pytest.approx(50.5)
    assert s["latency_p90_ms"] == pytest.approx(90.1)
    assert s["latency_p99_ms"] == pytest.approx(99.01)
    assert s["latency_min_ms"] == 1 and s["latency_max_ms"] == 100
    assert s["latency_mean_ms"] == pytest.approx(50.5)
    assert s["iterations"] == 100
    # 400 samples in 5.05 s of compute
    assert s["throughput_sps"] == pytest.approx(400 / 5.05)


def test_summarize_rejects_empty() -> None:
    with pytest.raises(ValueError):
        summarize([], 1)


def test_accuracy_metrics() -> None:
    ref = [np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])]
    same = accuracy(ref, [ref[0].copy()], classification=True)
    assert same["max_abs_err"] == 0 and same["cosine"] == pytest.approx(1.0)
    assert same["top1_agreement"] == 1.0
    flipped = accuracy(ref, [ref[0][::-1].copy()], classification=True)
    assert flipped["top1_agreement"] == 0.0
    assert flipped["max_abs_err"] == pytest.approx(2.0)
    assert flipped["rel_l2_err"] > 0.5
    assert np.isnan(accuracy(ref, ref, classification=False)["top1_agreement"])
    with pytest.raises(ValueError, match="output sizes differ"):
        accuracy(ref, [np.zeros(5)], classification=False)


def test_warmup_runs_until_the_speed_settles() -> None:
    clock = FakeClock()
    # A cold engine: 10 ms per call falling to 1 ms over the first 100 calls, then steady.
    result = measure(lambda i: clock.work(max(1_000_000, 10_000_000 - 90_000 * i)), _config(), clock)
    assert result.warmup.stable
    assert 100 <= result.warmup_iterations <= 125  # just past the end of the slope
    assert all(lat == 1_000_000 for lat in result.latencies_ns)


def test_warmup_that_never_settles_stops_at_its_cap() -> None:
    clock = FakeClock()
    # Drifting 3% per 10 calls (a throttling CPU): window medians never agree within 2%.
    result = measure(lambda i: clock.work(int(1_000_000 * 1.003**i)), _config(warmup_max_seconds=1.0), clock)
    assert not result.warmup.stable
    assert result.warmup.seconds == pytest.approx(1.0, abs=0.01)


def test_stability_window_shrinks_for_slow_cells_but_not_below_three() -> None:
    config = _config(warmup_max_seconds=10.0, stable_window=10)
    assert stability_window(config, 0.001) == 10
    assert stability_window(config, 0.5) == 5  # two windows fit in half the cap
    assert stability_window(config, 30.0) == 3
    assert settled([100] * 6, 3, 0.02) and not settled([100, 100, 100, 200, 200, 200], 3, 0.02)
    assert not settled([100] * 5, 3, 0.02)  # fewer than two windows


def test_loop_runs_on_for_enough_tail_samples() -> None:
    clock = FakeClock()
    result = measure(lambda i: clock.work(1_000_000), _config(tail_samples=300), clock)
    assert len(result.latencies_ns) == 300 and result.tail_ok


def test_p99_is_marked_when_the_cap_comes_first() -> None:
    clock = FakeClock()
    # 100 ms per call, 5 s cap: 50 samples, enough for the minimums but not for p99.
    result = measure(lambda i: clock.work(100_000_000), _config(tail_samples=500, max_seconds=5.0), clock)
    assert len(result.latencies_ns) == 50
    assert not result.capped and not result.tail_ok


def test_device_times_are_collected_when_the_engine_reports_them() -> None:
    clock = FakeClock()

    def call(i: int) -> int:
        clock.work(2_000_000)
        return 1_500_000  # device time from the engine's own events

    result = measure(call, _config(), clock)
    assert result.device_ns == [1_500_000] * len(result.latencies_ns)
    assert measure(lambda i: clock.work(1), _config(), clock).device_ns is None


def test_bootstrap_interval_covers_the_true_median_and_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(0)
    misses = 0
    for _ in range(40):
        sample = rng.lognormal(mean=0.0, sigma=0.3, size=200)  # true median exp(0) = 1
        low, high = bootstrap_ci([sample], np.median, resamples=500)
        misses += not (low <= 1.0 <= high)
    assert misses <= 6  # a 95% interval misses about 2 in 40
    small = bootstrap_ci([rng.normal(10, 1, 50)], np.median, resamples=500)
    large = bootstrap_ci([rng.normal(10, 1, 5000)], np.median, resamples=500)
    assert large[1] - large[0] < (small[1] - small[0]) / 4  # ~1/sqrt(n): 10x fewer -> ~3x wider


def test_hierarchical_bootstrap_carries_process_to_process_variation() -> None:
    rng = np.random.default_rng(1)
    # Three processes, each tight around its own level 10, 11, 12.
    groups = [rng.normal(level, 0.05, 500) for level in (10.0, 11.0, 12.0)]
    pooled = bootstrap_ci([np.concatenate(groups)], np.median, resamples=500)
    nested = bootstrap_ci(groups, np.median, resamples=500)
    assert nested[1] - nested[0] > 5 * (pooled[1] - pooled[0])
    assert nested[0] < 10.5 and nested[1] > 11.5


def test_latency_intervals_bracket_the_point_estimates() -> None:
    latencies = list(np.random.default_rng(2).integers(900_000, 1_100_000, 1000))
    s = summarize(latencies, batch_size=2)
    ci = latency_intervals([latencies], batch_size=2, resamples=300)
    assert ci["latency_p50_ci_low_ms"] <= s["latency_p50_ms"] <= ci["latency_p50_ci_high_ms"]
    assert ci["throughput_ci_low_sps"] <= s["throughput_sps"] <= ci["throughput_ci_high_sps"]


def test_throughput_warmup_repeats_slices_until_two_agree() -> None:
    rates = iter([100.0, 300.0, 500.0, 505.0, 999.0])
    calls: list[tuple[float, int]] = []

    def run(seconds: float, min_requests: int) -> ThroughputRun:
        calls.append((seconds, min_requests))
        rate = next(rates)
        n = int(rate * seconds)
        ends = [int(1e9 * seconds * (k + 1) / n) for k in range(n)]
        return ThroughputRun([0] * n, ends, 1, 2, 0, int(seconds * 1e9))

    warmup, timed = measure_throughput(run, _config(warmup_seconds=0.0, min_seconds=1.0))
    assert warmup.stable and warmup.window == 4  # 500 then 505: within 2%
    assert calls[-1] == (1.0, 10)  # the timed run: min_seconds and min_iterations
    assert timed.samples == 999 and timed.streams == 2


def test_precision_rule_stops_a_stable_engine_early() -> None:
    clock = FakeClock()
    rng = np.random.default_rng(0)
    config = _config(precision=0.01, tail_samples=500)
    result = measure(lambda i: clock.work(int(1e6 * (1 + rng.normal(0, 0.01)))), config, clock)
    assert len(result.latencies_ns) < 100  # far short of the 500 tail samples
    assert not result.capped and not result.tail_ok
    assert result.p50_half_width is not None and result.p50_half_width <= 0.01


def test_precision_rule_runs_on_when_noisy_and_caps_at_the_maximum() -> None:
    clock = FakeClock()
    rng = np.random.default_rng(1)
    config = _config(precision=0.01, max_seconds=2.0)
    result = measure(lambda i: clock.work(int(1e6 * rng.lognormal(0, 0.8))), config, clock)
    assert len(result.latencies_ns) > 1000  # ran on to the 2 s cap
    assert result.capped and result.p50_half_width is not None and result.p50_half_width > 0.01


def test_chase_tail_still_buys_the_tail() -> None:
    clock = FakeClock()
    config = _config(precision=0.01, tail_samples=300, chase_tail=1)
    result = measure(lambda i: clock.work(1_000_000), config, clock)
    assert len(result.latencies_ns) >= 300 and result.tail_ok and not result.capped


def test_no_interval_from_too_few_calls() -> None:
    """One timed call of an emulated bf16 cell read [6647, 6647]: as if perfectly precise.
    Below MIN_INTERVAL_SAMPLES there is no interval; from it on there is one, and it is wide
    where the calls disagree."""
    one = latency_intervals([[6_647_000_000]], batch_size=1, resamples=200)
    assert all(np.isnan(v) for v in one.values()), one
    few = latency_intervals([[1_000_000, 2_000_000], [3_000_000] * 3], batch_size=1, resamples=200)
    assert all(np.isnan(v) for v in few.values())  # 5 calls in all, across two processes
    six = [1_000_000, 1_100_000, 1_200_000, 1_300_000, 1_400_000, 1_500_000]
    enough = latency_intervals([six], batch_size=1, resamples=200)
    assert enough["latency_p50_ci_low_ms"] < enough["latency_p50_ci_high_ms"]
    assert MIN_INTERVAL_SAMPLES == len(six)
