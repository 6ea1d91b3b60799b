"""What a serve run records: the batching policy it ran under and, per request, its four
instants and the size of the batch it rode in. Shared by the threaded dispatcher
(inferbench.serve.dispatch) and its virtual-time replay (inferbench.serve.simulate).

Every request's latency is counted from when it was *scheduled*, not from when it was sent:
MLPerf LoadGen defines latency as "the time from when the LoadGen was scheduled to pass a query
to the SUT, to the time it receives a reply". A generator that times from the actual send hides
the stretch a late send waited (Triton perf_analyzer's request-rate mode timed from the send,
triton-inference-server/server#3113; vLLM's `bench serve` starts its timer after the concurrency
semaphore, vllm-project/vllm#54101): coordinated omission. The parts are kept apart as well:

    scheduled --dispatch lag--> sent --queue wait--> batch start --service--> completion
    |<------------------------------ latency ----------------------------------------->|

A dispatch lag is the harness's own delay (inferbench.serve.harness judges it); the queue wait
is the engine's (its slots were busy, or the batcher held the request for company).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inferbench.errors import UserError


@dataclass(frozen=True)
class BatchPolicy:
    """Dynamic batching as servers do it: requests waiting in the queue are merged into one
    engine call of at most `max_batch`, and the batcher holds a batch open for at most
    `max_wait_ms` after its oldest request entered the queue, waiting for it to fill.

    These are Triton's dynamic batcher (`max_batch_size`, `max_queue_delay_microseconds`) and
    TorchServe's `batch_size` / `max_batch_delay`. `max_batch = 1` is no batching; with
    `max_wait_ms = 0` a batch takes whatever is already queued and never waits (Triton's default).
    """

    max_batch: int = 1
    max_wait_ms: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise UserError(f"max_batch must be an integer >= 1; got {self.max_batch!r}")
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not math.isfinite(wait) or wait < 0:
            raise UserError(f"max_wait_ms must be a number >= 0; got {wait!r}")

    @property
    def max_wait_ns(self) -> int:
        return round(self.max_wait_ms * 1e6)


#: One request per engine call, sent as soon as a slot is free.
NO_BATCHING = BatchPolicy()


@dataclass(frozen=True)
class RequestTiming:
    """One request: its four instants (ns, one clock) and the batch it rode in."""

    scheduled_ns: int
    sent_ns: int
    start_ns: int
    end_ns: int
    batch_size: int
    slot: int

    @property
    def latency_ns(self) -> int:
        """Completion minus the *scheduled* send: what a client of the service waited."""
        return self.end_ns - self.scheduled_ns

    @property
    def dispatch_lag_ns(self) -> int:
        return self.sent_ns - self.scheduled_ns

    @property
    def queue_wait_ns(self) -> int:
        return self.start_ns - self.sent_ns


@dataclass(frozen=True)
class ServeRun:
    """A finished serve run, one column per instant (index i is request i of the schedule).

    `begin_ns` is the schedule's time zero on the clock (`scheduled_ns[i] = begin_ns +
    offsets_ns[i]`); `slots` the requests the engine could hold in flight; `policy` the batching.
    """

    begin_ns: int
    scheduled_ns: tuple[int, ...]
    sent_ns: tuple[int, ...]
    start_ns: tuple[int, ...]
    end_ns: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    slot_ids: tuple[int, ...]
    slots: int
    policy: BatchPolicy

    @property
    def count(self) -> int:
        return len(self.scheduled_ns)

    @property
    def latencies_ns(self) -> list[int]:
        return [end - due for end, due in zip(self.end_ns, self.scheduled_ns, strict=True)]

    @property
    def dispatch_lags_ns(self) -> list[int]:
        return [sent - due for sent, due in zip(self.sent_ns, self.scheduled_ns, strict=True)]

    @property
    def queue_waits_ns(self) -> list[int]:
        return [start - sent for start, sent in zip(self.start_ns, self.sent_ns, strict=True)]

    @property
    def service_ns(self) -> list[int]:
        return [end - start for end, start in zip(self.end_ns, self.start_ns, strict=True)]

    def request(self, i: int) -> RequestTiming:
        return RequestTiming(
            self.scheduled_ns[i],
            self.sent_ns[i],
            self.start_ns[i],
            self.end_ns[i],
            self.batch_sizes[i],
            self.slot_ids[i],
        )

    @property
    def scheduled_qps(self) -> float | None:
        """The rate the schedule offered, over the span of due times (None: under two requests)."""
        return _rate(self.scheduled_ns)

    @property
    def sent_qps(self) -> float | None:
        """The rate the dispatcher really sent at, over the span of send times."""
        return _rate(self.sent_ns)

    @property
    def wall_s(self) -> float:
        """From the schedule's time zero to the last completion."""
        return (max(self.end_ns) - self.begin_ns) / 1e9 if self.count else 0.0


def _rate(instants: tuple[int, ...]) -> float | None:
    if len(instants) < 2:
        return None
    span = max(instants) - min(instants)
    return (len(instants) - 1) / (span / 1e9) if span > 0 else None


def rate_text(qps: float) -> str:
    """A rate in requests/s for a reason line: 4 significant digits, whole numbers grouped from
    1,000 up (16,306 requests/s, never 1.631e+04)."""
    return f"{qps:,.0f}" if abs(qps) >= 1000 else f"{qps:.4g}"
