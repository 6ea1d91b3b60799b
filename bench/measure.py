"""The timed loop. One definition of "an iteration" for every backend: `run` + `synchronize`.

Warm-up runs until both a minimum count and a minimum duration are reached; the timed loop
then runs until both its minimums are met, or a maximum (count or seconds) caps it. Inputs
are cycled through several distinct, pre-converted sets so no engine sees one reused tensor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.config import MeasureConfig

Clock = Callable[[], int]


@dataclass(frozen=True)
class Measurement:
    latencies_ns: list[int]
    warmup_iterations: int
    total_seconds: float
    capped: bool  # stopped by a maximum before both minimums were met


def measure(
    call: Callable[[int], None], config: MeasureConfig, clock: Clock = time.perf_counter_ns
) -> Measurement:
    """Time `call(i)` (i = iteration number, for cycling inputs) per the config's stop rule."""
    i = 0
    start = clock()
    warmup_ns = config.warmup_seconds * 1e9
    while i < config.warmup_iterations or clock() - start < warmup_ns:
        call(i)
        i += 1
    warmup = i

    latencies: list[int] = []
    min_ns, max_ns = config.min_seconds * 1e9, config.max_seconds * 1e9
    begin = clock()
    while True:
        t0 = clock()
        call(i)
        t1 = clock()
        latencies.append(t1 - t0)
        i += 1
        elapsed = t1 - begin
        if len(latencies) >= config.min_iterations and elapsed >= min_ns:
            capped = False
            break
        if len(latencies) >= config.max_iterations or elapsed >= max_ns:
            capped = True
            break
    return Measurement(latencies, warmup, (clock() - begin) / 1e9, capped)
