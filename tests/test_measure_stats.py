from __future__ import annotations

import numpy as np
import pytest

from bench.config import MeasureConfig
from bench.measure import measure
from bench.stats import accuracy, summarize


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
    assert result.warmup_iterations == 3
    assert len(result.latencies_ns) == 10
    assert all(lat == 1_000_000 for lat in result.latencies_ns)
    assert calls == list(range(13))  # warm-up iterations continue the input cycle
    assert not result.capped


def test_min_duration_extends_the_loop() -> None:
    clock = FakeClock()
    result = measure(lambda i: clock.work(10_000_000), _config(min_seconds=0.5), clock)
    # 10 ms per iteration: 10 iterations give 0.1 s, so the 0.5 s minimum decides.
    assert len(result.latencies_ns) == 50


def test_warmup_duration_is_respected() -> None:
    clock = FakeClock()
    result = measure(lambda i: clock.work(100_000_000), _config(warmup_seconds=1.0), clock)
    assert result.warmup_iterations == 10  # 1 s of 100 ms calls, more than the 3 asked for


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
