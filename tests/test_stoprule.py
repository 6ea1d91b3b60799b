"""The precision stop rule: interval widths, geometric looks, and its error rate on simulated
latency streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferbench.cell.stoprule import PrecisionRule, mean_half_width, median_half_width, median_interval


def test_median_interval_brackets_the_median_and_narrows() -> None:
    rng = np.random.default_rng(0)
    small = np.sort(rng.normal(100, 5, 100))
    large = np.sort(rng.normal(100, 5, 10_000))
    lo_s, hi_s = median_interval(small)
    lo_l, hi_l = median_interval(large)
    assert lo_s < np.median(small) < hi_s
    assert lo_l < np.median(large) < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5  # ~sqrt(100) narrower


def test_half_widths_unknown_on_too_few_samples() -> None:
    assert median_half_width([1.0, 2.0]) == math.inf
    assert mean_half_width([1.0, 1.0]) == math.inf
    assert mean_half_width([10.0, 10.0, 10.0]) == 0.0


def test_t_quantile_close_to_scipy() -> None:
    from scipy import stats

    from inferbench.cell.stoprule import _t95

    for dof in (2, 5, 19, 30, 31, 100, 1000):
        assert _t95(dof) == pytest.approx(stats.t.ppf(0.975, dof), rel=0.002)


def _run(rule: PrecisionRule, draw, limit: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples: list[float] = []
    while len(samples) < limit:
        samples.append(draw())
        if rule.due(len(samples)) and rule.met(samples):
            break
    return samples


def test_stops_early_on_a_stable_stream_and_runs_on_when_noisy() -> None:
    rng = np.random.default_rng(1)
    stable = _run(PrecisionRule(0.01, 20), lambda: 10.0 + rng.normal(0, 0.05), 100_000)
    noisy_rule = PrecisionRule(0.01, 20)
    noisy = _run(noisy_rule, lambda: 10.0 * rng.lognormal(0, 0.6), 2_000)
    assert len(stable) < 100
    assert len(noisy) == 2_000 and noisy_rule.half_width > 0.01  # would need far more samples
    assert noisy_rule.looks < 15  # geometric looks, not one per iteration


def test_rule_is_off_at_zero_precision() -> None:
    rule = PrecisionRule(0.0, 20)
    assert not rule.due(1_000_000)


def test_coverage_holds_on_simulated_streams() -> None:
    """Stopped by the rule, the reported interval contains the true median ~95% of the time."""
    rng = np.random.default_rng(7)
    true_median = 10.0  # lognormal(mu=log 10, sigma) has median exactly 10
    trials, covered = 400, 0
    for _ in range(trials):
        rule = PrecisionRule(0.01, 20)
        samples = _run(rule, lambda: float(rng.lognormal(math.log(true_median), 0.15)), 50_000)
        lo, hi = median_interval(sorted(samples))
        covered += lo <= true_median <= hi
    assert 0.91 <= covered / trials <= 0.99
