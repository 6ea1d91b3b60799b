"""The rate of a saturated run, counted per stream, and how precise it is.

A saturated run keeps `streams` requests in flight: each stream is a closed loop that starts
its next request as soon as the last one completes. Its rate is counted per stream, as
completed samples over that stream's own busy time (its first start to its last end), and the
streams' rates add up. Counting each stream over its own span, rather than all completions
over the run's wall time, removes the edge effect of a run of few requests: the streams do not
finish together, and with a dozen requests of seconds each (bert-base at batch 32 on two
cores) that edge alone is several percent. Completions are still counted, never inferred
from one request's latency.

How precise: a stream's rate is its count over the sum of its cycles (the start of one
request to the start of its next; the last request's own duration). Each cycle divided by its
stream's mean cycle is about 1, so the relative 95% interval of the mean of those ratios is
the relative interval of the rate. Consecutive cycles are correlated (a neighbour's burst
slows several in a row), so from 2 x GROUPS cycles on the interval is taken over the means of
GROUPS runs of consecutive cycles (batch means) rather than over single cycles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from inferbench.cell.stoprule import mean_half_width

if TYPE_CHECKING:
    from inferbench.backends.base import ThroughputRun

#: Batch means: from 2 x GROUPS cycles on, the interval is over this many consecutive groups.
GROUPS = 20


@dataclass(frozen=True)
class Rate:
    sps: float  # samples per second, the streams' counted rates added up
    half_width: float  # relative half-width of its 95% interval (inf when it cannot be told)
    group_sps: list[float]  # the rate each group of consecutive cycles implies (for pooling processes)

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% interval in samples/s (the rate is the inverse of a mean cycle)."""
        if not math.isfinite(self.half_width):
            return 0.0, math.inf
        high = self.sps / (1 - self.half_width) if self.half_width < 1 else math.inf
        return self.sps / (1 + self.half_width), high


def stream_ids(run: ThroughputRun) -> list[int]:
    """The stream of each request; runs that do not say are taken round-robin by start."""
    if run.stream_ids is not None:
        return list(run.stream_ids)
    order = sorted(range(len(run.starts_ns)), key=run.starts_ns.__getitem__)
    ids = [0] * len(order)
    for position, index in enumerate(order):
        ids[index] = position % max(run.streams, 1)
    return ids


def counted_rate(run: ThroughputRun) -> Rate:
    """The run's rate, counted per stream, with the relative half-width of its interval."""
    if not run.ends_ns:
        return Rate(0.0, math.inf, [])
    by_stream: dict[int, list[int]] = defaultdict(list)
    for index, stream in enumerate(stream_ids(run)):
        by_stream[stream].append(index)
    slots = max(run.streams, 1)
    count: dict[int, int] = defaultdict(int)
    busy: dict[int, int] = defaultdict(int)
    cycles: list[tuple[int, int, int]] = []  # (start, slot, ns): in start order below
    for stream, indices in by_stream.items():
        indices.sort(key=run.starts_ns.__getitem__)
        slot = stream % slots  # pooled runs number their streams run * streams + k
        for i, j in zip(indices, [*indices[1:], None], strict=True):
            end = run.ends_ns[i] if j is None else run.starts_ns[j]
            cycles.append((run.starts_ns[i], slot, max(end - run.starts_ns[i], 1)))
        count[slot] += len(indices)
        busy[slot] += max(run.ends_ns[indices[-1]] - run.starts_ns[indices[0]], 1)
    sps = sum(run.samples_per_request * count[s] * 1e9 / busy[s] for s in count)
    mean_cycle = {s: busy[s] / count[s] for s in count}
    cycles.sort()
    ratios = [ns / mean_cycle[slot] for _, slot, ns in cycles]
    groups = _batch_means(ratios)
    return Rate(sps, mean_half_width(groups), [sps / g for g in groups if g > 0])


def _batch_means(values: Sequence[float]) -> list[float]:
    """GROUPS means of consecutive runs of `values` once there are 2 x GROUPS, else the values."""
    n = len(values)
    if n < 2 * GROUPS:
        return list(values)
    edges = [round(k * n / GROUPS) for k in range(GROUPS + 1)]
    return [sum(values[a:b]) / (b - a) for a, b in pairwise(edges)]


def pooled(runs: Sequence[ThroughputRun]) -> ThroughputRun:
    """Several timed runs of one cell as one: their requests, each run's streams numbered apart
    (run * streams + k, so a stream's cycles never span the gap between runs)."""
    from inferbench.backends.base import ThroughputRun

    if len(runs) == 1:
        return runs[0]
    starts: list[int] = []
    ends: list[int] = []
    ids: list[int] = []
    streams = runs[0].streams
    for r, run in enumerate(runs):
        starts += run.starts_ns
        ends += run.ends_ns
        ids += [r * streams + s % streams for s in stream_ids(run)]
    return ThroughputRun(
        starts, ends, runs[0].samples_per_request, streams, runs[0].begin_ns, runs[-1].end_ns, ids
    )
