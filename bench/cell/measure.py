"""The timed loop. One definition of "an iteration" for every backend: `run` + `synchronize`.

Warm-up runs until a minimum count and a minimum duration are reached, then on until the
engine's speed has settled: the median of the last window of iterations is within a tolerance
of the window before it (capped by `warmup_max_seconds`). The timed loop then runs until its
minimum count and duration are met and, within the maximums, until there are enough samples
for the reported tail (p99). Inputs are cycled through several distinct, pre-converted sets so
no engine sees one reused tensor. See docs/methodology.md.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from inferbench.cell.rate import counted_rate, pooled
from inferbench.cell.stoprule import PrecisionRule, median_half_width
from inferbench.config import MeasureConfig

if TYPE_CHECKING:
    from inferbench.backends.base import ThroughputRun

Clock = Callable[[], int]


class Window(Protocol):
    """Told when the timed window starts and stops (the interference probe)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


#: One iteration: called with the iteration number (to cycle inputs); may return the device-side
#: duration in ns when the engine has its own clock, else None. Backends' iterations return
#: None and their engine time is read by `engine_time` after the host clock has stopped.
Iteration = Callable[[int], "int | None"]
#: The engine's own duration of the iteration just timed (CUDA events, OpenVINO's latency).
EngineTime = Callable[[], "int | None"]


def backend_iteration(backend: Any, natives: list[Any]) -> Iteration:
    """The timed iteration of every latency cell (and of the crosscheck's harness overhead):
    `run` + `synchronize` on the next pre-converted input set, nothing else."""

    def one_iteration(i: int) -> None:
        backend.run(natives[i % len(natives)])
        backend.synchronize()

    return one_iteration


@dataclass(frozen=True)
class Warmup:
    iterations: int
    seconds: float
    stable: bool  # the window medians settled before the cap
    window: int  # iterations per window used for the stability check


@dataclass(frozen=True)
class Measurement:
    latencies_ns: list[int]
    warmup: Warmup
    total_seconds: float
    capped: bool  # stopped by a maximum before the minimums, or before the precision asked for
    tail_ok: bool  # at least `tail_samples` samples: p99 is backed by enough data
    device_ns: list[int] | None = None  # per-iteration device time, when the engine reports it
    p50_half_width: float | None = None  # relative half-width of the p50's 95% interval at the end

    @property
    def warmup_iterations(self) -> int:
        return self.warmup.iterations


def stability_window(config: MeasureConfig, seconds_per_iteration: float) -> int:
    """Iterations per stability window: `stable_window`, fewer for slow cells so that two
    windows fit in about half the warm-up cap, never fewer than 3."""
    if seconds_per_iteration <= 0:
        return config.stable_window
    affordable = int(config.warmup_max_seconds / 4 / seconds_per_iteration)
    return max(3, min(config.stable_window, affordable))


def settled(samples: list[int], window: int, tolerance: float) -> bool:
    """The median of the last `window` samples is within `tolerance` of the window before."""
    if len(samples) < 2 * window:
        return False
    last = statistics.median(samples[-window:])
    before = statistics.median(samples[-2 * window : -window])
    return abs(last - before) <= tolerance * before


def warm_up(call: Iteration, config: MeasureConfig, clock: Clock) -> Warmup:
    min_ns = config.warmup_seconds * 1e9
    cap_ns = max(config.warmup_max_seconds, config.warmup_seconds) * 1e9
    samples: list[int] = []
    start = clock()
    window = config.stable_window
    while True:
        t0 = clock()
        call(len(samples))
        t1 = clock()
        samples.append(t1 - t0)
        elapsed = t1 - start
        if len(samples) < config.warmup_iterations or elapsed < min_ns:
            continue
        window = stability_window(config, elapsed / 1e9 / len(samples))
        if settled(samples, window, config.stable_tolerance):
            return Warmup(len(samples), elapsed / 1e9, True, window)
        if elapsed >= cap_ns:
            return Warmup(len(samples), elapsed / 1e9, False, window)


def measure(
    call: Iteration,
    config: MeasureConfig,
    clock: Clock = time.perf_counter_ns,
    engine_time: EngineTime | None = None,
    window: Window | None = None,
) -> Measurement:
    """Time `call(i)` per the config's warm-up and stop rules; `engine_time()`, when given, is
    read after the host clock stops, so the timed region holds the iteration only; `window`
    brackets the timed loop (interference counters)."""
    warmup = warm_up(call, config, clock) if config.warmup_iterations or config.warmup_seconds else None
    warmup = warmup or Warmup(0, 0.0, False, 0)
    i = warmup.iterations
    latencies: list[int] = []
    device: list[int] = []
    min_ns, max_ns = config.min_seconds * 1e9, config.max_seconds * 1e9
    tail = max(config.tail_samples, config.min_iterations)
    rule = PrecisionRule(config.precision, config.min_iterations)
    chase_tail = bool(config.chase_tail) or config.precision == 0
    if window is not None:
        window.start()
    begin = clock()
    while True:
        t0 = clock()
        device_ns = call(i)
        t1 = clock()
        if engine_time is not None:
            device_ns = engine_time()
        latencies.append(t1 - t0)
        if device_ns is not None:
            device.append(device_ns)
        i += 1
        n, elapsed = len(latencies), t1 - begin
        minimums_met = n >= config.min_iterations and elapsed >= min_ns
        if minimums_met and _answered(rule, latencies, chase_tail, tail):
            break
        if n >= config.max_iterations or elapsed >= max_ns:
            break
    if window is not None:
        window.stop()
    half_width = median_half_width(latencies) if config.precision else None
    imprecise = half_width is not None and half_width > config.precision
    return Measurement(
        latencies_ns=latencies,
        warmup=warmup,
        total_seconds=(clock() - begin) / 1e9,
        capped=not minimums_met or imprecise,
        tail_ok=len(latencies) >= config.tail_samples,
        device_ns=device or None,
        p50_half_width=half_width,
    )


def _answered(rule: PrecisionRule, latencies: list[int], chase_tail: bool, tail: int) -> bool:
    """The minimums are met: stop when the p50 is precise enough (looked at in geometric
    steps), or, when the tail is asked for, once there are enough tail samples."""
    if chase_tail:
        n = len(latencies)
        return n >= tail and (rule.precision == 0 or (rule.due(n) and rule.met(latencies)))
    return rule.due(len(latencies)) and rule.met(latencies)


def measure_throughput(
    run: Callable[[float, int], ThroughputRun], config: MeasureConfig, window: Window | None = None
) -> tuple[Warmup, ThroughputRun]:
    """Saturated mode: `run(seconds, min_requests)` keeps the engine's streams busy.

    Warm-up is repeated slices (at least `warmup_seconds`, or 0.2 s) until two consecutive
    slices' throughputs agree within `stable_tolerance` (capped by `warmup_max_seconds`);
    the timed run then lasts `min_seconds` and at least `min_iterations` requests. While the
    interval of its counted rate (`inferbench.cell.rate`) is wider than `rate_precision`, it runs on
    for about the time the interval says is missing, up to `max_seconds` in all; the timed runs
    are pooled into the answer.
    """
    slice_seconds = max(config.warmup_seconds, 0.2)
    rates: list[float] = []
    spent, requests, stable = 0.0, 0, False
    while config.warmup_iterations or config.warmup_seconds:
        done = run(slice_seconds, config.warmup_iterations)
        rates.append(counted_rate(done).sps)
        spent += done.wall_seconds
        requests += len(done.ends_ns)
        if len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= config.stable_tolerance * rates[-2]:
            stable = True
            break
        if spent >= config.warmup_max_seconds:
            break
    if window is not None:
        window.start()
    runs = [run(config.min_seconds, config.min_iterations)]
    timed, total = runs[0], runs[0].wall_seconds
    target = config.rate_precision
    while target:
        width = counted_rate(timed).half_width
        if width <= target:
            break
        # Run on for about what the interval says is missing (n grows as 1/width^2), at least
        # half of what ran so far: the looks stay geometric, a handful at most.
        wanted = total * ((width / target) ** 2 - 1) if math.isfinite(width) else total
        seconds = min(max(wanted, total / 2), config.max_seconds - total)
        if seconds <= 0:
            break
        runs.append(run(seconds, 1))
        timed, total = pooled(runs), total + runs[-1].wall_seconds
    if window is not None:
        window.stop()
    return Warmup(requests, spent, stable, len(rates)), timed
