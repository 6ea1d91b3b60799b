"""The peak search: bracket by doubling or halving, bisect, bounded trials; and on a replayed
engine with a fixed service time it finds the knee queueing theory predicts."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from inferbench.errors import UserError
from inferbench.serve.peak import find_peak
from inferbench.serve.schedule import make_schedule
from inferbench.serve.simulate import simulate
from inferbench.serve.verdict import FAIL, HARNESS_LIMITED, PASS, UNDECIDED, RateVerdict, judge

MS = 1_000_000
Measure = Callable[[float], RateVerdict]


@dataclass(frozen=True)
class Outcome:
    outcome: str


def threshold(knee: float, above: str = FAIL, limited_from: float = math.inf) -> Callable[[float], Outcome]:
    """A cell that passes up to `knee` requests/s; the dispatcher cannot drive `limited_from`."""

    def measure_at(rate: float) -> Outcome:
        if rate >= limited_from:
            return Outcome(HARNESS_LIMITED)
        return Outcome(PASS if rate <= knee else above)

    return measure_at


def test_it_doubles_to_a_bracket_then_bisects_to_the_resolution() -> None:
    peak = find_peak(threshold(37.0), start_qps=5.0)
    assert [t.rate_qps for t in peak.trials][:5] == [5, 10, 20, 40, 20 * math.sqrt(2)]
    low, high = peak.interval
    assert low is not None and high is not None
    assert low <= 37 < high <= low * 1.05
    assert peak.max_qps_at_slo == low and peak.upper_outcome == FAIL and not peak.harness_limited


def test_a_search_out_of_time_keeps_what_it_found() -> None:
    allowed = iter([True] * 5 + [False])  # five trials fit the time left, the sixth does not
    peak = find_peak(threshold(37.0), start_qps=5.0, can_try=lambda rate: next(allowed))
    assert peak.cut_short and [t.rate_qps for t in peak.trials] == [5, 10, 20, 40, 20 * math.sqrt(2)]
    assert peak.interval == (20 * math.sqrt(2), 40) and peak.upper_outcome == FAIL
    nothing = find_peak(threshold(37.0), start_qps=5.0, can_try=lambda rate: False)
    assert nothing.cut_short and nothing.trials == () and nothing.interval == (None, None)
    assert not find_peak(threshold(37.0), start_qps=5.0, can_try=lambda rate: True).cut_short


def test_it_halves_from_a_start_above_the_knee() -> None:
    peak = find_peak(threshold(7.0, above=UNDECIDED), start_qps=100.0)
    assert [t.rate_qps for t in peak.trials][:5] == [100, 50, 25, 12.5, 6.25]
    assert peak.max_qps_at_slo is not None and peak.max_qps_at_slo <= 7 < peak.max_qps_at_slo * 1.05
    assert peak.upper_outcome == UNDECIDED  # undecided is not a pass


def test_it_stays_below_a_rate_the_harness_cannot_drive_and_says_so() -> None:
    peak = find_peak(threshold(1000.0, limited_from=60.0), start_qps=10.0)
    assert peak.max_qps_at_slo is not None and 57 < peak.max_qps_at_slo < 60
    assert peak.upper_outcome == HARNESS_LIMITED and peak.harness_limited


def test_the_number_of_trials_is_bounded() -> None:
    peak = find_peak(threshold(1000.0), start_qps=1.0, max_trials=6)
    assert len(peak.trials) == 6
    assert peak.interval == (32.0, None)  # never failed: the peak is at least the last pass


def test_nothing_passing_stops_at_the_floor() -> None:
    peak = find_peak(threshold(0.0), start_qps=16.0)
    assert [t.rate_qps for t in peak.trials] == [16, 8, 4, 2, 1]  # the default floor, start / 16
    assert peak.max_qps_at_slo is None and peak.first_unmet_qps == 1


def test_everything_passing_stops_at_the_ceiling() -> None:
    peak = find_peak(threshold(1e9), start_qps=10.0, max_qps=70.0)
    assert [t.rate_qps for t in peak.trials] == [10, 20, 40, 70]
    assert peak.interval == (70.0, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_qps": 0}, "start rate must be a positive"),
        ({"start_qps": float("nan")}, "start rate must be a positive"),
        ({"max_trials": 0}, "at least 1 trial"),
        ({"resolution": 0}, "resolution must be between 0 and 1"),
    ],
)
def test_bad_search_settings_are_user_errors(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"start_qps": 10.0, **kwargs}
    with pytest.raises(UserError, match=message):
        find_peak(threshold(5.0), **args)  # type: ignore[arg-type]


def md1_wait_cdf(t: float, rho: float) -> float:
    """P(W <= t) in an M/D/1 queue, service time 1, load rho (Erlang's formula):
    (1 - rho) * sum_{k=0}^{floor t} [rho (k - t)]^k / k! * exp(-rho (k - t))."""
    return (1 - rho) * sum(
        (rho * (k - t)) ** k / math.factorial(k) * math.exp(-rho * (k - t)) for k in range(math.floor(t) + 1)
    )


def md1_knee(service_ms: float, slo_ms: float, percentile: float = 0.99) -> float:
    """The rate at which the `percentile` of latency (wait + service) equals the SLO."""
    wait = slo_ms / service_ms - 1
    low, high = 1e-6, 1 - 1e-9
    for _ in range(100):
        rho = (low + high) / 2
        low, high = (rho, high) if md1_wait_cdf(wait, rho) >= percentile else (low, rho)
    return low * 1000 / service_ms


def replayed(service_ms: float, slo_ms: float, arrival: str, slots: int = 1) -> Measure:
    """Each trial: 20,000 requests replayed through `slots` servers taking `service_ms` each."""

    def measure_at(rate: float) -> RateVerdict:
        schedule = make_schedule(rate, 20_000, arrival, seed=1)
        run = simulate(schedule.offsets_ns, lambda size: round(service_ms * MS), slots=slots)
        return judge(run, slo_ms)

    return measure_at


def test_the_knee_formula() -> None:
    # Light load waits little; at rho -> 1 the wait has no bound.
    assert md1_wait_cdf(0.0, 0.3) == pytest.approx(0.7)
    assert md1_wait_cdf(4.0, 0.1) > 0.9999 > md1_wait_cdf(4.0, 0.9)


def test_the_search_finds_the_md1_knee() -> None:
    # Poisson arrivals, one slot, 10 ms per request, p99 <= 50 ms: the knee is at 56.1 requests/s
    # (rho 0.561). A pass must be established at 99% confidence, so the peak found sits a few
    # percent below the knee, never above it by more than the search's resolution.
    knee = md1_knee(10.0, 50.0)
    assert knee == pytest.approx(56.08, abs=0.01)
    peak = find_peak(replayed(10.0, 50.0, "poisson"), start_qps=20.0)
    assert peak.max_qps_at_slo is not None and peak.first_unmet_qps is not None
    assert 0.88 * knee <= peak.max_qps_at_slo <= knee
    assert peak.first_unmet_qps <= 1.05 * knee
    assert len(peak.trials) <= 12


def test_the_search_finds_the_dd2_knee() -> None:
    # Constant arrivals, two slots, 10 ms per request: latency stays 10 ms up to 200 requests/s,
    # beyond it the queue grows without bound.
    peak = find_peak(replayed(10.0, 50.0, "constant", slots=2), start_qps=30.0)
    assert peak.max_qps_at_slo is not None and peak.first_unmet_qps is not None
    assert peak.max_qps_at_slo <= 200.5 < peak.first_unmet_qps
    assert peak.max_qps_at_slo >= 0.95 * 200
