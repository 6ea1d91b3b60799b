"""The open-loop dispatcher: each request sent at its scheduled time, whatever the engine is doing,
through a dynamic batcher to an engine that holds up to N requests in flight.

Sending. The calling thread walks the schedule (inferbench.serve.schedule): it sleeps until
`spin_ns` (100 µs) before a request's due time, then spins on the clock for the rest. OS sleeps
overshoot by tens of microseconds and event-loop timers round sub-millisecond sleeps (AIPerf
moved to timerfd pacing after its offered rate came out silently low), so the last stretch is
spun. The schedule is absolute, as LoadGen's Server scenario issues it: a request is never sent
before its time, never skipped, and lateness is never hidden. A late request goes out as soon as
the dispatcher can send it, with its dispatch lag recorded; the next keeps its own due time, so
no gap is stretched to absorb the delay. The dispatcher never waits for the engine: a request
whose slot is busy waits in the queue, and that wait is part of its latency (inferbench.serve.run
says why latency counts from the scheduled time).

Batching. Free slots take their work from one queue through the batcher (`BatchPolicy`): the
slot forming a batch takes the oldest request and waits until the batch holds `max_batch`
requests or `max_wait_ms` has passed since that oldest one entered the queue, then runs
whatever it has. One slot forms a batch at a time, in arrival order. Triton's dynamic batcher
behaves the same: a batch forms when an instance is free, and `max_queue_delay_microseconds`
bounds how long a request waits for others to join. TorchServe's `batch_size` and
`max_batch_delay` bound batches the same way.

Engines. `SlotEngine`: N threads (slots), each calling a blocking `call(slot, batch_size)` that
returns when the batch is done. This is the worker's `backend.run_on(slot, inputs)` followed by
`backend.synchronize()`, and `enter` is `backend.enter_stream`. `AsyncEngine`: for an engine
with its own asynchronous API (OpenVINO's `AsyncInferQueue.start_async` with a callback, ONNX
Runtime's `run_async`), `submit(slot, batch_size, done)` starts the batch and returns, and the
engine calls `done()` from its own thread on completion, or `done(error)`. One feeder thread
keeps at most `slots` batches in flight. In both cases an engine error stops sending, and
`serve` raises it once every thread has finished.

The clock and sleep are injectable, so tests can starve the dispatcher without loading the CPU.
A fake clock must move when it is read, or the spin would never end. The batcher's timed wait
uses real time (`threading.Condition.wait`), so with a fake clock keep `max_wait_ms` at 0.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Protocol

from inferbench.serve.run import NO_BATCHING, BatchPolicy, ServeRun

Clock = Callable[[], int]
Sleep = Callable[[float], None]
#: The dispatcher sleeps until this long before a due time and spins on the clock after it.
SPIN_NS = 100_000


class Done(Protocol):
    """What an asynchronous engine calls when a submitted batch finishes (or fails)."""

    def __call__(self, error: BaseException | None = None) -> None: ...


@dataclass(frozen=True)
class SlotEngine:
    """An engine run from `slots` threads: `call(slot, batch_size)` runs one batch and returns
    when it is done; `enter(slot)`, if given, runs once in each slot's thread first."""

    call: Callable[[int, int], None]
    slots: int = 1
    enter: Callable[[int], None] | None = None


@dataclass(frozen=True)
class AsyncEngine:
    """An engine with its own asynchronous API: `submit(slot, batch_size, done)` starts a batch
    and returns; the engine calls `done()` on completion, from any thread. At most `slots`
    batches are in flight; `slot` says which of them this one is (its buffers, its request)."""

    submit: Callable[[int, int, Done], None]
    slots: int = 1


Engine = SlotEngine | AsyncEngine


def serve(
    offsets_ns: Sequence[int],
    engine: Engine,
    policy: BatchPolicy = NO_BATCHING,
    *,
    clock: Clock = time.perf_counter_ns,
    sleep: Sleep = time.sleep,
    spin_ns: int = SPIN_NS,
) -> ServeRun:
    """Send request i at `offsets_ns[i]` after the start to `engine`, batched by `policy`; return
    every request's scheduled, sent, batch-start and completion times once all have completed."""
    if engine.slots < 1:
        raise ValueError(f"an engine needs at least one slot; got {engine.slots}")
    if any(b < a for a, b in itertools.pairwise(offsets_ns)) or min(offsets_ns, default=0) < 0:
        raise ValueError("a schedule's offsets must be non-negative and non-decreasing")
    state = _State(len(offsets_ns), policy, clock)
    threads = _start_engine(engine, state)
    begin = clock()
    try:
        for i, offset in enumerate(offsets_ns):
            if state.failed.is_set():
                break
            due = begin + offset
            _wait_until(due, clock, sleep, spin_ns)
            state.scheduled[i] = due
            state.sent[i] = clock()
            state.batches.put(i)
    except BaseException:
        state.batches.abort()
        raise
    finally:
        state.batches.close()
        for thread in threads:
            thread.join()
    if state.errors:
        raise state.errors[0]
    return state.run(begin, engine.slots, policy)


def _wait_until(due: int, clock: Clock, sleep: Sleep, spin_ns: int) -> None:
    """Sleep to `spin_ns` before `due`, then spin on the clock; return at once when late."""
    while (left := due - clock()) > 0:
        if left > spin_ns:
            sleep((left - spin_ns) / 1e9)


class _BatchQueue:
    """Sent requests waiting for a slot; `take` forms the next batch under the policy."""

    def __init__(self, policy: BatchPolicy, sent: list[int], clock: Clock) -> None:
        self._policy = policy
        self._sent = sent
        self._clock = clock
        self._items: deque[int] = deque()
        self._ready = threading.Condition()
        self._forming = threading.Lock()  # one slot forms a batch at a time, in arrival order
        self._closed = False

    def put(self, request: int) -> None:
        with self._ready:
            self._items.append(request)
            self._ready.notify_all()

    def close(self) -> None:
        """No more requests: batches still form from what is queued, without waiting to fill."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def abort(self) -> None:
        """Stop: drop what is queued; every `take` returns None."""
        with self._ready:
            self._items.clear()
            self._closed = True
            self._ready.notify_all()

    def take(self) -> list[int] | None:
        """The next batch (request indices, oldest first), or None once closed and empty."""
        with self._forming, self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            if not self._items:
                return None
            deadline = self._sent[self._items[0]] + self._policy.max_wait_ns
            while len(self._items) < self._policy.max_batch and not self._closed:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._ready.wait(left / 1e9)
            size = min(self._policy.max_batch, len(self._items))
            return [self._items.popleft() for _ in range(size)]


class _State:
    """The run's records (one slot per request, written once by index) and what the threads
    share: the batch queue, and the first error that stops the run."""

    def __init__(self, count: int, policy: BatchPolicy, clock: Clock) -> None:
        self.clock = clock
        self.scheduled = [0] * count
        self.sent = [0] * count
        self.start = [0] * count
        self.end = [0] * count
        self.size = [0] * count
        self.slot = [0] * count
        self.batches = _BatchQueue(policy, self.sent, clock)
        self.failed = threading.Event()
        self.errors: list[BaseException] = []

    def started(self, batch: list[int], slot: int) -> None:
        now = self.clock()
        for i in batch:
            self.start[i], self.size[i], self.slot[i] = now, len(batch), slot

    def finished(self, batch: list[int]) -> None:
        now = self.clock()
        for i in batch:
            self.end[i] = now

    def fail(self, error: BaseException) -> None:
        self.errors.append(error)
        self.failed.set()
        self.batches.abort()

    def run(self, begin: int, slots: int, policy: BatchPolicy) -> ServeRun:
        return ServeRun(
            begin_ns=begin,
            scheduled_ns=tuple(self.scheduled),
            sent_ns=tuple(self.sent),
            start_ns=tuple(self.start),
            end_ns=tuple(self.end),
            batch_sizes=tuple(self.size),
            slot_ids=tuple(self.slot),
            slots=slots,
            policy=policy,
        )


def _start_engine(engine: Engine, state: _State) -> list[threading.Thread]:
    if isinstance(engine, SlotEngine):
        threads = [
            threading.Thread(target=_slot_loop, args=(engine, k, state), name=f"serve-slot-{k}", daemon=True)
            for k in range(engine.slots)
        ]
    else:
        threads = [threading.Thread(target=_feed, args=(engine, state), name="serve-feed", daemon=True)]
    for thread in threads:
        thread.start()
    return threads


def _slot_loop(engine: SlotEngine, slot: int, state: _State) -> None:
    try:
        if engine.enter is not None:
            engine.enter(slot)
        while (batch := state.batches.take()) is not None:
            state.started(batch, slot)
            engine.call(slot, len(batch))
            state.finished(batch)
    except BaseException as exc:  # raised in the dispatching thread by serve()
        state.fail(exc)


def _feed(engine: AsyncEngine, state: _State) -> None:
    """Keep at most `engine.slots` batches submitted; wait for all of them at the end."""
    free: SimpleQueue[int] = SimpleQueue()
    for k in range(engine.slots):
        free.put(k)
    try:
        while True:
            slot = free.get()
            batch = state.batches.take()
            if batch is None:
                free.put(slot)
                break
            state.started(batch, slot)
            engine.submit(slot, len(batch), _completion(batch, slot, free, state))
        for _ in range(engine.slots):  # every submitted batch has called back
            free.get()
    except BaseException as exc:
        state.fail(exc)


def _completion(batch: list[int], slot: int, free: SimpleQueue[int], state: _State) -> Done:
    def done(error: BaseException | None = None) -> None:
        if error is None:
            state.finished(batch)
        else:
            state.fail(error)
        free.put(slot)

    return done
