"""The cell record: what one cell of a sweep is, field by field, declared once.

A record is one JSON object, `cells/<key>.json` in its run folder: built by the worker (what it
measured), completed by the runner (the cell's axes, key, run, machine and settings) and read
by everything after (compare, report, history, export). `CellRecord` declares its fields in
parts, one per kind of fact (the cell's axes, its outcome, latency, throughput, ...), each field
with its type and, where it shows outside the cell file, a `Column` saying where.

Every table of records is selected from this one declaration, never listed again:
`results.csv`'s columns (in declaration order), the report's results table, summary.md's cell
tables and the history database's metrics. A record holds only what its cell got to (an
unsupported cell has its axes, status and reason), so every field is optional to the type
checker; a stored record always has its axes, `status`, `cell_key`, `run_id` and
`schema_version`.
"""

# No `from __future__ import annotations`: the columns are read from the annotations when this
# module is imported (typing.get_type_hints), which needs them as objects, not strings.

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict, cast

__all__ = [
    "BOOL",
    "CSV_COLUMNS",
    "FIELDS",
    "LIST",
    "MAP",
    "METRIC_COLUMNS",
    "NUMBER",
    "PARTS",
    "SUMMARY_COLUMNS",
    "TABLE_COLUMNS",
    "TEXT",
    "CellRecord",
    "Column",
    "Field",
    "as_record",
    "is_number",
]


@dataclass(frozen=True)
class Column:
    """Where a record field shows besides its cell file.

    `csv`: a column of results.csv (columns keep the order fields are declared in);
    `table`: its place in the report's results table (1 = first);
    `summary`: a column of summary.md's cell tables (in declaration order);
    `metric`: a figure the history database keeps and plots (in declaration order; the
    database's schema has these, so adding one needs a migration in inferbench.history.db).
    """

    csv: bool = True
    table: int | None = None
    summary: bool = False
    metric: bool = False


class Axes(TypedDict, total=False):
    """The cell: these are `inferbench.config.Cell`'s fields, in its order (a test holds them
    equal). `mode` and `shape` are missing from records made before those axes."""

    model: Annotated[str, Column(table=1)]
    backend: Annotated[str, Column(table=2, summary=True)]
    precision: Annotated[str, Column(table=3, summary=True)]
    batch_size: Annotated[int, Column(table=4, summary=True)]
    threads: Annotated[int, Column(table=5, summary=True)]
    mode: Annotated[str, Column(table=6, summary=True)]
    shape: Annotated[str, Column()]  # the report shows it only where some cell has one


class Outcome(TypedDict, total=False):
    """What became of the cell (inferbench.status) and why, in words."""

    status: Annotated[str, Column(table=7, summary=True)]
    reason: Annotated[str, Column(table=27)]


class Latency(TypedDict, total=False):
    """One request's latency over the timed calls (throughput mode: under load), in ms."""

    latency_p50_ms: Annotated[float, Column(table=8, summary=True, metric=True)]
    latency_p50_ci_low_ms: Annotated[float, Column(table=9, summary=True, metric=True)]
    latency_p50_ci_high_ms: Annotated[float, Column(table=10, summary=True, metric=True)]
    latency_p90_ms: Annotated[float, Column(metric=True)]
    latency_p99_ms: Annotated[float, Column(table=11, summary=True, metric=True)]
    latency_mean_ms: Annotated[float, Column(metric=True)]
    latency_std_ms: Annotated[float, Column(metric=True)]
    latency_min_ms: Annotated[float, Column()]
    latency_max_ms: Annotated[float, Column()]
    latencies_ns: list[int]  # every timed call, pooled over processes
    process_latencies_ns: list[list[int]]  # the same, per process (`repeats` > 1)


class Throughput(TypedDict, total=False):
    """Samples per second: from the latencies in latency mode, counted in throughput mode."""

    throughput_sps: Annotated[float, Column(table=13, summary=True, metric=True)]
    throughput_ci_low_sps: Annotated[float, Column(table=14, metric=True)]
    throughput_ci_high_sps: Annotated[float, Column(table=15, metric=True)]
    streams: Annotated[int, Column(table=16)]
    # Against eager FP32 at the same model, shape, batch, threads and mode (inferbench.report.answer).
    speedup_vs_eager_fp32: Annotated[float, Column(csv=False, table=17, summary=True)]
    throughput_slices_sps: list[float]  # the counted rate per stretch of the run
    process_throughput_slices_sps: list[list[float]]
    throughput_wall_sps: float  # the plain count over the whole wall time, as a cross-check


class Sampling(TypedDict, total=False):
    """How far the figures can be trusted: samples, stop rules, spread between processes, warm-up."""

    iterations: Annotated[float, Column()]
    p50_half_width_pct: Annotated[float | None, Column()]
    throughput_half_width_pct: Annotated[float, Column()]
    p99_reliable: Annotated[bool, Column()]
    repeats: Annotated[int, Column()]
    process_p50_spread_pct: Annotated[float, Column(table=20)]
    process_throughput_spread_pct: Annotated[float, Column()]
    calibrated_spread_pct: Annotated[float, Column()]
    warmup_iterations: Annotated[int, Column()]
    warmup_s: Annotated[float, Column()]
    warmup_stable: Annotated[bool, Column()]
    capped: Annotated[bool, Column()]
    measure_s: float  # warm-up plus the timed loop


class Interference(TypedDict, total=False):
    """What the rest of the machine did during the timed window (inferbench.cell.interference)."""

    interference_pct: Annotated[float, Column()]
    steal_pct: Annotated[float, Column()]
    sys_pct: Annotated[float, Column()]
    nivcsw: Annotated[float, Column()]
    interfered: Annotated[bool, Column()]
    remeasured: Annotated[int, Column()]
    tick_pct: float
    run_delay_pct: float


class Cost(TypedDict, total=False):
    """What the cell cost before and besides its timed loop."""

    prepare_s: Annotated[float, Column(table=21)]
    first_inference_ms: Annotated[float, Column(table=22)]
    peak_rss_mb: Annotated[float, Column(table=23)]
    artifact_mb: Annotated[float, Column()]
    setup_s: float  # model, FLOPs and reference: cached after once
    worker_cell: int  # 0: this cell paid its shared cell's start-up


class Compute(TypedDict, total=False):
    """The work per sample, the rate it ran at against the machine's ceiling, and the engine's
    own clock."""

    flops_per_sample: Annotated[float | None, Column()]
    achieved_gflops: Annotated[float, Column(table=18)]
    peak_gflops: Annotated[float, Column()]
    pct_of_peak: Annotated[float, Column(table=19, summary=True)]
    engine_p50_ms: Annotated[float, Column(table=12)]
    engine_latencies_ns: list[int]


class Accuracy(TypedDict, total=False):
    """The engine's outputs against the FP32 reference on the evaluation set."""

    max_abs_err: Annotated[float, Column(table=24, summary=True)]
    rel_l2_err: Annotated[float, Column()]
    cosine: Annotated[float, Column(table=25)]
    top1_agreement: Annotated[float, Column()]
    accuracy_threshold: Annotated[float, Column()]
    accuracy_checked: Annotated[bool, Column()]
    eval_samples: Annotated[int, Column()]
    eval_s: float
    reference_cached: bool
    accuracy_from: str  # the cell of this worker whose check stands for this one's
    accuracy_from_rel_diff: float


class Engine(TypedDict, total=False):
    """What the engine really ran: its precision, the share of low-precision compute, its files."""

    engine_precision: Annotated[str, Column(table=26)]
    lowp_share: Annotated[float | None, Column()]
    lowp_flagged: Annotated[bool, Column()]
    artifact_cached: Annotated[bool | None, Column()]
    artifact_path: str
    details: dict[str, Any]
    backend_options: dict[str, Any]
    versions: dict[str, str]


class Environment(TypedDict, total=False):
    """The conditions the cell ran under."""

    cpu_native_bf16: Annotated[bool, Column()]
    cpu_native_int8: Annotated[bool, Column()]
    emulated: Annotated[bool, Column()]
    engine_versions: Annotated[str, Column()]  # results.csv only: `versions` as one text
    timing_scope: Annotated[str, Column()]
    pinned_cpus: Annotated[str, Column()]
    settings_hash: Annotated[str, Column()]
    settings: dict[str, Any]


class Run(TypedDict, total=False):
    """Where the record comes from: the worker's wall time, the key, run, shard, machine, the
    sweep session that measured it and the record's format."""

    wall_s: Annotated[float, Column()]
    cell_key: Annotated[str, Column()]
    run_id: Annotated[str, Column()]
    shard: Annotated[str, Column()]
    host: Annotated[str, Column()]
    schema_version: Annotated[int, Column()]
    session: int


class Serve(TypedDict, total=False):
    """Serve mode (inferbench.serve): the latency target and arrivals, the highest offered rate
    that met it under the best batching policy, and how well the load generator kept up. The
    last part, so results.csv's earlier columns keep their places."""

    slo_ms: Annotated[float, Column()]
    serve_percentile: Annotated[float, Column()]
    arrival: Annotated[str, Column()]
    burstiness: Annotated[float, Column()]
    # The best policy's peak: the highest rate that passed (empty: none did), and the lowest
    # rate above it that did not, with why (fail, undecided, harness-limited).
    max_qps_at_slo: Annotated[float | None, Column()]
    max_qps_first_unmet: Annotated[float | None, Column()]
    serve_upper_outcome: Annotated[str | None, Column()]
    # The policy with the highest peak (empty when no policy passed: none is best).
    best_max_batch: Annotated[int | None, Column()]
    best_max_wait_ms: Annotated[float | None, Column()]
    # The best policy's upper end is where the dispatcher, not the engine, fell behind.
    serve_harness_limited: Annotated[bool, Column()]
    # At the peak rate: the dispatcher's own lag, requests within the SLO per second, and the
    # p99 latency counted from the scheduled time.
    dispatch_lag_p99_ms: Annotated[float | None, Column()]
    goodput_qps: Annotated[float | None, Column()]
    serve_p99_ms: Annotated[float | None, Column()]
    # Every policy tried: its peak, and each trial's rate, verdict and latencies.
    serve_policies: list[dict[str, Any]]


class CellRecord(
    Axes,
    Outcome,
    Latency,
    Throughput,
    Sampling,
    Interference,
    Cost,
    Compute,
    Accuracy,
    Engine,
    Environment,
    Run,
    Serve,
    total=False,
):
    """One cell's record, its parts in results.csv's order."""


PARTS: tuple[type, ...] = (
    Axes,
    Outcome,
    Latency,
    Throughput,
    Sampling,
    Interference,
    Cost,
    Compute,
    Accuracy,
    Engine,
    Environment,
    Run,
    Serve,
)

TEXT, NUMBER, BOOL, LIST, MAP = "text", "number", "bool", "list", "map"
_KINDS: dict[type, str] = {str: TEXT, bool: BOOL, int: NUMBER, float: NUMBER, list: LIST, dict: MAP}


@dataclass(frozen=True)
class Field:
    """One field of the record: its name, the part it is declared in (`group`), its Python type
    (None left out), what kind of value that is, and where it shows (None: the cell file only)."""

    name: str
    group: str
    type: type
    kind: str
    column: Column | None


def _field(name: str, group: str, hint: Any) -> Field:
    column = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        column = next(e for e in extras if isinstance(e, Column))
    if isinstance(hint, types.UnionType):  # `float | None`: a float where there is one
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    python_type = typing.get_origin(hint) or hint
    return Field(name, group, python_type, _KINDS[python_type], column)


def _fields() -> dict[str, Field]:
    found = {}
    for part in PARTS:
        for name, hint in typing.get_type_hints(part, include_extras=True).items():
            found[name] = _field(name, part.__name__.lower(), hint)
    return found


#: Every field of the record by name, in declaration order.
FIELDS: Mapping[str, Field] = types.MappingProxyType(_fields())


def _shown(view: str) -> list[tuple[str, Column]]:
    """The fields `view` shows, with their columns, in declaration order."""
    return [(f.name, f.column) for f in FIELDS.values() if f.column is not None and getattr(f.column, view)]


#: results.csv's columns, in order.
CSV_COLUMNS = tuple(name for name, _ in _shown("csv"))
#: The report's results table, in order (before the shape and host columns it adds).
TABLE_COLUMNS = tuple(name for name, _ in sorted(_shown("table"), key=lambda shown: shown[1].table or 0))
#: summary.md's cell tables (each model's own table, so without the model).
SUMMARY_COLUMNS = tuple(name for name, _ in _shown("summary"))
#: The figures the history database keeps per cell.
METRIC_COLUMNS = tuple(name for name, _ in _shown("metric"))


def is_number(name: str) -> bool:
    """Whether a field's values are numbers (a CSV reads them back as numbers; empty = none)."""
    return FIELDS[name].kind == NUMBER


def as_record(fields: Mapping[str, Any]) -> CellRecord:
    """Figures computed by name elsewhere (a summary, an interval, an accuracy check), or a
    record read back from JSON, as record fields: for the type checker only (no copy, no check)."""
    return cast(CellRecord, fields)
