"""From an estimated change and its uncertainty to a verdict, for `compare` and `ab` alike.

Every comparison ends as one estimate per cell and metric: the change on the log scale,
oriented so that positive is worse (slower latency, fewer samples/s), its standard error and
degrees of freedom. Where it comes from differs (paired rounds in `ab`, Welch across
processes, a bootstrap over iterations); what it means does not. A gate asks one question,
"is the new side slower by more than the threshold?", so both answers are one-sided tests
against the threshold, never against zero (a real but allowed 2% change must not fail a gate
with a 5% budget, and a faster cell must not keep a gate from passing):

- **regression** (FAIL): "slower by more than the threshold" is significant: after Holm's
  correction over all gating tests (`decide`), or at the sequential boundary with alpha split
  over the gating tests (`decide_sequential`, `ab`).
- **no change** (PASS, non-inferiority): the upper bound of the interval lies below
  1 + threshold: not slower by more than the threshold. The cell may well be faster.
- **improvement** (PASS too): the mirror image of a regression (faster by more than the
  threshold), reported, never blocking.
- **inconclusive**: none of these; the interval is too wide to decide at the threshold (or
  the cell was disturbed, or has too few clean rounds).

The p-values come from a t (or normal) distribution, so unlike a bootstrap's they have no
floor at 1/(resamples+1): one cell 50% slower among hundreds gets a p-value of 1e-10, which
survives the correction. Holm controls the family-wise error rate at alpha and, for one bad
cell among m, needs p < alpha/m: its power for a large effect stays close to 1.

The minimum detectable effect (MDE) of a cell is the slowdown it would flag 80% of the time
given its observed noise: log(1 + threshold) + (t[1 - alpha/m] + t[0.8]) x se.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from inferbench.compare.sequential import Looks, nominal_level

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no change"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REGRESSION, IMPROVEMENT, NO_CHANGE, INCONCLUSIVE)
POWER = 0.8


@dataclass(frozen=True)
class Estimate:
    """A change on the log scale (positive = worse) with its standard error."""

    worse_log: float
    se: float
    df: float = math.inf  # inf: normal approximation (bootstrap standard error)
    n: int = 0

    def __post_init__(self) -> None:
        if not self.se >= 0:
            raise ValueError(f"standard error must be >= 0; got {self.se}")


@dataclass(frozen=True)
class Decision:
    verdict: str
    worse_ratio: float  # exp(worse_log): > 1 is worse
    ci_low: float  # interval of worse_ratio
    ci_high: float
    mde_pct: float  # smallest slowdown flagged with 80% power, in %
    p_value: float  # one-sided, H0: slowdown <= threshold (before correction)
    q_value: float  # adjusted p_value: a regression exactly when below alpha


# scipy.special, not scipy.stats: the same functions without the per-call argument checks
# (the sequential looks call these for every cell after every round).


def t_quantile(q: float, df: float) -> float:
    from scipy.special import ndtri, stdtrit

    return float(ndtri(q) if not math.isfinite(df) else stdtrit(df, q))


def f_quantile(q: float, dfn: float, dfd: float) -> float:
    from scipy.special import fdtri

    return float(fdtri(dfn, dfd, q))


def t_isf(level: float, df: float) -> float:
    """The critical value a one-sided test at `level` needs (by symmetry, exact for tiny levels)."""
    return -t_quantile(level, df)


def t_sf(x: float, df: float) -> float:
    from scipy.special import ndtr, stdtr

    return float(ndtr(-x) if not math.isfinite(df) else stdtr(df, -x))


def one_sided_p(estimate: Estimate, bound: float) -> float:
    """P-value of H0: worse_log <= bound against H1: worse_log > bound."""
    if estimate.se == 0:
        return 0.0 if estimate.worse_log > bound else 1.0
    return t_sf((estimate.worse_log - bound) / estimate.se, estimate.df)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _verdict(regressed: bool, improved: bool, high: float, bound: float) -> str:
    """The one-sided reading: a significant slowdown fails; an upper bound below the
    threshold passes, as an improvement when significantly faster."""
    if regressed:
        return REGRESSION
    if high < bound:
        return IMPROVEMENT if improved else NO_CHANGE
    return INCONCLUSIVE


_NOTHING = Decision(INCONCLUSIVE, *(float("nan"),) * 6)


def decide(
    estimates: Sequence[Estimate | None],
    thresholds: Sequence[float],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> list[Decision]:
    """Verdicts for one family of tests (corrected together, Holm); None = no usable estimate."""
    if len(estimates) != len(thresholds):
        raise ValueError("one threshold per estimate")
    usable = [i for i, e in enumerate(estimates) if e is not None]
    m = max(1, len(usable))
    p_worse = {i: one_sided_p(estimates[i], math.log1p(thresholds[i])) for i in usable}  # type: ignore[arg-type]
    p_better = {
        i: one_sided_p(_flipped(estimates[i]), math.log1p(thresholds[i]))  # type: ignore[arg-type]
        for i in usable
    }
    q_worse = dict(zip(usable, holm([p_worse[i] for i in usable]), strict=True))
    q_better = dict(zip(usable, holm([p_better[i] for i in usable]), strict=True))
    decisions = []
    for i, estimate in enumerate(estimates):
        if estimate is None:
            decisions.append(_NOTHING)
            continue
        bound = math.log1p(thresholds[i])
        half = t_quantile(0.5 + confidence / 2, estimate.df) * estimate.se
        low, high = estimate.worse_log - half, estimate.worse_log + half
        verdict = _verdict(bool(q_worse[i] < alpha), bool(q_better[i] < alpha), high, bound)
        mde = bound + (t_quantile(1 - alpha / m, estimate.df) + t_quantile(POWER, estimate.df)) * estimate.se
        decisions.append(
            Decision(
                verdict,
                math.exp(estimate.worse_log),
                math.exp(low),
                math.exp(high),
                100 * math.expm1(mde),
                p_worse[i],
                float(q_worse[i]),
            )
        )
    return decisions


def decide_sequential(
    estimates: Sequence[Estimate | None],
    thresholds: Sequence[float],
    looks: Sequence[Looks | None],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> list[Decision]:
    """Verdicts for one family of tests looked at round after round (`ab`), each at its
    latest look (`inferbench.compare.sequential`). The regression test of each estimate spends
    alpha/m (Bonferroni over the m tests of the family: Holm's step-down has no simple
    sequential form), so the family-wise rate of false regressions stays at most alpha however
    the cells stopped. The interval is the repeated confidence interval at `confidence`, and
    a cell passes when its upper bound is below 1 + threshold: the chance of passing a cell
    slower than that is at most (1 - confidence) / 2 per cell, at any look. `q_value` is the
    p-value scaled so that it is below alpha exactly when the boundary is crossed. Looks None:
    one look at the end (a fixed-sample test); no look yet (()): inconclusive."""
    if not len(estimates) == len(thresholds) == len(looks):
        raise ValueError("one threshold and one set of looks per estimate")
    m = max(1, len(estimates))
    decisions = []
    for estimate, threshold, seen in zip(estimates, thresholds, looks, strict=True):
        if estimate is None:
            decisions.append(_NOTHING)
            continue
        if seen == ():  # not looked at yet: nothing is decided between looks
            decisions.append(replace(_NOTHING, worse_ratio=math.exp(estimate.worse_log)))
            continue
        seen = seen or ((max(estimate.n, 2), 1.0),)
        fail_level = nominal_level(alpha / m, seen)
        fail_t = t_isf(fail_level, estimate.df)
        half = t_isf(nominal_level((1 - confidence) / 2, seen), estimate.df) * estimate.se
        bound, w, se = math.log1p(threshold), estimate.worse_log, estimate.se
        p_worse = one_sided_p(estimate, bound)
        verdict = _verdict(w - fail_t * se > bound, w + fail_t * se < -bound, w + half, bound)
        decisions.append(
            Decision(
                verdict,
                math.exp(w),
                _exp(w - half),
                _exp(w + half),
                100 * (_exp(bound + (fail_t + t_quantile(POWER, estimate.df)) * se) - 1),
                p_worse,
                min(1.0, p_worse * alpha / fail_level) if fail_level > 0 else 1.0,
            )
        )
    return decisions


def _exp(x: float) -> float:
    """exp that reads an overflow as inf: an early look's interval can be astronomically wide."""
    return math.exp(x) if x < 700 else math.inf


def _flipped(estimate: Estimate) -> Estimate:
    return Estimate(-estimate.worse_log, estimate.se, estimate.df, estimate.n)


#: Share of rounds trimmed from each end of the per-round ratios (`paired_estimate`).
TRIM = 0.2
#: Rounds from which the ratios are trimmed (8: one trimmed from each end, 5 degrees of freedom).
TRIM_FROM = 8


def paired_estimate(
    base: Sequence[float], new: Sequence[float], higher_is_better: bool, trim: float = TRIM
) -> Estimate | None:
    """Paired rounds (`ab`): the trimmed mean of the per-round log ratios and its standard
    error from the winsorized spread (Yuen's paired test; t with h-1 df, h the rounds kept).

    Pairing removes what both sides of a round share (the machine's state at that moment); the
    spread of the per-round ratios is the noise that is left. Trimming is for the rest: on a
    shared 2-vCPU machine about one round in ten comes out 20-50% off on one side with nothing
    the interference probe can see (a process that landed badly), and one such round in ten
    triples a plain mean's standard error. The 20% trimmed mean ignores up to two such rounds
    in ten and costs little power on clean, normal rounds. Fewer than `TRIM_FROM` rounds are not
    trimmed (a plain paired t): trimming one of five would leave 2 degrees of freedom, and a
    cell with more clean rounds would be harder to decide than one with fewer."""
    b, n = np.log(np.asarray(base, dtype=np.float64)), np.log(np.asarray(new, dtype=np.float64))
    if len(b) != len(n):
        raise ValueError("paired samples must have the same length")
    diff = np.sort((b - n) if higher_is_better else (n - b))
    diff = diff[np.isfinite(diff)]
    k = len(diff)
    if k < 2:
        return None
    g = int(trim * k) if k >= TRIM_FROM else 0
    kept = k - 2 * g
    winsorized = np.clip(diff, diff[g], diff[k - 1 - g])
    se = float(winsorized.std(ddof=1)) * math.sqrt(k - 1) / math.sqrt(kept * (kept - 1))
    return Estimate(float(diff[g : k - g].mean()), se, kept - 1, k)


def welch_estimate(base: Sequence[float], new: Sequence[float], higher_is_better: bool) -> Estimate | None:
    """Independent processes (a `--repeats` run vs another): Welch on log values."""
    b, n = np.log(np.asarray(base, dtype=np.float64)), np.log(np.asarray(new, dtype=np.float64))
    if len(b) < 2 or len(n) < 2:
        return None
    vb, vn = b.var(ddof=1) / len(b), n.var(ddof=1) / len(n)
    se = math.sqrt(vb + vn)
    df = (vb + vn) ** 2 / (vb**2 / (len(b) - 1) + vn**2 / (len(n) - 1)) if se > 0 else math.inf
    diff = float(b.mean() - n.mean()) if higher_is_better else float(n.mean() - b.mean())
    return Estimate(diff, se, df, len(b) + len(n))


def decide_count(base: Sequence[float], new: Sequence[float], threshold: float) -> Decision:
    """Counted work (instructions per call, `inferbench.ab.counters`): no noise model and no
    alpha. A count that repeats exactly has no spread to test against (a t-test on zero spread
    is undefined), so the decision is the ratio of the medians against the threshold, widened
    by the spread the batches did show: the interval runs from the head's lower quartile over
    the base's upper one to the head's upper quartile over the base's lower one (zero width when
    each side counted the same every time; quartiles, not extremes, because one batch in
    several can carry the allocator's occasional heap consolidation). FAIL when its low end is
    above 1 + threshold, PASS when its high end is below, inconclusive in between."""
    b, n = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if len(b) == 0 or len(n) == 0 or not (b > 0).all() or not (n > 0).all():
        return _NOTHING
    b_low, b_mid, b_high = np.percentile(b, (25, 50, 75))
    n_low, n_mid, n_high = np.percentile(n, (25, 50, 75))
    ratio, low, high = float(n_mid / b_mid), float(n_low / b_high), float(n_high / b_low)
    bound = 1 + threshold
    verdict = _verdict(low > bound, high < 1 / bound, math.log(high), math.log(bound))
    # The smallest slowdown this spread cannot hide: the threshold widened by the spread.
    mde = 100 * (bound * high / low - 1)
    return Decision(verdict, ratio, low, high, mde, float("nan"), float("nan"))
