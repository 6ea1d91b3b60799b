"""Arrival schedules: seeded, with each distribution's mean and variance, and bad values refused
in one line."""

from __future__ import annotations

import numpy as np
import pytest

from inferbench.errors import UserError
from inferbench.serve.schedule import ARRIVALS, make_schedule

RATE = 200.0
COUNT = 200_000


def gaps_s(arrival: str, burstiness: float = 1.0, seed: int = 7) -> np.ndarray:
    schedule = make_schedule(RATE, COUNT, arrival, burstiness, seed)
    return np.diff(np.asarray(schedule.offsets_ns, dtype=np.float64), prepend=0.0) / 1e9


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_the_same_seed_gives_the_same_schedule(arrival: str) -> None:
    burstiness = 0.5 if arrival == "gamma" else 1.0
    first = make_schedule(50.0, 1000, arrival, burstiness, seed=3)
    assert make_schedule(50.0, 1000, arrival, burstiness, seed=3) == first
    if arrival != "constant":
        assert make_schedule(50.0, 1000, arrival, burstiness, seed=4).offsets_ns != first.offsets_ns


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_offsets_are_ns_from_the_start_non_decreasing_and_one_gap_in(arrival: str) -> None:
    schedule = make_schedule(1000.0, 500, arrival, 2.0 if arrival == "gamma" else 1.0, seed=1)
    offsets = schedule.offsets_ns
    assert schedule.count == 500 and all(isinstance(t, int) for t in offsets)
    assert offsets[0] > 0
    assert list(offsets) == sorted(offsets)


def test_constant_gaps_are_exactly_one_over_the_rate() -> None:
    schedule = make_schedule(RATE, 1000, "constant")
    assert schedule.offsets_ns[:3] == (5_000_000, 10_000_000, 15_000_000)
    assert schedule.scheduled_qps == pytest.approx(RATE)


def test_poisson_gaps_are_exponential_with_mean_one_over_the_rate() -> None:
    gaps = gaps_s("poisson")
    mean = 1 / RATE
    assert gaps.mean() == pytest.approx(mean, rel=0.01)
    assert gaps.var() == pytest.approx(mean**2, rel=0.03)  # exponential: variance = mean^2
    # Memoryless: the share of gaps longer than the mean is e^-1.
    assert (gaps > mean).mean() == pytest.approx(np.exp(-1), abs=0.005)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_gaps_keep_the_mean_and_spread_as_one_over_burstiness(burstiness: float) -> None:
    gaps = gaps_s("gamma", burstiness)
    mean = 1 / RATE
    assert gaps.mean() == pytest.approx(mean, rel=0.01)
    # Gamma with shape k and scale mean/k: squared coefficient of variation 1/k.
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1 / burstiness, rel=0.05)


def test_gamma_with_burstiness_one_is_poisson_in_distribution() -> None:
    gamma, poisson = np.sort(gaps_s("gamma", 1.0, seed=1)), np.sort(gaps_s("poisson", seed=2))
    quantiles = [0.1, 0.5, 0.9, 0.99]
    assert np.quantile(gamma, quantiles) == pytest.approx(np.quantile(poisson, quantiles), rel=0.05)


def test_the_realized_rate_is_the_schedules_own() -> None:
    schedule = make_schedule(RATE, 400, "poisson", seed=11)
    span_s = (schedule.offsets_ns[-1] - schedule.offsets_ns[0]) / 1e9
    assert schedule.scheduled_qps == pytest.approx(399 / span_s)
    assert schedule.scheduled_qps == pytest.approx(RATE, rel=0.2)
    assert make_schedule(RATE, 1).scheduled_qps is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_qps": 0}, "arrival rate must be a positive number"),
        ({"rate_qps": -5.0}, "got -5.0"),
        ({"rate_qps": float("nan")}, "arrival rate"),
        ({"rate_qps": float("inf")}, "arrival rate"),
        ({"count": 0}, "at least 1 request; got 0"),
        ({"arrival": "pareto"}, "arrival must be one of poisson, constant, gamma; got 'pareto'"),
        ({"arrival": "gamma", "burstiness": 0}, "burstiness must be a positive number"),
        ({"arrival": "gamma", "burstiness": -1.0}, "burstiness must be a positive number"),
        ({"arrival": "poisson", "burstiness": 2.0}, "burstiness applies to gamma arrivals only"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_values_are_one_line_user_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"rate_qps": 10.0, "count": 10, **kwargs}
    with pytest.raises(UserError, match=message) as caught:
        make_schedule(**args)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
