"""Whether the load generator kept its own schedule: a run it could not drive is `harness-limited`,
which is not a result and never an engine's FAIL.

No anchor checks this. LoadGen assumes its issuing thread keeps up, and perf_analyzer warns
only when its measurement windows disagree. AIPerf found that event-loop timers round
sub-millisecond sleeps, so its offered rate came out silently lower than asked. On a machine
with two vCPUs, the dispatcher competes with the engine's own threads for the CPU. A run is
harness-limited when either holds:

- **dispatch lag**: the 99th percentile of (sent - scheduled) exceeds `lag_fraction` of the
  SLO (default 5%). Latency is counted from the scheduled time, so a late send is charged to
  the engine. A lag this large is a visible part of the latency the verdict judges.
- **sent rate**: the rate the dispatcher really sent at, (count - 1) over the span of send
  times, falls short of the schedule's own realized rate by more than `rate_tolerance`
  (default 2%). Both rates come from the same requests, so the comparison has no sampling noise;
  a shortfall means the last sends went out late by that share of the run. The 2% default is
  below the peak search's default resolution (5%, inferbench.serve.peak): a shortfall within it
  cannot move a measured peak by a search step.

The check compares against the realized rate, not the nominal one: a Poisson schedule of n
requests offers its nominal rate only to within about 1/sqrt(n) (inferbench.serve.schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inferbench.serve.run import ServeRun, rate_text

#: The dispatch lag's p99 may be at most this share of the SLO.
LAG_FRACTION = 0.05
#: The sent rate may fall short of the scheduled rate by at most this share.
RATE_TOLERANCE = 0.02


@dataclass(frozen=True)
class HarnessCheck:
    """How well the dispatcher kept the schedule, and whether the run is harness-limited
    (`reason` says why; empty when it is not)."""

    lag_p99_ms: float
    lag_max_ms: float
    lag_limit_ms: float
    scheduled_qps: float | None
    sent_qps: float | None
    lag_exceeded: bool
    rate_short: bool
    reason: str

    @property
    def limited(self) -> bool:
        return self.lag_exceeded or self.rate_short

    @property
    def rate_shortfall(self) -> float | None:
        """1 - sent / scheduled rate (negative: sent faster); None when either is unknown."""
        if self.scheduled_qps is None or self.sent_qps is None:
            return None
        return 1 - self.sent_qps / self.scheduled_qps


def check_harness(
    run: ServeRun,
    slo_ms: float,
    *,
    lag_fraction: float = LAG_FRACTION,
    rate_tolerance: float = RATE_TOLERANCE,
) -> HarnessCheck:
    """Judge the dispatcher's own timing in `run` against an SLO of `slo_ms`."""
    lags_ms = np.asarray(run.dispatch_lags_ns, dtype=np.float64) / 1e6
    lag_p99 = float(np.percentile(lags_ms, 99)) if lags_ms.size else 0.0
    lag_limit = lag_fraction * slo_ms
    scheduled, sent = run.scheduled_qps, run.sent_qps
    reasons = []
    lag_exceeded = lag_p99 > lag_limit
    rate_short = scheduled is not None and sent is not None and sent < scheduled * (1 - rate_tolerance)
    if lag_exceeded:
        reasons.append(
            f"dispatch lag p99 {lag_p99:.3g} ms exceeds {lag_fraction:.0%} of the {slo_ms:g} ms SLO "
            f"({lag_limit:.3g} ms)"
        )
    if rate_short and sent is not None and scheduled is not None:  # (both are, when short)
        reasons.append(
            f"sent {rate_text(sent)} requests/s, short of the scheduled {rate_text(scheduled)} by more than "
            f"{rate_tolerance:.0%}"
        )
    return HarnessCheck(
        lag_p99_ms=lag_p99,
        lag_max_ms=float(lags_ms.max()) if lags_ms.size else 0.0,
        lag_limit_ms=lag_limit,
        scheduled_qps=scheduled,
        sent_qps=sent,
        lag_exceeded=lag_exceeded,
        rate_short=rate_short,
        reason="; ".join(reasons),
    )
