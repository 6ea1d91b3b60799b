"""Rounds of two sides measured in turn, and the paired ratio between them (the crosscheck's
arithmetic, kept apart from the processes it starts so tests can feed it fake measurements).

The sides alternate as `ab`'s rounds do: ours first in even rounds, theirs first in odd ones,
so a machine that drifts during a round favours neither side on average. Each round gives one
ratio (ours / theirs) from two measurements taken minutes apart at most; the rounds' log
ratios give the interval, Student's t over rounds (not a bootstrap: with the 3-10 rounds a
crosscheck affords, a percentile bootstrap of the mean is too narrow, and t's assumption of
roughly normal log ratios is a mild one for ratios of two medians).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

OURS, THEIRS = "ours", "theirs"
SIDES = (OURS, THEIRS)
CONFIDENCE = 0.95
#: How the interval is computed, in words for the CSV's `interval` column.
METHOD = "t over rounds (log ratios)"

Measurement = dict[str, float]


def side_order(round_index: int) -> tuple[str, str]:
    """Ours then theirs in even rounds, theirs then ours in odd ones (ab's ABBA order)."""
    return SIDES if round_index % 2 == 0 else (THEIRS, OURS)


def interleave(
    rounds: int, measure: Mapping[str, Callable[[int], Measurement]]
) -> dict[str, list[Measurement]]:
    """Run `rounds` rounds, each side once per round in `side_order`; per side, its rounds'
    measurements in round order (so index k of both lists is one pair)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; got {rounds}")
    found: dict[str, list[Measurement]] = {side: [] for side in SIDES}
    for k in range(rounds):
        for side in side_order(k):
            found[side].append(measure[side](k))
    return found


@dataclass(frozen=True)
class PairedRatio:
    """The geometric mean of the rounds' ours/theirs ratios and its interval (NaN with one
    round: one pair says nothing about the next)."""

    ratio: float
    low: float
    high: float
    rounds: int

    @property
    def half_width_pct(self) -> float:
        """Half the interval's width, in % of the ratio (log scale, so symmetric)."""
        if math.isnan(self.low):
            return math.nan
        return 100 * (math.sqrt(self.high / self.low) - 1)

    def inside(self, target_pct: float) -> bool:
        """The whole interval lies within 1 ± target: the two tools agree to that much."""
        bound = target_pct / 100
        return not math.isnan(self.low) and self.low >= 1 - bound and self.high <= 1 + bound


def paired_ratio(
    ours: Sequence[float], theirs: Sequence[float], confidence: float = CONFIDENCE
) -> PairedRatio:
    """Round k's ratio is ours[k] / theirs[k]; rounds where either side has no number are left
    out (a pair or nothing)."""
    from scipy.stats import t

    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} rounds of ours against {len(theirs)} of theirs")
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=True) if a > 0 and b > 0 and math.isfinite(a * b)]
    if not pairs:
        return PairedRatio(math.nan, math.nan, math.nan, 0)
    logs = np.log([a / b for a, b in pairs])
    centre = float(logs.mean())
    if len(logs) < 2:
        return PairedRatio(math.exp(centre), math.nan, math.nan, 1)
    half = float(t.ppf((1 + confidence) / 2, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    return PairedRatio(math.exp(centre), math.exp(centre - half), math.exp(centre + half), len(logs))
