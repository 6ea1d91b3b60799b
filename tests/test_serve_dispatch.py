"""The dispatcher: open loop (sends never wait for the engine), latency from the scheduled time,
dynamic batching by max_batch and max_wait_ms, slots and the asynchronous hook, engine errors.

The real-time tests use fake engines that sleep and assert only what a slow or loaded machine
cannot break: orders, batch sizes and lower bounds, never how fast anything ran. The virtual-time
replay (inferbench.serve.simulate) is checked against the same batching rules."""

from __future__ import annotations

import threading
import time

import pytest

from inferbench.errors import UserError
from inferbench.serve.dispatch import AsyncEngine, Done, SlotEngine, serve
from inferbench.serve.run import BatchPolicy, ServeRun
from inferbench.serve.schedule import make_schedule
from inferbench.serve.simulate import simulate

MS = 1_000_000


class SleepingEngine:
    """Each batch sleeps `service_s`; batch number `stall_at` sleeps `stall_s` instead."""

    def __init__(self, service_s: float = 0.001, stall_at: int = -1, stall_s: float = 0.0) -> None:
        self.service_s, self.stall_at, self.stall_s = service_s, stall_at, stall_s
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, slot: int, batch_size: int) -> None:
        with self.lock:
            number = len(self.sizes)
            self.sizes.append(batch_size)
        time.sleep(self.stall_s if number == self.stall_at else self.service_s)


def batches(run: ServeRun) -> list[int]:
    """The batch sizes in the order the batches started."""
    starts = sorted({(run.start_ns[i], run.slot_ids[i], run.batch_sizes[i]) for i in range(run.count)})
    return [size for _, _, size in starts]


def test_a_stall_is_in_the_latency_of_every_request_queued_behind_it() -> None:
    # 60 requests every 5 ms to one slot; the 6th call stalls for 300 ms.
    engine = SleepingEngine(service_s=0.001, stall_at=5, stall_s=0.3)
    run = serve([5 * MS * (i + 1) for i in range(60)], SlotEngine(engine))
    stalled = next(i for i in range(run.count) if run.service_ns[i] >= 300 * MS)
    stall_end = run.end_ns[stalled]
    behind = [i for i in range(stalled + 1, run.count) if run.scheduled_ns[i] < stall_end]
    assert len(behind) >= 40
    # Open loop: the dispatcher kept sending while the engine stalled (a closed-loop generator
    # would have waited, and sent these only after the stall)...
    early = [i for i in behind if run.scheduled_ns[i] < stall_end - 150 * MS]
    assert early and all(run.sent_ns[i] < stall_end for i in early)
    # ...so each one's latency, counted from its scheduled time, holds the rest of the stall,
    # although its own engine call took a millisecond or so.
    for i in behind:
        assert run.latencies_ns[i] >= stall_end - run.scheduled_ns[i]
        assert run.queue_waits_ns[i] + run.dispatch_lags_ns[i] >= stall_end - run.scheduled_ns[i]
    assert sum(run.latencies_ns[i] >= 100 * MS for i in behind) >= 15
    # Without batching and with one slot, requests complete in the order they were scheduled.
    assert list(run.end_ns) == sorted(run.end_ns) and set(run.batch_sizes) == {1}


def test_queued_requests_merge_up_to_max_batch() -> None:
    engine = SleepingEngine(service_s=0.01)
    run = serve([0] * 8, SlotEngine(engine), BatchPolicy(max_batch=4, max_wait_ms=1000))
    assert engine.sizes == [4, 4]
    assert set(run.batch_sizes) == {4}
    # A batch's requests share its start and completion.
    assert len({run.start_ns[i] for i in range(4)}) == 1 and len({run.end_ns[i] for i in range(4)}) == 1


def test_a_batch_that_does_not_fill_is_flushed_after_max_wait() -> None:
    engine = SleepingEngine(service_s=0.001)
    policy = BatchPolicy(max_batch=4, max_wait_ms=100)
    run = serve([0, 0, 0, 400 * MS], SlotEngine(engine), policy)
    assert engine.sizes == [3, 1]
    assert run.batch_sizes == (3, 3, 3, 1)
    # The first batch waited max_wait_ms after its oldest request was queued, no less...
    assert run.start_ns[0] - run.sent_ns[0] >= 100 * MS
    # ...and did not wait for the fourth request, which rode alone.
    assert run.start_ns[0] < run.sent_ns[3]
    assert simulate([0, 0, 0, 400 * MS], lambda size: MS, policy=policy).batch_sizes == run.batch_sizes


def test_the_last_requests_do_not_wait_for_company_that_will_never_come() -> None:
    engine = SleepingEngine(service_s=0.001)
    run = serve([0, 0], SlotEngine(engine), BatchPolicy(max_batch=8, max_wait_ms=60_000))
    assert engine.sizes == [2]
    assert run.start_ns[0] - run.sent_ns[1] < 30_000 * MS  # closed, not timed out


def test_max_batch_one_is_no_batching() -> None:
    engine = SleepingEngine(service_s=0.001)
    run = serve([0] * 5, SlotEngine(engine), BatchPolicy(max_batch=1, max_wait_ms=50))
    assert engine.sizes == [1] * 5 and set(run.batch_sizes) == {1}


def test_requests_spread_over_the_slots_each_entered_once() -> None:
    entered: list[int] = []
    engine = SleepingEngine(service_s=0.05)
    run = serve([0] * 4, SlotEngine(engine, slots=2, enter=entered.append))
    assert sorted(entered) == [0, 1]
    assert set(run.slot_ids) == {0, 1}
    assert batches(run) == [1, 1, 1, 1]


def test_an_asynchronous_engine_keeps_at_most_slots_batches_in_flight() -> None:
    in_flight, most, lock = [0], [0], threading.Lock()
    submitted: list[tuple[int, int]] = []

    def submit(slot: int, batch_size: int, done: Done) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            submitted.append((slot, batch_size))

        def finish() -> None:
            with lock:
                in_flight[0] -= 1
            done()

        threading.Timer(0.01, finish).start()

    run = serve([0] * 10, AsyncEngine(submit, slots=3), BatchPolicy(max_batch=2))
    assert most[0] <= 3
    assert sum(size for _, size in submitted) == 10
    assert {slot for slot, _ in submitted} <= {0, 1, 2}
    assert all(end >= start for start, end in zip(run.start_ns, run.end_ns, strict=True))


@pytest.mark.parametrize("where", ["call", "enter"])
def test_an_engine_error_stops_the_run_and_is_raised(where: str) -> None:
    def call(slot: int, batch_size: int) -> None:
        if where == "call":
            raise RuntimeError("engine broke")

    def enter(slot: int) -> None:
        if where == "enter":
            raise RuntimeError("engine broke")

    with pytest.raises(RuntimeError, match="engine broke"):
        serve([i * MS for i in range(50)], SlotEngine(call, slots=2, enter=enter))


def test_an_asynchronous_engine_error_is_raised() -> None:
    def submit(slot: int, batch_size: int, done: Done) -> None:
        threading.Timer(0.001, lambda: done(RuntimeError("request failed"))).start()

    with pytest.raises(RuntimeError, match="request failed"):
        serve([0] * 5, AsyncEngine(submit, slots=2))


def test_bad_schedules_and_policies_are_refused() -> None:
    engine = SlotEngine(lambda slot, size: None)
    with pytest.raises(ValueError, match="non-decreasing"):
        serve([5, 3], engine)
    with pytest.raises(ValueError, match="at least one slot"):
        serve([0], SlotEngine(lambda slot, size: None, slots=0))
    with pytest.raises(UserError, match="max_batch must be an integer >= 1; got 0"):
        BatchPolicy(max_batch=0)
    with pytest.raises(UserError, match="max_wait_ms must be a number >= 0; got -1"):
        BatchPolicy(max_wait_ms=-1)


def test_the_replay_batches_what_is_queued_when_a_slot_frees() -> None:
    # One slot, 4 ms per batch, a request every millisecond: after the first batch, each batch
    # takes what queued while the previous one ran.
    run = simulate([MS * (i + 1) for i in range(12)], lambda size: 4 * MS, policy=BatchPolicy(max_batch=4))
    assert batches(run) == [1, 4, 4, 3]
    assert run.latencies_ns[0] == 4 * MS and run.queue_waits_ns[1] == 3 * MS
    assert set(simulate(make_schedule(100, 50).offsets_ns, lambda size: MS, slots=2).slot_ids) <= {0, 1}
