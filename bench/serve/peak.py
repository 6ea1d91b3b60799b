"""The peak: the highest offered rate at which a cell still meets its latency SLO, found by a
bounded search over rates, each trial judged by inferbench.serve.verdict.

LoadGen's Server scenario reports the same quantity ("maximum Poisson throughput parameter
supported"), but leaves the search to the submitter, one run per target QPS. Triton
perf_analyzer's `--binary-search` with `--latency-threshold` bisects a request-rate range the
user bounds. Here the search brackets the knee by doubling (or halving) from a start rate, then
bisects the bracket geometrically, since rates span orders of magnitude. It stops when the
bracket is within `resolution` (default 5%) or after `max_trials` trials:

- a trial that passes raises the lower end; any other outcome lowers the upper end.
  UNDECIDED is not a pass: LoadGen counts a run that does not satisfy early stopping as
  invalid. HARNESS_LIMITED is not a pass either: above a rate the dispatcher cannot drive,
  nothing can be measured, so the search stays below it and says so (`upper_outcome`);
- with nothing passing down to `min_qps` (default start / 16), the engine misses the SLO
  nearly idle. Lower rates would only lengthen trials; latency mode says why;
- with everything passing up to `max_qps`, the peak is at least `max_qps`;
- when `can_try(rate)` says a trial at the next rate would not fit the time left (the cell's
  timeout), the search ends with what it has (`cut_short`), rather than losing every trial to
  the timeout.

The search assumes that a higher rate never passes where a lower one failed. That holds for
the expected latency; a noisy verdict near the knee can break it, which only moves the answer
within the last bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from inferbench.errors import UserError
from inferbench.serve.verdict import HARNESS_LIMITED, PASS


class Verdict(Protocol):
    """What the search reads from a trial's verdict (inferbench.serve.verdict.RateVerdict)."""

    @property
    def outcome(self) -> str: ...


@dataclass(frozen=True)
class Trial:
    """One rate tried and its verdict."""

    rate_qps: float
    verdict: Verdict


@dataclass(frozen=True)
class Peak:
    """The search's answer: `max_qps_at_slo`, the highest rate that passed (None: none did),
    `first_unmet_qps`, the lowest rate above it that did not (None: none was found), why that
    one did not (`upper_outcome`), and every trial in the order run."""

    max_qps_at_slo: float | None
    first_unmet_qps: float | None
    upper_outcome: str | None
    trials: tuple[Trial, ...]
    cut_short: bool = False  # ended by `can_try`, not by the resolution or the trial budget

    @property
    def interval(self) -> tuple[float | None, float | None]:
        """(last pass, first rate above it that did not pass): the peak lies between."""
        return self.max_qps_at_slo, self.first_unmet_qps

    @property
    def harness_limited(self) -> bool:
        """The upper end is where the dispatcher could not keep up, not where the engine failed."""
        return self.upper_outcome == HARNESS_LIMITED


def find_peak(
    measure_at: Callable[[float], Verdict],
    start_qps: float,
    *,
    max_trials: int = 12,
    resolution: float = 0.05,
    min_qps: float | None = None,
    max_qps: float | None = None,
    can_try: Callable[[float], bool] | None = None,
) -> Peak:
    """Search for the highest rate whose verdict passes, calling `measure_at(rate)` at most
    `max_trials` times (each call runs a trial at that rate and judges it), and only while
    `can_try(rate)` allows a trial at that rate."""
    _check(start_qps, max_trials, resolution)
    floor = start_qps / 16 if min_qps is None else min_qps
    trials: list[Trial] = []

    def passes(rate: float) -> bool:
        if can_try is not None and not can_try(rate):
            raise _OutOfTime
        trials.append(Trial(rate, measure_at(rate)))
        return trials[-1].verdict.outcome == PASS

    low: float | None = None
    high: float | None = None
    cut_short = False
    try:
        low, high = _bracket(passes, start_qps, max_trials, floor, max_qps)
        while (
            low is not None
            and high is not None
            and len(trials) < max_trials
            and high > low * (1 + resolution)
        ):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if passes(middle) else (low, middle)
    except _OutOfTime:  # interrupted mid-bracket or mid-bisection: the bracket from the trials run
        cut_short = True
        low = max((t.rate_qps for t in trials if t.verdict.outcome == PASS), default=None)
        high = min(
            (t.rate_qps for t in trials if t.verdict.outcome != PASS and (low is None or t.rate_qps > low)),
            default=None,
        )
    upper = next((t.verdict.outcome for t in trials if t.rate_qps == high), None)
    return Peak(low, high, upper, tuple(trials), cut_short)


class _OutOfTime(Exception):
    """`can_try` refused the next trial."""


def _bracket(
    passes: Callable[[float], bool],
    rate: float,
    max_trials: int,
    floor: float,
    ceiling: float | None,
) -> tuple[float | None, float | None]:
    """Double from `rate` while it passes, halve while it does not, until one of each is seen
    (or the floor, ceiling or trial budget is reached): (highest pass, lowest non-pass)."""
    low: float | None = None
    high: float | None = None
    for _ in range(max_trials):
        if passes(rate):
            low = rate
            if high is not None or (ceiling is not None and rate >= ceiling):
                break
            rate = rate * 2 if ceiling is None else min(rate * 2, ceiling)
        else:
            high = rate
            if low is not None or rate <= floor:
                break
            rate = max(rate / 2, floor)
    return low, high


def _check(start_qps: float, max_trials: int, resolution: float) -> None:
    if isinstance(start_qps, bool) or not isinstance(start_qps, int | float) or not 0 < start_qps < math.inf:
        raise UserError(f"the peak search's start rate must be a positive requests/s; got {start_qps!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise UserError(f"the peak search needs at least 1 trial; got {max_trials!r}")
    if not 0 < resolution < 1:
        raise UserError(f"the peak search's resolution must be between 0 and 1; got {resolution!r}")
