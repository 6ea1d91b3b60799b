"""Open-loop arrival schedules: when each request is due, drawn before the run from a seed.

A schedule is the list of send times, as nanosecond offsets from the run's start, fixed before
the first request goes out, as MLPerf LoadGen's Server scenario does (its `schedule_rng_seed`
draws the whole Poisson schedule up front so the load never depends on how the system under test
behaves). Nothing in the run changes it: a slow engine makes requests late, never fewer.

Three distributions of the gap between consecutive requests, all with mean `1 / rate`:

- `poisson` (the default): exponential gaps, LoadGen's Server scenario and Triton
  perf_analyzer's `--request-distribution poisson`;
- `constant`: every gap exactly `1 / rate` (perf_analyzer's `constant`, AIPerf's `constant`);
- `gamma`: gamma gaps with shape `burstiness` and scale `1 / (rate * burstiness)`, the
  parametrisation of vLLM's `bench serve --burstiness` and AIPerf's gamma arrival pattern.
  Shape 1 is the exponential (Poisson); below 1 requests bunch into bursts, above 1 they are
  more even. The gaps' squared coefficient of variation is `1 / burstiness`.

Unlike vLLM, the gaps are not rescaled afterwards so that the run lasts exactly
`count / rate`: rescaling would tie every gap to the sum of the others. The realized rate of a
finite schedule therefore differs from the nominal one by sampling noise (about
`1 / sqrt(count)` for Poisson); `ArrivalSchedule.scheduled_qps` is the realized one, and the
harness check (inferbench.serve.harness) compares the sent rate against it, not against the
nominal rate.

The first request is due one gap after the start (LoadGen's schedule starts the same way), so
a Poisson schedule's offsets are the arrival times of a Poisson process started at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inferbench.errors import UserError

ARRIVALS = ("poisson", "constant", "gamma")
DEFAULT_ARRIVAL = "poisson"


@dataclass(frozen=True)
class ArrivalSchedule:
    """The send times of one run: `offsets_ns[i]` is when request i is due, in ns from the run's
    start; non-decreasing. `rate_qps`, `arrival`, `burstiness` and `seed` say how it was drawn."""

    rate_qps: float
    arrival: str
    burstiness: float
    seed: int
    offsets_ns: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.offsets_ns)

    @property
    def scheduled_qps(self) -> float | None:
        """The rate this schedule really offers: (count - 1) / (last due - first due); None with
        fewer than two requests or when all fall at one instant."""
        if self.count < 2 or self.offsets_ns[-1] == self.offsets_ns[0]:
            return None
        return (self.count - 1) / ((self.offsets_ns[-1] - self.offsets_ns[0]) / 1e9)


def make_schedule(
    rate_qps: float,
    count: int,
    arrival: str = DEFAULT_ARRIVAL,
    burstiness: float = 1.0,
    seed: int = 0,
) -> ArrivalSchedule:
    """`count` requests at a mean of `rate_qps` per second, gaps drawn from `arrival` with the
    generator seeded by `seed`: the same arguments always give the same schedule.

    Raises UserError, with one line naming the bad value, for a rate that is not a positive
    finite number, fewer than one request, an unknown distribution, a burstiness that is not
    positive, a burstiness other than 1 for a distribution that has none, or a negative seed."""
    _check(rate_qps, count, arrival, burstiness, seed)
    gaps_s = _gaps(np.random.default_rng(seed), rate_qps, count, arrival, burstiness)
    offsets = np.rint(np.cumsum(gaps_s) * 1e9).astype(np.int64)
    return ArrivalSchedule(
        rate_qps=float(rate_qps),
        arrival=arrival,
        burstiness=float(burstiness),
        seed=seed,
        offsets_ns=tuple(int(t) for t in offsets),
    )


def _gaps(rng: np.random.Generator, rate: float, count: int, arrival: str, burstiness: float) -> np.ndarray:
    mean = 1.0 / rate
    if arrival == "constant":
        return np.full(count, mean)
    if arrival == "poisson":
        return rng.exponential(mean, count)
    return rng.gamma(shape=burstiness, scale=mean / burstiness, size=count)


def _check(rate_qps: float, count: int, arrival: str, burstiness: float, seed: int) -> None:
    if not _positive(rate_qps):
        raise UserError(f"arrival rate must be a positive number of requests per second; got {rate_qps!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"a schedule needs at least 1 request; got {count!r}")
    if arrival not in ARRIVALS:
        raise UserError(f"arrival must be one of {', '.join(ARRIVALS)}; got {arrival!r}")
    if not _positive(burstiness):
        raise UserError(f"burstiness must be a positive number (1 = Poisson); got {burstiness!r}")
    if arrival != "gamma" and burstiness != 1:
        raise UserError(f"burstiness applies to gamma arrivals only; got {burstiness!r} with {arrival}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"schedule seed must be a non-negative integer; got {seed!r}")


def _positive(value: float) -> bool:
    """A positive finite real number (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0
