"""The verdict at one offered rate: does the engine keep the p99 latency within the SLO, with
confidence, and what it served meanwhile.

PASS is decided by MLPerf LoadGen's early-stopping rule for the Server scenario
(loadgen/early_stopping.cc, results.cc; the appendix "Early Stopping Criterion" of
mlcommons/inference_policies' inference_rules.adoc). Count the t queries over the bound. The
run passes once it holds at least `min_queries(t)` queries. That count is t plus the smallest h
for which a system that meets the bound only `p - d` of the time would show t or fewer
over-bound queries in h + t with probability below 1 - c:

    I(p - d; h, t + 1) < 1 - c        (I: the regularized incomplete beta function)

LoadGen uses c = 0.99 and d = 0, and so do we. With no query over the bound, the 99th
percentile needs 459 queries (0.99^h < 0.01). LoadGen's own output prints the rest of its
table: 662 queries for one over the bound at the 99th percentile, 64 at the 90th, and 12,571 with
100 over the bound at the 99th ("would need to run at least 12471 more queries").
tests/test_serve_verdict.py checks these. Like LoadGen, a pass also needs the measured
percentile itself within the bound.

FAIL is the same test mirrored; LoadGen has none, since it only reports a run invalid. A system
that meets the bound exactly p of the time would show t or more over-bound queries in n with
probability below 1 - c. Neither holds: UNDECIDED, with LoadGen's count of how many more queries
would pass it if all of them met the bound.

The rule treats queries as independent trials. Under load they are not: one slow stretch delays
every request queued behind it, so over-bound queries come in runs, and the binomial
confidence is optimistic near the bound. LoadGen accepts the same. The peak search
(inferbench.serve.peak) only needs verdicts that are right away from the knee.

A harness-limited run (inferbench.serve.harness) is HARNESS_LIMITED when the dispatcher's
slip could have decided the outcome; then the engine is neither passed nor failed. It could not
have in two cases, and there the engine's verdict stands, with the harness's note in its reason:

- FAIL, when the engine's own part of each latency (completion minus the *actual* send, the
  dispatch lag taken out) fails the bound with confidence too. A late dispatcher only delays
  and thins the load, so the engine failed at a load no heavier than the one offered. On a
  2-vCPU machine this is the usual case above the knee: the engine's threads hold both cores
  and the dispatcher wakes late because the engine is saturated, not the other way round.
- PASS, when the dispatcher sent the whole rate (no shortfall) and only its lag was large:
  the lag is inside the latencies that met the bound, so it only made the pass harder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inferbench.errors import UserError
from inferbench.serve.harness import LAG_FRACTION, RATE_TOLERANCE, HarnessCheck, check_harness
from inferbench.serve.run import ServeRun

PASS = "pass"
FAIL = "fail"
UNDECIDED = "undecided"
HARNESS_LIMITED = "harness-limited"
OUTCOMES = (PASS, FAIL, UNDECIDED, HARNESS_LIMITED)
#: LoadGen's Server scenario: the 99th percentile, at 99% confidence.
PERCENTILE = 0.99
CONFIDENCE = 0.99


def min_queries(overlatency: int, percentile: float = PERCENTILE, confidence: float = CONFIDENCE) -> int:
    """The fewest queries that establish `percentile` within the bound when `overlatency` of
    them exceeded it (LoadGen's h + t)."""
    from scipy.special import betainc

    def passes(h: int) -> bool:
        return float(betainc(h, overlatency + 1, percentile)) < 1 - confidence

    low, high = 1, 64
    while not passes(high):
        low, high = high + 1, high * 2
    while low < high:  # the smallest passing h: passes() is monotone in h
        mid = (low + high) // 2
        low, high = (low, mid) if passes(mid) else (mid + 1, high)
    return low + overlatency


def exceeded(
    queries: int, overlatency: int, percentile: float = PERCENTILE, confidence: float = CONFIDENCE
) -> bool:
    """Whether `overlatency` of `queries` over the bound shows, with `confidence`, that the
    bound holds less than `percentile` of the time."""
    from scipy.special import betainc

    if overlatency == 0:
        return False
    # P(X >= t) for X ~ Binomial(n, 1 - p): the chance a just-passing system shows this many.
    tail = float(betainc(overlatency, queries - overlatency + 1, 1 - percentile))
    return tail < 1 - confidence


@dataclass(frozen=True)
class EarlyStop:
    """The early-stopping rule's answer for a set of latencies: PASS, FAIL or UNDECIDED."""

    outcome: str
    queries: int
    overlatency: int
    needed: int  # min_queries(overlatency): how many queries would pass with this many over

    @property
    def more_queries(self) -> int:
        """UNDECIDED: how many more queries it needs, if every one met the bound (else 0)."""
        return max(0, self.needed - self.queries) if self.outcome == UNDECIDED else 0


def early_stopping(
    latencies_ns: Sequence[int] | np.ndarray,
    slo_ns: int,
    percentile: float = PERCENTILE,
    confidence: float = CONFIDENCE,
) -> EarlyStop:
    """LoadGen's Server-scenario rule on `latencies_ns` against a bound of `slo_ns`."""
    values = np.asarray(latencies_ns, dtype=np.int64)
    over = int(np.count_nonzero(values > slo_ns))
    needed = min_queries(over, percentile, confidence)
    within = values.size > 0 and float(np.percentile(values, 100 * percentile)) <= slo_ns
    if values.size >= needed and within:
        outcome = PASS
    elif exceeded(values.size, over, percentile, confidence):
        outcome = FAIL
    else:
        outcome = UNDECIDED
    return EarlyStop(outcome, int(values.size), over, needed)


def tail_bound_ns(
    latencies_ns: Sequence[int], percentile: float = PERCENTILE, confidence: float = CONFIDENCE
) -> int | None:
    """LoadGen's early-stopping percentile estimate: the latency the `percentile` stays within
    with `confidence`: the t-th largest latency, t being the most over-bound queries the count
    allows; None while there are too few queries (LoadGen's "not enough queries processed")."""
    ordered = np.sort(np.asarray(latencies_ns, dtype=np.int64))
    n = int(ordered.size)
    if n < min_queries(1, percentile, confidence):
        return None
    # The most over-bound queries n allows: min_queries grows with them, so search for it.
    low, high = 1, n
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if min_queries(mid, percentile, confidence) <= n else (low, mid - 1)
    return int(ordered[n - low])


@dataclass(frozen=True)
class RateVerdict:
    """One rate's verdict, the latency percentiles behind it, and what was served."""

    outcome: str  # one of OUTCOMES
    reason: str
    slo_ms: float
    percentile: float
    confidence: float
    queries: int
    overlatency: int
    more_queries: int  # UNDECIDED: LoadGen's count of further queries, all within the SLO
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    offered_qps: float | None  # the schedule's realized rate
    achieved_qps: float  # completions per second, from the schedule's start to the last one
    goodput_qps: float  # completions within the SLO per second, over the same time
    mean_batch: float
    harness: HarnessCheck


def judge(
    run: ServeRun,
    slo_ms: float,
    *,
    percentile: float = PERCENTILE,
    confidence: float = CONFIDENCE,
    lag_fraction: float = LAG_FRACTION,
    rate_tolerance: float = RATE_TOLERANCE,
) -> RateVerdict:
    """The verdict on `run` against a `percentile` latency bound of `slo_ms`."""
    _check(slo_ms, percentile, confidence, run)
    latencies = np.asarray(run.latencies_ns, dtype=np.int64)
    stop = early_stopping(latencies, round(slo_ms * 1e6), percentile, confidence)
    harness = check_harness(run, slo_ms, lag_fraction=lag_fraction, rate_tolerance=rate_tolerance)
    p50, p90, p99, p999 = (float(v) / 1e6 for v in np.percentile(latencies, [50, 90, 99, 99.9]))
    wall = run.wall_s
    outcome, reason = stop.outcome, _reason(stop, slo_ms, percentile)
    if harness.limited and not _stands(stop, run, harness, slo_ms, percentile, confidence):
        outcome, reason = HARNESS_LIMITED, harness.reason
    elif harness.limited:
        reason = f"{reason}; it stands although {harness.reason}"
        if outcome == FAIL:
            reason += ": the engine's own time from each send fails the bound too"
    return RateVerdict(
        outcome=outcome,
        reason=reason,
        slo_ms=slo_ms,
        percentile=percentile,
        confidence=confidence,
        queries=stop.queries,
        overlatency=stop.overlatency,
        more_queries=stop.more_queries,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        offered_qps=run.scheduled_qps,
        achieved_qps=run.count / wall if wall > 0 else float("nan"),
        goodput_qps=(run.count - stop.overlatency) / wall if wall > 0 else float("nan"),
        mean_batch=run.count / sum(1 / size for size in run.batch_sizes),  # requests per engine call
        harness=harness,
    )


def _stands(
    stop: EarlyStop, run: ServeRun, harness: HarnessCheck, slo_ms: float, percentile: float, confidence: float
) -> bool:
    """Whether the engine's verdict holds although the harness slipped (see the module's note)."""
    if stop.outcome == PASS:
        return not harness.rate_short
    if stop.outcome == FAIL:
        own = np.asarray(run.end_ns, dtype=np.int64) - np.asarray(run.sent_ns, dtype=np.int64)
        return early_stopping(own, round(slo_ms * 1e6), percentile, confidence).outcome == FAIL
    return False


def _reason(stop: EarlyStop, slo_ms: float, percentile: float) -> str:
    label = f"p{100 * percentile:g} <= {slo_ms:g} ms"
    over = f"{stop.overlatency} of {stop.queries} over the SLO"
    if stop.outcome == PASS:
        return f"{label} established: {over} (early stopping needs {stop.needed} queries)"
    if stop.outcome == FAIL:
        return f"{label} exceeded with confidence: {over}"
    return f"{label} not established: {over}; needs at least {stop.more_queries} more queries within it"


def _check(slo_ms: float, percentile: float, confidence: float, run: ServeRun) -> None:
    if isinstance(slo_ms, bool) or not isinstance(slo_ms, int | float) or not 0 < slo_ms < math.inf:
        raise UserError(f"slo_ms must be a positive number of milliseconds; got {slo_ms!r}")
    if not 0 < percentile < 1:
        raise UserError(f"the SLO's percentile must be between 0 and 1; got {percentile!r}")
    if not 0 < confidence < 1:
        raise UserError(f"the SLO's confidence must be between 0 and 1; got {confidence!r}")
    if run.count == 0:
        raise ValueError("a serve run without requests has no verdict")
