"""Sweep configuration: profiles (TOML) and the cells they expand to.

Everything here is validated on construction so that a bad profile or flag fails
before any worker starts, with a message naming the bad value and the allowed ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from inferbench.errors import UserError
from inferbench.models.onnx_inputs import InputOptions
from inferbench.models.shapes import builtin_label, canonical

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# latency: one request in flight. throughput: the engine kept saturated with concurrent requests.
# serve: open-loop arrivals against a p99 latency SLO, the highest rate that meets it
# (inferbench.serve; the settings are `ServeConfig`).
MODES = ("latency", "throughput", "serve")


# The longest time any setting may give (a week): interval timers and select() overflow on
# larger values (`timeout_seconds = inf` crashed the runner), and no cell is meant to run longer.
MAX_SECONDS = 7 * 24 * 3600.0
# Each throughput stream is a thread in the worker holding a request and its buffers.
MAX_STREAMS = 1024
# The least a sample's inputs take (128 int64 tokens): a batch whose inputs alone would not fit in
# memory at this size is warned about before any worker tries to allocate it.
MIN_SAMPLE_BYTES = 1024


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _is_number(value: Any) -> bool:
    """int or float, never bool (TOML `true` is not a count)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MeasureConfig:
    """How one cell is timed: warm-up, then timed iterations until both minimums are met."""

    warmup_iterations: int = 5
    warmup_seconds: float = 0.5
    # After both warm-up minimums, warm up on until the median of the last `stable_window`
    # iterations moves less than `stable_tolerance` between windows (or `warmup_max_seconds`).
    stable_window: int = 10
    stable_tolerance: float = 0.02
    warmup_max_seconds: float = 10.0
    min_iterations: int = 20
    min_seconds: float = 2.0
    max_iterations: int = 100_000
    max_seconds: float = 60.0
    # The timed loop stops once the 95% interval of its p50 is within this relative half-width
    # (0.01 = +-1%), looked at in geometric steps (inferbench.cell.stoprule); a cell that reaches a
    # maximum first is `capped`. 0 turns the rule off: the loop then runs for its tail samples.
    precision: float = 0.01
    # The same for throughput mode's counted rate (the batch-means interval, inferbench.cell.rate);
    # -1: as `precision`. A saturated machine's rate wanders more between stretches of a run
    # than one stream's p50, so a profile may ask less of it.
    throughput_precision: float = -1.0
    # Samples needed before p99 is reported as trustworthy (about 100 per 1% tail sample);
    # p99 is marked when it falls short. The loop runs on for them only with `chase_tail = 1`
    # (or precision = 0): the default does not pay for a reliable tail.
    tail_samples: int = 500
    chase_tail: int = 0
    # Bootstrap resamples for the confidence intervals of p50 and throughput.
    bootstrap_resamples: int = 2000
    input_sets: int = 4
    timeout_seconds: float = 900.0
    # Throughput mode: concurrent requests (streams) kept in flight; 0 = the engine's choice.
    streams: int = 0
    # Fresh worker processes per cell. Run-to-run variation between processes (memory layout,
    # thread placement, frequency) is often larger than within one; comparisons use it when >1.
    repeats: int = 1
    # 1: the cells of one (model, backend, precision, threads) share a worker process, one
    # cell at a time (inferbench.sweep.launch); 0: a fresh process per cell. Repeats > 1 always
    # use fresh processes.
    shared_workers: int = 1
    seed: int = 0
    # Interference (see inferbench.cell.interference): a timed window in which the rest of the
    # machine used more than `interference_max_pct` of the worker's cores, or the hypervisor
    # stole more than `steal_max_pct`, is re-measured up to `interference_retries` times, then
    # flagged `interfered` (comparisons call such a cell inconclusive, never a change).
    interference_max_pct: float = 10.0
    steal_max_pct: float = 5.0
    interference_retries: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _require(_is_number(value), f"measure.{f.name} must be a number; got {value!r}")
            if f.type == "int":  # counts: a TOML 1.5 or 1e6 is a float, never silently truncated
                _require(_is_count(value), f"measure.{f.name} must be an integer; got {value!r}")
            _require(math.isfinite(value), f"measure.{f.name} must be finite; got {value!r}")
        for name in ("warmup_seconds", "warmup_max_seconds", "min_seconds", "max_seconds", "timeout_seconds"):
            value = getattr(self, name)
            _require(
                0 <= value <= MAX_SECONDS,
                f"measure.{name} must be between 0 and {MAX_SECONDS:.0f} seconds; got {value!r}",
            )
        _require(self.max_seconds > 0, f"measure.max_seconds must be > 0; got {self.max_seconds!r}")
        _require(
            self.max_seconds >= self.min_seconds,
            f"measure.max_seconds must be >= measure.min_seconds ({self.min_seconds!r}); "
            f"got {self.max_seconds!r}",
        )
        _require(self.seed >= 0, f"measure.seed must be >= 0; got {self.seed!r}")
        _require(
            self.streams <= MAX_STREAMS,
            f"measure.streams must be at most {MAX_STREAMS} (each is a thread); got {self.streams!r}",
        )
        _require(self.warmup_iterations >= 0, "measure.warmup_iterations must be >= 0")
        _require(self.min_iterations >= 1, "measure.min_iterations must be >= 1")
        _require(
            self.max_iterations >= self.min_iterations,
            "measure.max_iterations must be >= measure.min_iterations",
        )
        _require(self.input_sets >= 1, "measure.input_sets must be >= 1")
        _require(self.repeats >= 1, "measure.repeats must be >= 1")
        _require(self.stable_window >= 2, "measure.stable_window must be >= 2")
        _require(self.stable_tolerance > 0, "measure.stable_tolerance must be > 0")
        _require(self.tail_samples >= 1, "measure.tail_samples must be >= 1")
        _require(0 <= self.precision < 1, "measure.precision must be in [0, 1) (0 = off, 0.01 = 1%)")
        _require(
            self.throughput_precision == -1 or 0 <= self.throughput_precision < 1,
            "measure.throughput_precision must be -1 (as precision) or in [0, 1) (0 = off, 0.02 = 2%)",
        )
        _require(self.chase_tail in (0, 1), "measure.chase_tail must be 0 or 1")
        _require(self.shared_workers in (0, 1), "measure.shared_workers must be 0 or 1")
        _require(self.bootstrap_resamples >= 100, "measure.bootstrap_resamples must be >= 100")
        _require(self.streams >= 0, "measure.streams must be >= 0 (0 = the engine's choice)")
        _require(self.timeout_seconds > 0, "measure.timeout_seconds must be > 0")
        _require(self.interference_max_pct > 0, "measure.interference_max_pct must be > 0")
        _require(self.steal_max_pct > 0, "measure.steal_max_pct must be > 0")
        _require(self.interference_retries >= 0, "measure.interference_retries must be >= 0")

    @property
    def rate_precision(self) -> float:
        """The half-width asked of throughput mode's counted rate (0: no stop rule)."""
        return self.precision if self.throughput_precision < 0 else self.throughput_precision


#: serve.engine_api's values: the engine's asynchronous API where it has one, or slot threads.
ENGINE_APIS = ("auto", "slots")


@dataclass(frozen=True)
class ServeConfig:
    """Serve mode (inferbench.serve): the latency target, the arrivals, the batching policies
    tried in each serve cell, and how long each trial at one rate runs.

    A serve cell's request is the cell's batch (normally 1 sample); the worker tries every
    policy of `max_batch` x `max_wait_ms`, finds each one's highest passing rate, and reports
    the best. Profile table `[serve]`; flags `--slo-ms`, `--arrival`, `--max-batch`, ...
    """

    # The bound on the `percentile` latency, counted from each request's scheduled time (ms).
    # Required for serve cells; None otherwise.
    slo_ms: float | None = None
    percentile: float = 0.99
    arrival: str = "poisson"
    # Gamma arrivals only: the shape (1 = Poisson, < 1 bursty).
    burstiness: float = 1.0
    max_batch: tuple[int, ...] = (1,)
    max_wait_ms: tuple[float, ...] = (0.0,)
    # Requests per trial; 0: LoadGen's early-stopping minimum with one query over the bound
    # (662 at p99), so a single stray slow query does not leave a trial undecided.
    queries: int = 0
    # A trial also lasts at least this long (s): more requests at high rates. A run shorter
    # than a few SLOs cannot show a queue that grows (LoadGen has a minimum duration too).
    min_seconds: float = 1.0
    # An UNDECIDED trial is run again with the queries it lacks, up to this many in all
    # (0: four times `queries`).
    max_queries: int = 0
    # Requests in flight (engine streams, each its own thread and buffers); 0: the backend's
    # stream count (its throughput-mode default).
    slots: int = 0
    # How requests reach the engine: "auto", through its own asynchronous API where the backend
    # has one (OpenVINO's AsyncInferQueue), else slot threads; "slots": slot threads
    # calling the blocking run always.
    engine_api: str = "auto"
    seed: int = 0
    # Trials per policy in the peak search (inferbench.serve.peak).
    max_trials: int = 12
    # The peak search's first rate (requests/s); None: from a short closed-loop measurement.
    start_qps: float | None = None

    def __post_init__(self) -> None:
        from inferbench.serve.schedule import ARRIVALS

        for name in ("max_batch", "max_wait_ms"):  # TOML and JSON give lists
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            _require(
                isinstance(getattr(self, name), tuple) and len(getattr(self, name)) > 0,
                f"serve.{name} must be a non-empty list; got {value!r}",
            )
        if self.slo_ms is not None:
            _require(
                _is_number(self.slo_ms) and 0 < self.slo_ms <= MAX_SECONDS * 1e3,
                f"serve.slo_ms must be a positive number of milliseconds; got {self.slo_ms!r}",
            )
        _require(
            _is_number(self.percentile) and 0 < self.percentile < 1,
            f"serve.percentile must be between 0 and 1 (0.99 = p99); got {self.percentile!r}",
        )
        _require(
            self.arrival in ARRIVALS,
            f"serve.arrival must be one of {', '.join(ARRIVALS)}; got {self.arrival!r}",
        )
        _require(
            _is_number(self.burstiness) and 0 < self.burstiness < math.inf,
            f"serve.burstiness must be a positive number (1 = Poisson); got {self.burstiness!r}",
        )
        _require(
            self.arrival == "gamma" or self.burstiness == 1,
            f"serve.burstiness applies to gamma arrivals only; got {self.burstiness!r} with {self.arrival}",
        )
        for b in self.max_batch:
            _require(_is_count(b) and b >= 1, f"serve.max_batch must be integers >= 1; got {b!r}")
        for w in self.max_wait_ms:
            _require(
                _is_number(w) and 0 <= w <= MAX_SECONDS * 1e3,
                f"serve.max_wait_ms must be numbers >= 0; got {w!r}",
            )
        for axis in ("max_batch", "max_wait_ms"):
            values = getattr(self, axis)
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            _require(not twice, f"serve.{axis}: {', '.join(twice)} given twice")
        _require(
            _is_number(self.min_seconds) and 0 <= self.min_seconds <= MAX_SECONDS,
            f"serve.min_seconds must be between 0 and {MAX_SECONDS:.0f} seconds; got {self.min_seconds!r}",
        )
        _require(
            self.engine_api in ENGINE_APIS,
            f"serve.engine_api must be one of {', '.join(ENGINE_APIS)}; got {self.engine_api!r}",
        )
        for name in ("queries", "max_queries", "slots", "seed"):
            value = getattr(self, name)
            _require(_is_count(value) and value >= 0, f"serve.{name} must be an integer >= 0; got {value!r}")
        _require(
            self.slots <= MAX_STREAMS,
            f"serve.slots must be at most {MAX_STREAMS} (each is a thread); got {self.slots!r}",
        )
        _require(
            _is_count(self.max_trials) and self.max_trials >= 1,
            f"serve.max_trials must be an integer >= 1; got {self.max_trials!r}",
        )
        if self.start_qps is not None:
            _require(
                _is_number(self.start_qps) and 0 < self.start_qps < math.inf,
                f"serve.start_qps must be a positive number of requests per second; got {self.start_qps!r}",
            )

    @property
    def trial_queries(self) -> int:
        """Requests in one trial: as set, else LoadGen's minimum with one query over the bound."""
        from inferbench.serve.verdict import min_queries

        return self.queries or min_queries(1, self.percentile)

    @property
    def query_cap(self) -> int:
        """The most requests a trial extended for an UNDECIDED verdict may hold: never fewer
        than a pass needs with one query over the bound, so a short trial can still pass."""
        from inferbench.serve.verdict import min_queries

        least = max(self.trial_queries, min_queries(1, self.percentile))
        return max(self.max_queries or 4 * self.trial_queries, least)

    def settings(self) -> dict[str, Any]:
        """What shapes a serve cell's numbers, for its settings hash."""
        return {f"serve.{name}": value for name, value in asdict(self).items() if value is not None}


# Relative L2 error allowed against the FP32 eager reference before a cell is `accuracy-fail`.
DEFAULT_MAX_REL_L2 = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 2e-2, "int8": 0.25}


@dataclass(frozen=True)
class AccuracyConfig:
    """Accuracy thresholds per precision, the calibration set for static quantization, the
    evaluation set every cell is checked on, and how much of a bf16/int8 cell's compute must
    really run in that precision before it counts as a clean result."""

    max_rel_l2: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_REL_L2))
    calibration_samples: int = 32
    # Samples in the fixed evaluation set (the same for every batch size, run in chunks of it).
    eval_samples: int = 64
    # A bf16/int8 cell whose engine ran less than this share of its compute in that precision
    # is flagged (`lowp_flagged`): timed and shown, never presented as a clean low-precision row.
    min_lowp_share: float = 0.5

    def __post_init__(self) -> None:
        _require(
            isinstance(self.max_rel_l2, dict),
            "accuracy.max_rel_l2 must be a table like { fp32 = 1e-3, int8 = 0.25 }; "
            f"got {self.max_rel_l2!r}",
        )
        bad = set(self.max_rel_l2) - set(PRECISIONS)
        _require(
            not bad,
            f"accuracy.max_rel_l2: precision must be one of {', '.join(PRECISIONS)}; got {sorted(bad)}",
        )
        for p, v in self.max_rel_l2.items():
            # inf: never judged (an `ab` round after the first checks one sample, not the model)
            _require(
                _is_number(v) and not math.isnan(v) and v > 0,
                f"accuracy.max_rel_l2.{p} must be a number > 0 (inf: never fail); got {v!r}",
            )
        for name in ("calibration_samples", "eval_samples"):
            value = getattr(self, name)
            _require(
                _is_count(value) and value >= 1,
                f"accuracy.{name} must be a positive integer; got {value!r}",
            )
        _require(
            _is_number(self.min_lowp_share) and 0 <= self.min_lowp_share <= 1,  # NaN fails both
            f"accuracy.min_lowp_share must be between 0 and 1; got {self.min_lowp_share!r}",
        )

    def threshold(self, precision: str) -> float:
        return float(self.max_rel_l2.get(precision, DEFAULT_MAX_REL_L2[precision]))


@dataclass(frozen=True)
class Cell:
    """One point of the sweep, run in its own worker process."""

    model: str
    backend: str
    precision: str
    batch_size: int
    threads: int
    mode: str = "latency"
    # The input shape the sweep varies (`--seq-len`, `--image-size`, several `--shape` values),
    # as `seq_len=32` or `input_ids=?x32`; "" is the model's default shape.
    shape: str = ""

    @property
    def key(self) -> str:
        key = f"{_safe(self.model)}__{self.backend}__{self.precision}__b{self.batch_size}__t{self.threads}"
        # Latency keys and default shapes predate their axes; leaving them out of the key lets
        # old baselines still match.
        if self.mode != "latency":
            key += f"__{self.mode}"
        return f"{key}__shape-{_safe(self.shape)}" if self.shape else key

    @property
    def title(self) -> str:
        """The cell in a few words: `mlp torch fp32 b8 t2 latency seq_len=32`."""
        words = f"{self.model} {self.backend} {self.precision} b{self.batch_size} t{self.threads} {self.mode}"
        return f"{words} {self.shape}" if self.shape else words


# The axes that name a cell, in key order: every table that joins or groups cells uses these.
CELL_AXES = tuple(f.name for f in fields(Cell))
# What a record from before an axis existed holds for it.
_AXIS_DEFAULTS = {"mode": "latency", "shape": ""}


def _safe(text: str) -> str:
    """Filesystem-safe: model labels can hold a folder, shapes hold `?` and `=`."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def cell_axes(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A record's cell axes in `CELL_AXES` order, with the defaults of axes added later (a
    blank read back from a CSV is the default too)."""
    return tuple(_axis_value(record, axis) for axis in CELL_AXES)


def _axis_value(record: Mapping[str, Any], axis: str) -> Any:
    value = record.get(axis)
    if axis in _AXIS_DEFAULTS and (value is None or value == "" or value != value):  # NaN != NaN
        return _AXIS_DEFAULTS[axis]
    return value


def axes_shown(shapes: Iterable[Any]) -> list[str]:
    """The cell axes a table shows: the shape only where some cell has one other than its
    model's default (so tables of runs without a shape axis look as they did)."""
    given = any(_axis_value({"shape": s}, "shape") for s in shapes)
    return [a for a in CELL_AXES if given or a != "shape"]


def cell_of(record: Mapping[str, Any]) -> Cell:
    """The cell a record (a result JSON, a CSV row) is about."""
    return Cell(*cell_axes(record))


@dataclass(frozen=True)
class Selection:
    """The part of a profile a command picks (`run`, `ab`): the sweep's axes and flags, and
    the inputs and engine options, as given on the command line. A field left None keeps the
    profile's value; axes and flags replace it, the input tables and backend options are
    merged over it entry by entry (`SweepConfig.with_overrides`). Read from the flags by
    `inferbench.commands.selection`."""

    models: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    threads: tuple[int, ...] | None = None
    modes: tuple[str, ...] | None = None
    shapes: tuple[str, ...] | None = None
    pin: bool | None = None
    allow_emulated: bool | None = None
    oversubscribe: bool | None = None
    backend_options: dict[str, dict[str, str]] | None = None
    input_shapes: dict[str, str] | None = None
    input_values: dict[str, str] | None = None
    batch_axes: dict[str, int] | None = None
    references: dict[str, str] | None = None
    # Serve mode's settings given (`--slo-ms`, `--max-batch`, ...), by `ServeConfig` field name:
    # merged over the profile's [serve] table.
    serve: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in _SWEEP_AXES:  # a list given for an axis is kept as the tuple the sweep holds
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def overrides(self) -> dict[str, Any]:
        """The fields given, by `SweepConfig` field name: what `with_overrides` applies, and
        what `ab` sends each side's agent (whose code, of any commit, takes them as keywords)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


# The sweep's axes, each a tuple of values.
_SWEEP_AXES = ("models", "backends", "precisions", "batch_sizes", "threads", "modes", "shapes")


@dataclass(frozen=True)
class SweepConfig:
    """Models x backends x precisions x batch sizes x threads, plus how to measure."""

    models: tuple[str, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1,)
    threads: tuple[int, ...] = (0,)
    modes: tuple[str, ...] = ("latency",)
    # The shape axis (inferbench.models.shapes): `seq_len=32`, `image_size=384`, `NAME=DIMS`;
    # "" is each model's default shape.
    shapes: tuple[str, ...] = ("",)
    # Pin each worker to its first `threads` allowed cores (os.sched_setaffinity).
    pin: bool = False
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    # Per-backend settings, e.g. {"torch": {"bf16_mode": "full"}}; each backend declares its own.
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = "custom"
    # Measure a precision this CPU only emulates for the cell's engine (inferbench.machine.capability)
    # instead of refusing it as `unsupported`; such rows are flagged `emulated`.
    allow_emulated: bool = False
    # ONNX files' inputs, by input name (inferbench.models.onnx_inputs): `--shape NAME=DIMS`,
    # `--input NAME=VALUE|FILE.npy`, `--batch-axis NAME=K`; profile table [inputs].
    input_shapes: dict[str, str] = field(default_factory=dict)
    input_values: dict[str, str] = field(default_factory=dict)
    batch_axes: dict[str, int] = field(default_factory=dict)
    # Models that arrive quantized: model name (or "" for the one such model) -> its FP32 ONNX
    # file, the accuracy reference (`--reference`; profile `references` under [inputs]).
    references: dict[str, str] = field(default_factory=dict)
    # Allow more threads per cell than this process may use (`--oversubscribe`; profile key
    # `oversubscribe = true` under [sweep]): such a cell measures time-slicing, not the engine.
    oversubscribe: bool = False
    # Serve mode's SLO, arrivals and batching policies (profile table [serve]).
    serve: ServeConfig = field(default_factory=ServeConfig)

    def __post_init__(self) -> None:
        _require(len(self.models) > 0, "at least one model is required")
        _require(len(self.backends) > 0, "at least one backend is required")
        for kind in ("models", "backends"):
            for name in getattr(self, kind):
                _require(isinstance(name, str) and bool(name), f"{kind} are names or paths; got {name!r}")
        for p in self.precisions:
            _require(p in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}; got {p!r}")
        for b in self.batch_sizes:
            _require(
                isinstance(b, int) and not isinstance(b, bool) and b > 0,
                f"batch size must be a positive integer; got {b!r}",
            )
        self._check_threads()
        for m in self.modes:
            _require(m in MODES, f"mode must be one of {', '.join(MODES)}; got {m!r}")
        _require(
            "serve" not in self.modes or self.serve.slo_ms is not None,
            "serve mode needs a latency target: --slo-ms MS (profile: slo_ms under [serve])",
        )
        _require(len(self.shapes) > 0, 'at least one shape is required ("" is the model\'s own)')
        for text in self.shapes:
            _require(isinstance(text, str), f"shape must be text like 'seq_len=128'; got {text!r}")
            _require(text == canonical(text), f"shape {text!r} is written {canonical(text)!r}")
        for axis in ("backends", "precisions", "batch_sizes", "threads", "modes", "shapes"):
            values = getattr(self, axis)
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            _require(not twice, f"{axis.replace('_', ' ')}: {', '.join(twice)} given twice")
        _require(isinstance(self.pin, bool), f"pin must be true or false; got {self.pin!r}")
        _require(
            isinstance(self.allow_emulated, bool),
            f"allow_emulated must be true or false; got {self.allow_emulated!r}",
        )
        for label, table in (("shape", self.input_shapes), ("input", self.input_values)):
            for name, text in table.items():
                _require(
                    isinstance(name, str) and bool(name) and isinstance(text, str),
                    f"{label} {name!r}: expected NAME=TEXT; got {text!r}",
                )
        for name, dim in self.batch_axes.items():
            _require(
                _is_count(dim) and dim >= 0,
                f"batch axis of {name!r} must be a non-negative integer; got {dim!r}",
            )

    def _check_threads(self) -> None:
        for t in self.threads:
            _require(
                _is_count(t) and t >= 0,
                f"threads must be a non-negative integer (0 = all cores); got {t!r}",
            )
        _require(
            isinstance(self.oversubscribe, bool),
            f"oversubscribe must be true or false; got {self.oversubscribe!r}",
        )
        usable = resolve_threads(0)
        for t in self.threads:
            _require(
                self.oversubscribe or t <= usable,
                f"threads {t} is more than the {usable} core(s) this process may use; "
                "pass --oversubscribe (profile: oversubscribe = true under [sweep]) to run it anyway",
            )

    def input_options(self) -> InputOptions:
        """What the sweep says about ONNX files' inputs."""
        return InputOptions(
            shapes=tuple(sorted(self.input_shapes.items())),
            values=tuple(sorted(self.input_values.items())),
            batch_axes=tuple(sorted(self.batch_axes.items())),
        )

    def model_labels(self) -> dict[str, str]:
        """Model reference -> the name cells, keys and rows use: an ONNX file's stem (`det` for
        `models/det.onnx`), with its folder's name before it where two share a stem."""
        return model_labels(self.models)

    def cells(self) -> list[Cell]:
        labels = self.model_labels()
        return [
            Cell(labels[m], b, p, bs, resolve_threads(t), mode, builtin_label(m, shape))
            for mode, m, b, p, bs, t, shape in itertools.product(
                self.modes,
                self.models,
                self.backends,
                self.precisions,
                self.batch_sizes,
                self.threads,
                self.shapes,
            )
        ]

    def with_overrides(self, selection: Selection | None = None, /, **overrides: Any) -> SweepConfig:
        """The sweep narrowed by a selection, re-validated. The keyword form (`models=[...]`,
        None meaning "as the profile has it") is how `ab`'s agents call it, in the code of
        whichever commit is measured; keep it."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if selection is not None:
            given = {**selection.overrides(), **given}
        for key in _SWEEP_AXES:
            if key in given:
                given[key] = tuple(given[key])
        for key in ("input_shapes", "input_values", "batch_axes", "references"):
            if key in given:  # the command line's, over the profile's, input by input
                given[key] = {**getattr(self, key), **given[key]}
        warn_memory_sized(given.get("batch_sizes", ()))
        if "serve" in given:  # the command line's settings over the profile's [serve] table
            given["serve"] = replace(self.serve, **given["serve"])
        if "backend_options" in given:  # merged over the profile's, option by option
            merged = {b: dict(o) for b, o in self.backend_options.items()}
            for backend, options in given["backend_options"].items():
                merged.setdefault(backend, {}).update(options)
            given["backend_options"] = merged
        return replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cell_settings(self, cell: Cell, option_defaults: dict[str, str]) -> dict[str, Any]:
        """The settings that shape `cell`'s numbers beyond its key, flat and comparable.

        `option_defaults` are the backend's own defaults, so `bf16_mode=autocast` given
        explicitly and left out are the same settings, and `full` is a different one. Streams
        count only in throughput mode; the timeout decides whether a cell ends, not its numbers.
        """
        given = self.backend_options.get(cell.backend, {})
        settings: dict[str, Any] = {
            f"{cell.backend}.{k}": v for k, v in sorted({**option_defaults, **given}.items())
        }
        settings["pin"] = self.pin
        if self.allow_emulated:  # only when set: older runs' settings hashes stay as they were
            settings["allow_emulated"] = True
        for name, table in (
            ("shape", self.input_shapes),
            ("input", self.input_values),
            ("batch_axis", self.batch_axes),
            ("reference", self.references),
        ):
            settings.update({f"{name}.{k}": v for k, v in sorted(table.items())})
        for name, value in asdict(self.measure).items():
            if name in _UNSHAPING_MEASURE or (name == "streams" and cell.mode != "throughput"):
                continue
            settings[f"measure.{name}"] = value
        for name, value in asdict(self.accuracy).items():
            if name == "max_rel_l2":  # only this cell's precision's threshold concerns it
                value = self.accuracy.threshold(cell.precision)
            settings[f"accuracy.{name}"] = value
        if cell.mode == "serve":  # only serve cells: the other modes' hashes stay as they were
            settings.update(self.serve.settings())
        return {name: _plain_number(value) for name, value in settings.items()}


# Measurement settings that cannot change a cell's numbers, left out of its settings hash.
# How cells are spread over processes is recorded in config.json, not hashed: a run folder
# made with fresh workers can be resumed with shared ones.
_UNSHAPING_MEASURE = frozenset({"timeout_seconds", "shared_workers"})


def _plain_number(value: Any) -> Any:
    """2 and 2.0 are one setting (a TOML `2` and the default `2.0` must hash alike)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def settings_hash(settings: dict[str, Any]) -> str:
    """A short, stable digest of `cell_settings`: equal settings, equal hash, on any machine."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def settings_difference(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`name: old -> new` for each setting that differs (a setting absent on one side shows `-`)."""
    names = sorted(set(recorded) | set(current))
    return [
        f"{n}: {recorded.get(n, '-')} -> {current.get(n, '-')}"
        for n in names
        if recorded.get(n, "-") != current.get(n, "-")
    ]


def model_labels(models: tuple[str, ...] | list[str]) -> dict[str, str]:
    """See `SweepConfig.model_labels`; two references that still share a label are an error."""
    labels = {m: Path(m).stem if m.endswith(".onnx") else m for m in models}
    taken = [label for label in labels.values()]
    for m, label in labels.items():
        if m.endswith(".onnx") and taken.count(label) > 1:
            labels[m] = f"{Path(m).resolve().parent.name}/{label}"
    seen: dict[str, str] = {}
    for m, label in labels.items():
        _require(label not in seen, f"models {seen.get(label)!r} and {m!r} would share the name {label!r}")
        seen[label] = m
    return labels


def warn_memory_sized(batch_sizes: Iterable[Any]) -> None:
    """A log warning (not an error: a model may really take such batches) for each batch size
    whose inputs alone, at even `MIN_SAMPLE_BYTES` a sample, would not fit in this machine's
    memory."""
    memory = _physical_memory()
    for b in batch_sizes:
        if _is_count(b) and memory and b * MIN_SAMPLE_BYTES > memory:
            log.warning(
                "batch size %d is memory-sized: at even %d bytes a sample its inputs alone take "
                "%.0f GiB, more than this machine's %.0f GiB of memory",
                b,
                MIN_SAMPLE_BYTES,
                b * MIN_SAMPLE_BYTES / 2**30,
                memory / 2**30,
            )


def _physical_memory() -> int:
    """Bytes of RAM (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def resolve_threads(threads: int) -> int:
    """0 means every core this process may use."""
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


_SWEEP_KEYS = {
    "models",
    "backends",
    "precisions",
    "batch_sizes",
    "threads",
    "modes",
    "shapes",
    "pin",
    "allow_emulated",
    "oversubscribe",
}
_SWEEP_FLAGS = {"pin", "allow_emulated", "oversubscribe"}


def profile_names() -> list[str]:
    folder = resources.files("inferbench") / "profiles"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def _is_profile_file(name_or_path: str) -> bool:
    path = Path(name_or_path)
    return path.suffix == ".toml" or path.exists()


def profile_id(name_or_path: str) -> str:
    """How a run records its profile, for `--resume` to find it: a built-in profile's name, or
    a profile file's absolute path (two folders' `cpu.toml` are different profiles)."""
    return str(Path(name_or_path).resolve()) if _is_profile_file(name_or_path) else name_or_path


def load_profile(name_or_path: str) -> SweepConfig:
    """Load a built-in profile by name (`cpu`, `smoke`, ...) or a TOML file by path."""
    path = Path(name_or_path)
    if _is_profile_file(name_or_path):
        _require(path.is_file(), f"profile file not found: {name_or_path}")
        text = path.read_text()
        name = path.stem
    else:
        names = profile_names()
        _require(
            name_or_path in names,
            f"unknown profile {name_or_path!r}; choose one of {', '.join(names)} or a .toml path",
        )
        text = (resources.files("inferbench") / "profiles" / f"{name_or_path}.toml").read_text()
        name = name_or_path
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed profile {name_or_path}: {exc}") from None
    return profile_from_dict(data, name)


def profile_from_dict(data: dict[str, Any], name: str = "custom") -> SweepConfig:
    unknown = set(data) - {"sweep", "measure", "accuracy", "backend_options", "inputs", "serve"}
    _require(not unknown, f"profile {name}: unknown section(s) {sorted(unknown)}")
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        raise UserError(f"profile {name}: missing [sweep] section")
    bad = set(sweep) - _SWEEP_KEYS
    _require(not bad, f"profile {name}: unknown [sweep] key(s) {sorted(bad)}")
    for key in _SWEEP_KEYS & set(sweep) - _SWEEP_FLAGS:
        _require(isinstance(sweep[key], list), f"profile {name}: sweep.{key} must be a list")
    warn_memory_sized(sweep.get("batch_sizes", ()))
    measure_data = data.get("measure", {})
    if not isinstance(measure_data, dict):
        raise UserError(f"profile {name}: [measure] must be a table")
    known = {f.name for f in fields(MeasureConfig)}
    bad = set(measure_data) - known
    _require(not bad, f"profile {name}: unknown [measure] key(s) {sorted(bad)}")
    accuracy_data = data.get("accuracy", {})
    if not isinstance(accuracy_data, dict):
        raise UserError(f"profile {name}: [accuracy] must be a table")
    bad = set(accuracy_data) - {f.name for f in fields(AccuracyConfig)}
    _require(not bad, f"profile {name}: unknown [accuracy] key(s) {sorted(bad)}")
    if "max_rel_l2" in accuracy_data:
        limits = accuracy_data["max_rel_l2"]
        _require(
            isinstance(limits, dict),
            f"profile {name}: accuracy.max_rel_l2 must be a table like {{ fp32 = 1e-3, int8 = 0.25 }}; "
            f"got {limits!r}",
        )
        accuracy_data = {
            **accuracy_data,
            "max_rel_l2": {**DEFAULT_MAX_REL_L2, **accuracy_data["max_rel_l2"]},
        }
    _require("models" in sweep, f"profile {name}: sweep.models is required")
    _require("backends" in sweep, f"profile {name}: sweep.backends is required")
    return SweepConfig(
        models=tuple(sweep["models"]),
        backends=tuple(sweep["backends"]),
        precisions=tuple(sweep.get("precisions", ["fp32"])),
        batch_sizes=tuple(sweep.get("batch_sizes", [1])),
        threads=tuple(sweep.get("threads", [0])),
        modes=tuple(sweep.get("modes", ["latency"])),
        shapes=tuple(_canonical_shapes(sweep.get("shapes", [""]), name)),
        pin=sweep.get("pin", False),
        allow_emulated=sweep.get("allow_emulated", False),
        oversubscribe=sweep.get("oversubscribe", False),
        measure=MeasureConfig(**measure_data),
        accuracy=AccuracyConfig(**accuracy_data),
        backend_options=_backend_options(data.get("backend_options", {}), name),
        serve=_serve_table(data.get("serve", {}), name),
        name=name,
        **_inputs_table(data.get("inputs", {}), name),
    )


def _serve_table(data: Any, name: str) -> ServeConfig:
    _require(isinstance(data, dict), f"profile {name}: [serve] must be a table")
    bad = set(data) - {f.name for f in fields(ServeConfig)}
    _require(not bad, f"profile {name}: unknown [serve] key(s) {sorted(bad)}")
    return ServeConfig(**data)


def _canonical_shapes(shapes: list[Any], name: str) -> list[str]:
    for text in shapes:
        _require(
            isinstance(text, str), f"profile {name}: sweep.shapes holds text like 'seq_len=128'; got {text!r}"
        )
    return [canonical(text) for text in shapes]


def _inputs_table(data: Any, name: str) -> dict[str, Any]:
    """The profile's [inputs] table: shapes, values and batch_axes, each by input name, and
    references by model name."""
    _require(isinstance(data, dict), f"profile {name}: [inputs] must be a table")
    bad = set(data) - {"shapes", "values", "batch_axes", "references"}
    _require(not bad, f"profile {name}: unknown [inputs] key(s) {sorted(bad)}")
    found: dict[str, Any] = {}
    for key, field_name in (
        ("shapes", "input_shapes"),
        ("values", "input_values"),
        ("batch_axes", "batch_axes"),
        ("references", "references"),
    ):
        table = data.get(key, {})
        _require(isinstance(table, dict), f"profile {name}: inputs.{key} must be a table of NAME = ...")
        found[field_name] = {str(k): (v if key == "batch_axes" else str(v)) for k, v in table.items()}
    return found


def _backend_options(data: Any, name: str) -> dict[str, dict[str, Any]]:
    ok = isinstance(data, dict) and all(isinstance(v, dict) for v in data.values())
    _require(ok, f"profile {name}: [backend_options] must hold one table per backend")
    return {backend: dict(options) for backend, options in data.items()}
