"""When a timed loop has measured enough: the interval of its answer is as narrow as asked.

The answer a user reads is the median latency (or, in throughput mode, the counted rate). The
loop stops once the 95% interval of that answer is within `precision` of it (a relative
half-width, default 1%), checked only at geometrically spaced sample counts: each look is
`GROWTH` times the previous one. Looking after every iteration would let noise end the loop at
a lucky moment and inflate the error rate; with geometric looks there are only about a dozen
looks between 20 and 100,000 samples, and the rule's stopping depends on the interval's
width, which is nearly independent of where the median falls. tests/test_stoprule.py checks
the coverage on simulated streams (about 95% of intervals contain the true median).

The median's interval is the distribution-free one from order statistics (the binomial
argument: the true median lies between the j-th and k-th of n sorted samples with
probability ~95%), so it needs no bootstrap inside the loop.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Z95 = 1.959963984540054
#: Each look at the data is this many times the previous sample count.
GROWTH = 1.5


def median_interval(sorted_samples: Sequence[float]) -> tuple[float, float]:
    """95% distribution-free interval of the median of already sorted samples."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    half = Z95 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half) - 1)
    high = min(n - 1, math.ceil(n / 2 + half))
    return float(sorted_samples[low]), float(sorted_samples[high])


def median_half_width(samples: Sequence[float]) -> float:
    """Relative half-width of the median's 95% interval (inf when it cannot be told)."""
    ordered = sorted(samples)
    if len(ordered) < 8:
        return math.inf
    middle = statistics.median(ordered)
    if middle <= 0:
        return math.inf
    low, high = median_interval(ordered)
    return max(middle - low, high - middle) / middle


def mean_half_width(values: Sequence[float]) -> float:
    """Relative half-width of the 95% interval of a mean (t-interval; for per-slice rates)."""
    n = len(values)
    if n < 3:
        return math.inf
    mean = sum(values) / n
    if mean <= 0:
        return math.inf
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return _t95(n - 1) * math.sqrt(var / n) / mean


# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom (beyond: an expansion).
_T95 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.306,
    2.2622,
    2.2281,
    2.201,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.093,
    2.086,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)


def _t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile without importing scipy in the timed loop."""
    if dof <= len(_T95):
        return _T95[dof - 1]
    z = Z95  # Cornish-Fisher expansion, within 0.1% from 30 degrees of freedom on
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def next_look(count: int, first: int) -> int:
    """The sample count at which to look next, after a look at `count` samples."""
    return max(first, math.ceil(max(count, 1) * GROWTH))


class PrecisionRule:
    """Tracks the looks of one timed loop: `due(n)` says whether to look at n samples, and
    `met(samples)` whether the median's interval is narrow enough (recording the width)."""

    def __init__(self, precision: float, first: int) -> None:
        self.precision = precision
        self.first = max(first, 8)
        self._next = self.first
        self.looks = 0
        self.half_width = math.inf

    def due(self, count: int) -> bool:
        return self.precision > 0 and count >= self._next

    def met(self, samples: Sequence[float]) -> bool:
        self.looks += 1
        self._next = next_look(len(samples), self.first)
        self.half_width = median_half_width(samples)
        return self.half_width <= self.precision
