"""The backend interface: what every engine wrapper implements.

A backend is created inside a worker process for one cell, so it may hold engine state
freely. Engines are imported inside methods, never at module import time: the parent
process imports backend classes to ask `availability()` and `unsupported_reason()` cheaply.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from inferbench.machine.capability import Cpu, Support
    from inferbench.models import ModelDef, ModelRef


CALIBRATION_SEED = 2000


def output_list(outputs: Any) -> list[Any]:
    """A model's outputs as a list, whether it returned one value, a sequence or a dict."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, list | tuple):
        return list(outputs)
    return [outputs]


@dataclass(frozen=True)
class Availability:
    """Whether the engine can be used here; `reason` says why not and how to fix it."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class ThroughputRun:
    """What a saturated run did: every completed request's start and end (ns, one clock)."""

    starts_ns: list[int]
    ends_ns: list[int]
    samples_per_request: int
    streams: int  # requests kept in flight
    begin_ns: int
    end_ns: int
    stream_ids: list[int] | None = None  # the stream (in-flight slot) of each request

    @property
    def samples(self) -> int:
        return len(self.ends_ns) * self.samples_per_request

    @property
    def wall_seconds(self) -> float:
        return (self.end_ns - self.begin_ns) / 1e9


@dataclass
class PrepareInfo:
    """What preparation produced: artifact on disk (for its size), and facts worth recording."""

    artifact: Path | None = None
    artifact_cached: bool | None = None  # None: the engine keeps no artifact on disk
    engine_precision: str = ""  # the precision the engine reports it really executes
    details: dict[str, Any] = field(default_factory=dict)
    #: bf16/int8 cells: share (0..1) of the compute that really ran in that precision, read
    #: from the engine (see `inferbench.backends.lowp`); None where the engine cannot tell.
    lowp_share: float | None = None


class Backend(ABC):
    """One inference engine.

    Life cycle inside a worker: `prepare` once (export/compile/convert; timed by the caller),
    `to_native` per input set (outside the timed region), `run` + `synchronize` per timed
    iteration, `to_numpy` for accuracy checks, `close` at the end.

    In throughput mode (`mode == "throughput"`) `prepare` readies the engine for `stream_count()`
    concurrent requests and `run_throughput` keeps them in flight. The default drives one
    Python thread per stream through `run_on`; engines with their own asynchronous API
    (OpenVINO's infer-request queue) override `run_throughput`. Serve mode (`"serve"`) readies
    the same streams, and the worker's dispatcher calls `run_on` from one thread per stream.
    """

    name: ClassVar[str]
    #: Python modules the engine needs; checked with find_spec, without importing them.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The pip extra that installs the engine (`pip install 'inferbench[<extra>]'`).
    extra: ClassVar[str | None] = None
    #: Distributions whose versions are recorded with every result.
    version_packages: ClassVar[tuple[str, ...]] = ()
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32"})
    #: How each precision is realised (and its limits), shown by `inferbench doctor`.
    precision_notes: ClassVar[dict[str, str]] = {}
    accepts_torch: ClassVar[bool] = True
    accepts_onnx: ClassVar[bool] = False
    #: Where the model runs: "cpu" rows get `% of peak` against the CPU ceilings.
    device: ClassVar[str] = "cpu"
    #: The CPU engine whose kernels do this backend's compute (one of
    #: `inferbench.machine.capability.ENGINES`): the capability model then says, per precision,
    #: whether this CPU computes it natively. None: an engine the model does not know.
    cpu_engine: ClassVar[str | None] = None

    #: Options this backend accepts (profile `[backend_options.<name>]`, CLI `--backend-option`),
    #: with their allowed values; the first is the default.
    options: ClassVar[dict[str, tuple[str, ...]]] = {}

    #: Whether a prepared engine runs calls of any batch size along the batch axis, up to
    #: `serve_batch` (serve mode's dynamic batcher merges requests into calls of 1..max_batch
    #: requests). False: the engine is prepared for one batch size (a trace, a compiled graph,
    #: a fixed-shape engine), and serve policies with max_batch > 1 are skipped for it.
    variable_batch: ClassVar[bool] = False

    #: What the timed region covers, stated per backend in every row.
    timing_scope: ClassVar[str] = "host call: run + synchronize, inputs already in engine format"

    def __init__(
        self,
        threads: int,
        cache_dir: Path,
        calibration_samples: int = 32,
        options: dict[str, str] | None = None,
        mode: str = "latency",
        streams: int = 0,
    ) -> None:
        self.threads = threads
        self.cache_dir = cache_dir
        self.calibration_samples = calibration_samples
        self.mode = mode
        self.streams = streams  # throughput and serve mode: requested concurrent requests, 0 = default
        # Serve mode: the largest call (in samples) `prepare` must allow, set by the worker
        # before it; 0: the cell's batch size only.
        self.serve_batch = 0
        self.settings = {key: allowed[0] for key, allowed in self.options.items()}
        self.settings.update(options or {})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        """Why these options are invalid for this backend, or None."""
        for key, value in options.items():
            if key not in cls.options:
                known = ", ".join(cls.options) or "none"
                return f"backend {cls.name} has no option {key!r} (options: {known})"
            if value not in cls.options[key]:
                return f"{cls.name} option {key} must be one of {', '.join(cls.options[key])}; got {value!r}"
        return None

    def calibration_batches(self, model: ModelDef, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
        """Inputs for static quantization, about `calibration_samples` samples in batches: the
        model's own generator, from its calibration pool (real sentences for minilm, disjoint
        from the evaluation ones) and with seeds that differ from the timed and evaluation
        inputs."""
        count = max(1, -(-self.calibration_samples // batch_size))
        return [
            model.make_inputs(batch_size, CALIBRATION_SEED + k, purpose="calibration") for k in range(count)
        ]

    @classmethod
    def availability(cls) -> Availability:
        missing = [name for name in cls.requires if importlib.util.find_spec(name) is None]
        if missing:
            fix = f"; install it with: pip install 'inferbench[{cls.extra}]'" if cls.extra else ""
            return Availability(False, f"{', '.join(missing)} not installed{fix}")
        return Availability(True)

    @classmethod
    def unsupported_reason(cls, model: ModelRef, precision: str) -> str | None:
        """Why this backend cannot run the combination, or None if it can."""
        if precision not in cls.precisions:
            supported = ", ".join(sorted(cls.precisions))
            return f"{cls.name} does not implement {precision} (supports {supported})"
        if model.kind == "onnx" and not cls.accepts_onnx:
            return f"{cls.name} needs a torch module; an ONNX file runs on ONNX-capable backends"
        if model.kind != "onnx" and not cls.accepts_torch:
            return f"{cls.name} only runs ONNX files"
        return None

    @classmethod
    def cpu_support(cls, cpu: Cpu, precision: str) -> Support | None:
        """How this CPU computes `precision` for this engine, or None where the capability
        model has nothing to say (a GPU backend, an engine it does not know)."""
        from inferbench.machine.capability import support

        if cls.device != "cpu" or cls.cpu_engine is None:
            return None
        return support(cpu, cls.cpu_engine, precision)

    @classmethod
    def versions(cls) -> dict[str, str]:
        found = {}
        for dist in cls.version_packages:
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                found[dist] = "not installed"
        return found

    @abstractmethod
    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        """Export/compile/convert the model for this precision and batch size."""

    def to_native(self, inputs: dict[str, np.ndarray]) -> Any:
        """Convert one input set to what `run` takes; called outside the timed region."""
        return inputs

    @abstractmethod
    def run(self, inputs: Any) -> Any:
        """One inference on prepared inputs."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Wait for queued work to finish (a no-op for synchronous CPU engines)."""

    def engine_time_ns(self) -> int | None:
        """The engine's own measurement of the last `run` (CUDA events around it on a GPU,
        OpenVINO's request latency), or None; recorded beside the host-side latency."""
        return None

    def observed_lowp(self, inputs: Any, precision: str) -> tuple[float | None, dict[str, Any]]:
        """For engines that learn what ran in bf16/int8 only by watching a run (torch's
        dispatcher): (share, how it was measured). Called once after the first inference and
        the accuracy check, outside every timed region; engines that read it at prepare time
        set `PrepareInfo.lowp_share` instead."""
        return None, {}

    def lowp(self, info: PrepareInfo, inputs: Any, precision: str) -> tuple[float | None, dict[str, Any]]:
        """The share of compute that ran in `precision`: from prepare, else observed."""
        if info.lowp_share is not None:
            return info.lowp_share, {}
        return self.observed_lowp(inputs, precision)

    def run_details(self) -> dict[str, Any]:
        """Facts known only after the timed loop (e.g. peak device memory), merged into the
        row's details before `close`."""
        return {}

    # -- throughput mode -------------------------------------------------------------------

    def stream_count(self) -> int:
        """Concurrent requests in throughput mode: as configured, else one per thread."""
        return self.streams or max(1, self.threads)

    def threads_per_stream(self) -> int:
        return max(1, self.threads // self.stream_count())

    def enter_stream(self, stream: int) -> None:  # noqa: B027 - optional hook
        """Called once in each stream's thread before its first request (thread settings)."""

    def run_on(self, stream: int, inputs: Any) -> Any:
        """One request on a stream; engines with per-stream state override this."""
        return self.run(inputs)

    # -- serve mode: the engine's own asynchronous API ---------------------------------------

    #: What `submit` calls, e.g. "AsyncInferQueue.start_async"; None: the engine has no
    #: asynchronous API here and serve mode runs `run_on` from a pool of slot threads.
    async_api: ClassVar[str | None] = None

    def submit(self, stream: int, inputs: Any, done: Callable[[BaseException | None], None]) -> None:
        """Start one request on `stream` and return; the engine calls `done(None)` from its own
        thread when it finishes, or `done(error)`. Only for backends that set `async_api`."""
        raise NotImplementedError(f"{self.name} has no asynchronous API")

    def run_throughput(
        self,
        inputs: list[Any],
        batch_size: int,
        seconds: float,
        min_requests: int,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> ThroughputRun:
        """Keep `stream_count()` requests in flight for at least `seconds` and `min_requests`
        completions; every request's start and end are recorded."""
        streams = self.stream_count()
        starts: list[list[int]] = [[] for _ in range(streams)]
        ends: list[list[int]] = [[] for _ in range(streams)]
        stop = threading.Event()
        failures: list[BaseException] = []
        begin = clock()

        def drive(k: int) -> None:
            try:
                self.enter_stream(k)
                i = k
                while not stop.is_set():
                    t0 = clock()
                    self.run_on(k, inputs[i % len(inputs)])
                    self.synchronize()
                    starts[k].append(t0)
                    ends[k].append(clock())
                    i += streams
            except BaseException as exc:  # surfaced in the calling thread below
                failures.append(exc)
                stop.set()

        workers = [threading.Thread(target=drive, args=(k,), daemon=True) for k in range(streams)]
        for w in workers:
            w.start()
        while not stop.wait(0.01):
            done = sum(len(e) for e in ends)
            if clock() - begin >= seconds * 1e9 and done >= min_requests:
                stop.set()
        for w in workers:
            w.join()
        if failures:
            raise failures[0]
        end = clock()
        return ThroughputRun(
            starts_ns=[t for s in starts for t in s],
            ends_ns=[t for e in ends for t in e],
            samples_per_request=batch_size,
            streams=streams,
            begin_ns=begin,
            end_ns=end,
            stream_ids=[k for k, e in enumerate(ends) for _ in e],
        )

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        """Outputs as float64-comparable numpy arrays, in the model's output order."""
        return [np.asarray(o) for o in output_list(outputs)]

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release engine resources."""
