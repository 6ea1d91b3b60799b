"""A serve cell inside its worker: each batching policy's peak rate at the SLO, on the real
engine, through the engine-agnostic serve room (inferbench.serve).

The engine is prepared, checked and its inputs are in its own format, at every merged batch
size (`b * batch_size` for b in 1..max_batch), before anything here starts; nothing is converted
inside a trial. Per cell:

1. which merged sizes the engine runs (`Backend.variable_batch`, then one call at each size
   outside the timed region): a policy that needs a size the engine cannot run is skipped with
   its reason, never an error;
2. a warm-up and a closed-loop burst (every request due at once, no batching) through the same
   dispatcher and slots: its completion rate is the saturated rate, and half of it the peak
   search's start (unless `serve.start_qps` says);
3. per policy, `find_peak(measure_at)`: `measure_at(rate)` draws the seeded schedule, runs it
   through `serve` and judges it. The engine is driven through its own asynchronous API where
   the backend has one (`Backend.async_api`, `submit`: OpenVINO's AsyncInferQueue) unless
   `serve.engine_api = "slots"`, else with a `SlotEngine` (each slot's thread calls
   `enter_stream` once, then `run_on(slot, inputs)` + `synchronize` per batch); an UNDECIDED trial is run
   again with the queries it lacked, up to `serve.query_cap`. The interference probe covers
   every trial's window, as it covers the other modes' timed loops.

The search keeps to the cell's timeout: the time to 80% of `measure.timeout_seconds` (counted
from the cell's start) is shared by the policies still to search, and a trial, or an
UNDECIDED trial's extension, that would end after its policy's share is not begun, and
the search reports what it found so far (`cut_short` in the policy's entry; an unextended trial
stays UNDECIDED), rather than the runner killing the worker and every trial with it.

A trial lasts `queries / rate` seconds, so the search's floor is kept where a trial takes at
most `measure.max_seconds`; an engine whose single request already takes longer than the SLO
is not searched at all (latency mode says why).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferbench.cell.interference import InterferenceProbe, Thresholds
from inferbench.cell.stats import summarize
from inferbench.config import MeasureConfig, ServeConfig
from inferbench.errors import first_line
from inferbench.serve.dispatch import AsyncEngine, Done, Engine, SlotEngine, serve
from inferbench.serve.peak import Peak, find_peak
from inferbench.serve.run import NO_BATCHING, BatchPolicy, ServeRun, rate_text
from inferbench.serve.schedule import make_schedule
from inferbench.serve.verdict import HARNESS_LIMITED, UNDECIDED, RateVerdict, judge
from inferbench.store.record import CellRecord, as_record

log = logging.getLogger(__name__)

#: Requests per slot in the closed-loop burst that sets the search's start rate.
BURST_PER_SLOT = 20
#: The share of the cell's timeout the peak searches may use, from the cell's start.
TIMEOUT_SHARE = 0.8


@dataclass(frozen=True)
class ServeResult:
    """The serve cell's record fields, and why it is harness-limited (None: it is not)."""

    record: CellRecord
    harness_reason: str | None
    details: dict[str, Any]  # merged into the row's details: what set the search's start


def largest_batch(backend: Any, natives: dict[int, list[Any]], batch_size: int) -> tuple[int, str]:
    """The most requests the prepared engine can merge into one call (1..), and why not more
    ("" when every size asked for runs). One untimed call at each merged size decides."""
    largest = 1
    for size in sorted(natives):
        requests = size // batch_size
        if requests == 1:
            continue
        if not backend.variable_batch:
            return largest, f"{backend.name} is prepared for one batch size; it cannot merge requests"
        try:
            backend.run_on(0, natives[size][0])
            backend.synchronize()
        except Exception as exc:  # the engine's word on this size; a smaller policy still runs
            return largest, f"{backend.name} cannot run a merged batch of {size}: {first_line(exc)}"[:300]
        largest = requests
    return largest, ""


def serve_policies(
    backend: Any,
    natives: dict[int, list[Any]],
    batch_size: int,
    measure: MeasureConfig,
    serve_config: ServeConfig,
    started: float | None = None,
) -> ServeResult:
    """Serve mode: every batching policy's peak rate at the SLO; the row reports the best.
    `started`: time.perf_counter() when the cell began (its timeout counts from there; None:
    from now)."""
    assert serve_config.slo_ms is not None  # SweepConfig refuses a serve cell without one
    largest, why_not = largest_batch(backend, natives, batch_size)
    engine, engine_api = _engine(backend, natives, batch_size, serve_config.engine_api)
    probe = InterferenceProbe(Thresholds(measure.interference_max_pct, measure.steal_max_pct))
    warm = _warm_up(engine, measure)
    burst = serve([0] * (BURST_PER_SLOT * engine.slots), engine, NO_BATCHING)
    saturated_qps = burst.count / burst.wall_s
    alone_ms = float(np.median(burst.service_ns)) / 1e6
    start = serve_config.start_qps or saturated_qps / 2
    queries = serve_config.trial_queries
    # A trial lasts queries / rate seconds: rates below queries / max_seconds take too long. The
    # start rate is tried whatever it costs, or a slow engine's search would begin past its
    # saturation (minilm at 2 vCPUs: saturated at 41/s, but 662 queries in 15 s start at 44/s).
    floor = min(start, max(start / 16, queries / measure.max_seconds))
    plan: list[tuple[BatchPolicy, str | None]] = []  # each policy, and why it is skipped (None: searched)
    for max_batch, max_wait in itertools.product(serve_config.max_batch, serve_config.max_wait_ms):
        # A batch of one closes with its first request: the wait never applies, so max_batch 1
        # is one policy, no batching, recorded with no wait.
        if max_batch == 1 and max_wait != serve_config.max_wait_ms[0]:
            plan.append(
                (BatchPolicy(1, float(max_wait)), "max_batch 1 never waits: run once, as no batching")
            )
            continue
        policy = BatchPolicy(max_batch, float(max_wait) if max_batch > 1 else 0.0)
        if max_batch > largest:
            plan.append((policy, why_not))
        elif alone_ms > serve_config.slo_ms:
            plan.append(
                (
                    policy,
                    f"one request takes {alone_ms:.3g} ms (median, {engine.slots} slots busy), "
                    f"over the {serve_config.slo_ms:g} ms SLO before any queueing",
                )
            )
        else:
            plan.append((policy, None))
    deadline = _deadline(measure, started)
    policies = []
    for index, (policy, skipped) in enumerate(plan):
        if skipped is not None:
            policies.append(_skipped(policy, skipped))
            continue
        # The time left is shared by the policies still to search, so the last is not starved.
        searched_after = sum(1 for _, why in plan[index + 1 :] if why is None)
        trial = _Trials(engine, policy, serve_config, probe, _fits(deadline, 1 + searched_after))
        peak = find_peak(
            trial.measure_at,
            start,
            max_trials=serve_config.max_trials,
            min_qps=floor,
            can_try=trial.can_try,
        )
        policies.append(_policy_entry(policy, peak, trial.verdicts))
    best = max(policies, key=lambda p: p["max_qps_at_slo"] or 0.0)  # first of equals: the smallest policy
    # With no policy passing, none is best: the row names no policy, and its first unmet rate is
    # the lowest any policy was shown not to meet.
    passed = best["max_qps_at_slo"] is not None
    unmet = [p["first_unmet_qps"] for p in policies if p["first_unmet_qps"] is not None]
    record = as_record(
        {
            **probe.result(),
            "warmup_iterations": warm,
            "streams": engine.slots,
            "slo_ms": serve_config.slo_ms,
            "serve_percentile": serve_config.percentile,
            "arrival": serve_config.arrival,
            "burstiness": serve_config.burstiness,
            "max_qps_at_slo": best["max_qps_at_slo"],
            "max_qps_first_unmet": best["first_unmet_qps"] if passed else min(unmet, default=None),
            "serve_upper_outcome": best["upper_outcome"],
            "best_max_batch": best["max_batch"] if passed else None,
            "best_max_wait_ms": best["max_wait_ms"] if passed else None,
            "serve_harness_limited": best["upper_outcome"] == HARNESS_LIMITED,
            "serve_policies": [{k: v for k, v in p.items() if k != "_peak_run"} for p in policies],
            **_at_peak(best, batch_size),
        }
    )
    details = {
        "serve": {
            "saturated_qps": saturated_qps,
            "alone_ms": alone_ms,
            "start_qps": start,
            "floor_qps": floor,
            "engine_api": engine_api,
        }
    }
    return ServeResult(record, _harness_reason(policies), details)


def _deadline(measure: MeasureConfig, started: float | None) -> float:
    """When the searches must be done (time.perf_counter): TIMEOUT_SHARE of the cell's timeout,
    counted from the cell's start (a shared worker runs several cells, so not from the
    process's; the interpreter's own start is within the margin)."""
    return (time.perf_counter() if started is None else started) + TIMEOUT_SHARE * measure.timeout_seconds


def _fits(deadline: float, sharing: int) -> Callable[[float, int], bool]:
    """`fits(rate, queries)` for a policy that shares the time to `deadline` with `sharing - 1`
    policies after it: whether a trial of `queries` at `rate` ends within its share."""
    own = time.perf_counter() + (deadline - time.perf_counter()) / sharing

    def fits(rate: float, queries: int) -> bool:
        return time.perf_counter() + queries / rate <= own

    return fits


def _engine(
    backend: Any, natives: dict[int, list[Any]], batch_size: int, engine_api: str
) -> tuple[Engine, str]:
    """The engine as the dispatcher drives it, and how: through the backend's own asynchronous
    API where it has one and `engine_api` allows it, else slot threads calling the blocking run."""
    slots = max(1, backend.stream_count())
    turns = [itertools.count() for _ in range(slots)]  # each slot cycles through the input sets

    def inputs(slot: int, requests: int) -> Any:
        sets = natives[requests * batch_size]
        return sets[next(turns[slot]) % len(sets)]

    if backend.async_api and engine_api == "auto":

        def submit(slot: int, requests: int, done: Done) -> None:
            backend.submit(slot, inputs(slot, requests), done)

        return AsyncEngine(submit, slots), f"{backend.async_api}, {slots} in flight"

    def call(slot: int, requests: int) -> None:
        backend.run_on(slot, inputs(slot, requests))
        backend.synchronize()

    return SlotEngine(call, slots, backend.enter_stream), f"{slots} slot thread(s) calling the blocking run"


def _warm_up(engine: Engine, measure: MeasureConfig) -> int:
    """Closed-loop bursts through every slot until the warm-up's minimums are met."""
    done, t0 = 0, time.perf_counter()
    while done < max(1, measure.warmup_iterations) or time.perf_counter() - t0 < measure.warmup_seconds:
        run = serve([0] * (BURST_PER_SLOT * engine.slots), engine, NO_BATCHING)
        done += run.count
        if time.perf_counter() - t0 > measure.warmup_max_seconds:
            break
    return done


class _Trials:
    """`measure_at(rate)` for one policy, keeping every verdict and the run behind it."""

    def __init__(
        self,
        engine: Engine,
        policy: BatchPolicy,
        config: ServeConfig,
        probe: InterferenceProbe,
        fits: Callable[[float, int], bool],
    ):
        self.engine, self.policy, self.config, self.probe, self.fits = engine, policy, config, probe, fits
        self.verdicts: list[tuple[float, RateVerdict, ServeRun]] = []

    def queries_at(self, rate: float) -> int:
        """A trial's requests: the early-stopping minimum, and at least `min_seconds` of arrivals."""
        return max(self.config.trial_queries, math.ceil(rate * self.config.min_seconds))

    def can_try(self, rate: float) -> bool:
        return self.fits(rate, self.queries_at(rate))

    def measure_at(self, rate: float) -> RateVerdict:
        config = self.config
        count = self.queries_at(rate)
        cap = max(config.query_cap, count)
        while True:
            schedule = make_schedule(rate, count, config.arrival, config.burstiness, config.seed)
            self.probe.start()
            try:
                run = serve(schedule.offsets_ns, self.engine, self.policy)
            finally:
                self.probe.stop()
            assert config.slo_ms is not None
            verdict = judge(run, config.slo_ms, percentile=config.percentile)
            # LoadGen's count of what an UNDECIDED run lacks: run it again that much longer.
            if verdict.outcome != UNDECIDED or not verdict.more_queries or count >= cap:
                break
            longer = min(cap, count + verdict.more_queries)
            if not self.fits(rate, longer):  # the cell's timeout: keep the UNDECIDED verdict
                log.info(
                    "serve %s at %.4g/s: no time left to extend the trial to %d", self.policy, rate, longer
                )
                break
            count = longer
        log.info("serve %s at %.4g/s: %s (%s)", self.policy, rate, verdict.outcome, verdict.reason)
        self.verdicts.append((rate, verdict, run))
        return verdict


def _trial_entry(rate: float, verdict: RateVerdict) -> dict[str, Any]:
    return {
        "rate_qps": rate,
        "outcome": verdict.outcome,
        "reason": verdict.reason,
        "queries": verdict.queries,
        "p50_ms": verdict.p50_ms,
        "p90_ms": verdict.p90_ms,
        "p99_ms": verdict.p99_ms,
        "p999_ms": verdict.p999_ms,
        "achieved_qps": verdict.achieved_qps,
        "goodput_qps": verdict.goodput_qps,
        "dispatch_lag_p99_ms": verdict.harness.lag_p99_ms,
        "mean_batch": verdict.mean_batch,
    }


def _policy_entry(
    policy: BatchPolicy, peak: Peak, verdicts: list[tuple[float, RateVerdict, ServeRun]]
) -> dict[str, Any]:
    at_peak = next((run for rate, _, run in verdicts if rate == peak.max_qps_at_slo), None)
    if peak.max_qps_at_slo is not None:
        percentile = f"p{100 * verdicts[0][1].percentile:g}"
        reason = f"{percentile} within the SLO up to {rate_text(peak.max_qps_at_slo)} requests/s"
    elif verdicts:
        reason = f"no rate tried met the SLO (lowest {rate_text(min(r for r, _, _ in verdicts))} requests/s)"
    else:
        reason = "no rate tried"
    if peak.cut_short:
        reason += (
            f"; search cut short: a further trial would have ended after {TIMEOUT_SHARE:.0%} of "
            "the cell's timeout"
        )
    return {
        "max_batch": policy.max_batch,
        "max_wait_ms": policy.max_wait_ms,
        "max_qps_at_slo": peak.max_qps_at_slo,
        "first_unmet_qps": peak.first_unmet_qps,
        "upper_outcome": peak.upper_outcome,
        "reason": reason,
        "trials": [_trial_entry(rate, verdict) for rate, verdict, _ in verdicts],
        "_peak_run": at_peak,
    }


def _skipped(policy: BatchPolicy, reason: str) -> dict[str, Any]:
    return {
        "max_batch": policy.max_batch,
        "max_wait_ms": policy.max_wait_ms,
        "max_qps_at_slo": None,
        "first_unmet_qps": None,
        "upper_outcome": None,
        "reason": f"skipped: {reason}",
        "trials": [],
        "_peak_run": None,
    }


def _at_peak(best: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """The best policy's figures at its peak rate: the trial there, and its latencies (from the
    scheduled time) as the row's latency columns."""
    trial = next((t for t in best["trials"] if t["rate_qps"] == best["max_qps_at_slo"]), None)
    run: ServeRun | None = best["_peak_run"]
    if trial is None or run is None:
        return {"dispatch_lag_p99_ms": None, "goodput_qps": None, "serve_p99_ms": None}
    latencies = run.latencies_ns
    figures = {k: v for k, v in summarize(latencies, batch_size).items() if k != "throughput_sps"}
    return {
        "dispatch_lag_p99_ms": trial["dispatch_lag_p99_ms"],
        "goodput_qps": trial["goodput_qps"],
        "serve_p99_ms": trial["p99_ms"],
        "latencies_ns": latencies,
        **figures,
    }


def _harness_reason(policies: list[dict[str, Any]]) -> str | None:
    """Why the cell is harness-limited: every trial of every policy was (None: not so)."""
    trials = [t for p in policies for t in p["trials"]]
    if not trials or any(t["outcome"] != HARNESS_LIMITED for t in trials):
        return None
    return f"every rate tried was harness-limited: {trials[0]['reason']}"
