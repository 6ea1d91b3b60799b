"""The dispatcher's policy replayed in virtual time: the same records `serve` makes, for a schedule
and an engine whose batch of b requests takes `service_ns(b)`, without threads or a clock.

A reference model, not a measurement. Tests use it to check the peak search against queueing
theory (with Poisson arrivals and a fixed service time, one slot is an M/D/1 queue, whose
waiting-time distribution is known exactly) and to check the threaded dispatcher against the
policy it claims to implement. The integration can use it to choose a peak search's start rate
from a latency-mode measurement.

Rules, the same as inferbench.serve.dispatch's: every request is sent exactly on time (no
dispatch lag: the harness is ideal here); `slots` identical servers; batches form one at a
time in arrival order, each by the first slot to be free; a forming batch closes when it holds
`max_batch` requests, when `max_wait_ms` has passed since its oldest request was sent, or when
the last request of the schedule has been sent, whichever comes first, but not before its slot
is free and its oldest request has arrived.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from inferbench.serve.run import NO_BATCHING, BatchPolicy, ServeRun


def simulate(
    offsets_ns: Sequence[int],
    service_ns: Callable[[int], int],
    *,
    slots: int = 1,
    policy: BatchPolicy = NO_BATCHING,
) -> ServeRun:
    """Replay `offsets_ns` (the schedule, time zero at 0) through `slots` servers under `policy`;
    `service_ns(batch_size)` is called once per batch, in the order the batches start."""
    if slots < 1:
        raise ValueError(f"an engine needs at least one slot; got {slots}")
    count = len(offsets_ns)
    start, end, size, slot_of = [0] * count, [0] * count, [0] * count, [0] * count
    free = [(0, k) for k in range(slots)]  # (when the slot is next free, slot)
    head = 0  # the oldest request not yet in a batch
    last_close = 0  # the previous batch's close: the next one cannot start forming before it
    while head < count:
        free_at, slot = heapq.heappop(free)
        close = _close_time(offsets_ns, head, max(free_at, offsets_ns[head], last_close), policy)
        members = _members(offsets_ns, head, close, policy.max_batch)
        finish = close + service_ns(len(members))
        for i in members:
            start[i], end[i], size[i], slot_of[i] = close, finish, len(members), slot
        heapq.heappush(free, (finish, slot))
        last_close, head = close, members[-1] + 1
    return ServeRun(
        begin_ns=0,
        scheduled_ns=tuple(offsets_ns),
        sent_ns=tuple(offsets_ns),
        start_ns=tuple(start),
        end_ns=tuple(end),
        batch_sizes=tuple(size),
        slot_ids=tuple(slot_of),
        slots=slots,
        policy=policy,
    )


def _close_time(offsets_ns: Sequence[int], head: int, ready: int, policy: BatchPolicy) -> int:
    """When the batch headed by `head` closes, its former being free and holding it at `ready`."""
    fill = head + policy.max_batch - 1
    # Full when the max_batch-th request arrives; short of that, the queue closes at the last send.
    filled_at = offsets_ns[fill] if fill < len(offsets_ns) else offsets_ns[-1]
    return max(ready, min(offsets_ns[head] + policy.max_wait_ns, filled_at))


def _members(offsets_ns: Sequence[int], head: int, close: int, max_batch: int) -> list[int]:
    """The requests queued at `close`, oldest first, up to `max_batch`."""
    last = head
    while last + 1 < len(offsets_ns) and last + 1 - head < max_batch and offsets_ns[last + 1] <= close:
        last += 1
    return list(range(head, last + 1))
