"""The change-point detector on synthetic series: steps found where they are, nothing on flat
series, and `--check`'s "newest point starts a step for the worse" rule."""

from __future__ import annotations

import numpy as np

from inferbench.history.changepoints import change_points, new_regression, noise_floor, steps


def _noisy(rng: np.random.Generator, n: int, noise: float = 0.02) -> np.ndarray:
    return 10.0 * (1 + noise * rng.standard_normal(n))


def test_a_3pct_step_in_2pct_noise_is_found_within_a_few_points() -> None:
    found = 0
    for seed in range(50):
        x = _noisy(np.random.default_rng(seed), 50)
        x[30:] *= 1.03
        found += any(abs(c - 30) <= 3 for c in change_points(x))
    assert found >= 40  # 80%+ of series with 20 points after the step; ~88% measured over 200


def test_a_flat_series_has_no_change_points() -> None:
    alarms = sum(bool(change_points(_noisy(np.random.default_rng(100 + seed), 60))) for seed in range(50))
    assert alarms <= 3
    assert change_points([5.0] * 30) == []  # identical values: nothing, not noise-sized steps


def test_a_clean_step_is_located_exactly_with_its_direction() -> None:
    x = _noisy(np.random.default_rng(7), 40, noise=0.005)
    x[25:] *= 1.05
    (step,) = steps(x, higher_is_worse=True)
    assert step.index == 25 and step.worse and abs(step.change - 0.05) < 0.01
    (faster,) = steps(x, higher_is_worse=False)  # throughput up is better
    assert not faster.worse


def test_too_short_or_unusable_series_give_nothing() -> None:
    assert change_points([1.0, 2.0, 3.0]) == []
    assert change_points([1.0, float("nan"), 1.0, 1.0, 2.0]) == []


def test_newest_point_starting_a_large_step_is_a_regression() -> None:
    x = list(_noisy(np.random.default_rng(3), 30, noise=0.01))
    assert new_regression(x, higher_is_worse=True) is None
    slower = [*x, x[-1] * 1.2]
    step = new_regression(slower, higher_is_worse=True)
    assert step is not None and step.index == 30 and step.change > 0.15
    assert new_regression([*x, x[-1] * 0.8], higher_is_worse=True) is None  # faster: fine
    assert new_regression(slower, higher_is_worse=True, min_change=0.5) is None  # below the floor


def test_a_step_is_reported_once_not_every_night_after() -> None:
    x = list(_noisy(np.random.default_rng(4), 30, noise=0.01))
    nights = [*x, *(v * 1.2 for v in _noisy(np.random.default_rng(5), 3, noise=0.01))]
    verdicts = [new_regression(nights[:n], True) is not None for n in range(31, len(nights) + 1)]
    assert verdicts == [True, False, False]


def test_noise_floor_comes_from_the_intervals() -> None:
    values = [10.0, 10.0, 10.0]
    assert abs(noise_floor(values, [9.8] * 3, [10.2] * 3) - 0.2 / 1.96 / 10) < 1e-9
    assert noise_floor(values, None, None) == 1e-4
