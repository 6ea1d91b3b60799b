"""Change-points in a metric's history, and whether the newest point starts a regression.

The detector is ruptures' PELT (Killick, Fearnhead & Eckley 2012, "Optimal detection of
changepoints with a linear computational cost") on the l2 cost, through `KernelCPD` with a
linear kernel, which is ruptures' C implementation of the same search. PELT finds the
segmentation minimising cost + penalty x segments exactly; the penalty is BIC-like,
PENALTY_FACTOR x 2 sigma^2 ln(n), with sigma the series' own point-to-point noise (a robust
estimate from successive differences, never below the points' own interval widths). Why
ruptures and not an E-Divisive package: docs/history.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Scales the BIC penalty: 1.0 found a 3% step in 2% noise more often but flagged ~15% of flat
# 40-point series; 1.5 keeps false alarms near 5% (measured: inferbench.tools.changepoint_eval).
PENALTY_FACTOR = 1.5
# `history --check` asks once per cell per night, so it is stricter: with 2.0 a flat cell fails
# about 1 night in 300 (docs/history.md has the rates); a 10% step is still seen at once.
CHECK_PENALTY_FACTOR = 2.0
MIN_POINTS = 4  # fewer points than this cannot show a step against noise
# `--check` judges a series only from this many points on: below it the noise estimate rests
# on a handful of differences, and a flat 10-point series already fails 4% of nights.
MIN_CHECK_POINTS = 8
NOISE_FLOOR = 1e-4  # relative; identical values would otherwise make every wiggle a step
SAME_STEP = 2  # points: a step found again this far from where it was is the same step

Values = Sequence[float] | npt.NDArray[np.floating]


@dataclass(frozen=True)
class Metric:
    """A history metric: its column, interval columns, and which direction is worse."""

    name: str
    column: str
    ci_low: str | None
    ci_high: str | None
    higher_is_worse: bool
    label: str


METRICS = {
    "p50": Metric(
        "p50", "latency_p50_ms", "latency_p50_ci_low_ms", "latency_p50_ci_high_ms", True, "p50 latency (ms)"
    ),
    "p90": Metric("p90", "latency_p90_ms", None, None, True, "p90 latency (ms)"),
    "p99": Metric("p99", "latency_p99_ms", None, None, True, "p99 latency (ms)"),
    "mean": Metric("mean", "latency_mean_ms", None, None, True, "mean latency (ms)"),
    "throughput": Metric(
        "throughput",
        "throughput_sps",
        "throughput_ci_low_sps",
        "throughput_ci_high_sps",
        False,
        "throughput (samples/s)",
    ),
}


@dataclass(frozen=True)
class Step:
    """A change-point: the segment starting at `index` against the one before it."""

    index: int
    before: float
    after: float
    worse: bool

    @property
    def change(self) -> float:
        """Relative change of the segment means, e.g. 0.03 for 3% higher."""
        return self.after / self.before - 1 if self.before else math.inf


def noise_floor(values: Values, ci_low: Sequence[float] | None, ci_high: Sequence[float] | None) -> float:
    """The points' own relative noise: the median half-width of their 95% intervals / 1.96."""
    if ci_low is None or ci_high is None:
        return NOISE_FLOOR
    x, low, high = (np.asarray(v, dtype=float) for v in (values, ci_low, ci_high))
    widths = (high - low) / 2 / 1.96 / x
    widths = widths[np.isfinite(widths) & (widths > 0)]
    return max(float(np.median(widths)), NOISE_FLOOR) if widths.size else NOISE_FLOOR


def change_points(
    values: Values, floor: float = NOISE_FLOOR, penalty_factor: float = PENALTY_FACTOR
) -> list[int]:
    """Indices where a new segment starts (never 0); [] for a series too short to tell."""
    import ruptures as rpt

    x = np.asarray(values, dtype=float)
    if x.size < MIN_POINTS or not np.all(np.isfinite(x)) or np.median(x) <= 0:
        return []
    relative = x / np.median(x)
    sigma = 1.4826 * float(np.median(np.abs(np.diff(relative)))) / math.sqrt(2)
    sigma = max(sigma, floor, NOISE_FLOOR)
    penalty = penalty_factor * 2 * sigma**2 * math.log(x.size)
    # min_size=1: the newest point alone may start a segment, so a large step is seen at once.
    ends = rpt.KernelCPD(kernel="linear", min_size=1).fit(relative.reshape(-1, 1)).predict(pen=penalty)
    return [int(i) for i in ends[:-1]]


def steps(
    values: Values,
    higher_is_worse: bool,
    floor: float = NOISE_FLOOR,
    penalty_factor: float = PENALTY_FACTOR,
) -> list[Step]:
    """The change-points of a series with the segment means on either side."""
    x = np.asarray(values, dtype=float)
    bounds = [0, *change_points(x, floor, penalty_factor), x.size]
    means = [float(x[a:b].mean()) for a, b in itertools.pairwise(bounds)]
    found = []
    for i, start in enumerate(bounds[1:-1]):
        before, after = means[i], means[i + 1]
        found.append(Step(start, before, after, worse=(after > before) == higher_is_worse))
    return found


def new_regression(
    values: Values,
    higher_is_worse: bool,
    min_change: float = 0.01,
    floor: float = NOISE_FLOOR,
    penalty_factor: float = CHECK_PENALTY_FACTOR,
) -> Step | None:
    """The step for the worse that the newest point starts, if any.

    "Starts" means: the newest point lies in a segment that is worse than the one before it
    by at least `min_change`, and that step was not there before the newest point arrived
    (a large step is seen at the newest point itself, a small one a few points later; either
    way it is reported once, on the night it becomes visible)."""
    if len(values) < MIN_CHECK_POINTS:
        return None
    found = steps(values, higher_is_worse, floor, penalty_factor)
    if not found:
        return None
    last = found[-1]
    if not last.worse or abs(last.change) < min_change:
        return None
    earlier = steps(values[:-1], higher_is_worse, floor, penalty_factor)
    if any(s.worse and abs(s.index - last.index) <= SAME_STEP for s in earlier):
        return None
    return last
