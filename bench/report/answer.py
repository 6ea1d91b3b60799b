"""The answer a run exists to give: per model, batch size and mode, which engine and precision
is fastest among the cells that can be trusted, how much faster, and at what accuracy cost.

The report, `summary.md` and the end of `run` all print what `answers()` returns, so the
three never disagree. A cell is trusted when its status is `ok` and nothing flagged it:
capped (the time budget ended its measurement), interfered (other work competed for the
cores), lowp_flagged (the engine ran too little of the model in the low precision asked for),
emulated (the precision was measured with --allow-emulated on a CPU that only emulates it)
or accuracy_checked false (no reference to check it against). Columns a run does not have
(older runs, engines that do not report them) count as "not flagged".

A run merged from shards on several machines is answered per host (`inferbench.machine.hosts`): a
cell is only ever ranked against, and sped up over, cells of the machine that measured it.

Serve mode (inferbench.report.serving) asks which engine, precision and batching policy serve
the most requests per second at p99 within the SLO: the cell with the highest `max_qps_at_slo`
wins, its best policy named. A harness-limited cell (the load generator, not the engine, fell
behind) never wins and is named in the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from inferbench.compare.core import BETWEEN_PROCESSES, SERVE_METRIC, WITHIN_PROCESS
from inferbench.config import CELL_AXES
from inferbench.machine.hosts import HOST, host_of, hosts_in, keys_with_host
from inferbench.report.serving import (
    SERVE,
    SERVE_COLUMNS,
    best_policy_text,
    slo_text,
)
from inferbench.status import HARNESS_LIMITED, NOT_RUN, OK

REFERENCE = ("torch", "fp32")  # speed-ups are against eager FP32 at the same batch size
# An answer chooses a backend and precision at each point of the other axes.
CHOSEN = ("backend", "precision")
GROUP_KEYS = tuple(axis for axis in CELL_AXES if axis not in CHOSEN)
#: Boolean columns that, when true, keep a measured cell out of the answer, with the words used.
FLAGS = {
    "capped": "capped",
    "interfered": "interference",
    "lowp_flagged": "low-precision share",
    "emulated": "emulated precision",
}
ACCURACY_FIGURES = ("rel_l2_err", "cosine", "top1_agreement")
RULE = (
    "Fastest cell per model, batch size and mode among those with status ok and no flag "
    "(capped, interference, low-precision share, emulated precision, accuracy not checked): p50 latency in "
    "latency mode, throughput in throughput mode, with its 95% interval. Speed-ups are over "
    "eager FP32 (torch fp32) and over the fastest FP32 cell of any engine. The runner-up is "
    "within noise when the two cells' noise bands overlap: between-process with --repeats (the "
    "interval, widened to where the fresh processes landed), or with a calibrated spread of this "
    "runner; else within-process only (one process per cell: a fresh process may land further off)."
)
#: What a judgement "within noise" covers, weakest first: the answer says the weaker of its two cells'.
CALIBRATED = f"{BETWEEN_PROCESSES} (calibrated)"
#: Serve mode: two peaks are apart when their search brackets do not overlap.
SEARCH = "search resolution"
NOISE_BASES = (SEARCH, WITHIN_PROCESS, CALIBRATED, BETWEEN_PROCESSES)
#: Modes whose figure is better larger (samples/s, requests/s at the SLO).
HIGHER_IS_BETTER = frozenset({"throughput", SERVE})
#: Anchors the report and summary.md give the list of cells that did not run.
NOT_RUN_ANCHOR = "cells-that-did-not-run"


def truthy(value: Any) -> bool:
    """A CSV boolean (True, 'True', 'true', 1) as a bool; blanks and NaN are False."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.number):
        return not math.isnan(float(value)) and float(value) != 0.0
    return str(value).strip().lower() in {"true", "yes", "1"}


def falsy(value: Any) -> bool:
    """Explicitly false (False, 'False', 0): unlike a blank, which means unknown."""
    if isinstance(value, bool | np.bool_):
        return not bool(value)
    if isinstance(value, int | float | np.number):
        return not math.isnan(float(value)) and float(value) == 0.0
    return str(value).strip().lower() in {"false", "no", "0"}


def harness_limited(row: dict[str, Any]) -> bool:
    """A serve cell whose load generator fell behind: its status, or its peak's upper end."""
    return str(row.get("status")) == HARNESS_LIMITED or truthy(row.get("serve_harness_limited"))


def exclusion(row: dict[str, Any]) -> str | None:
    """Why this cell is not a candidate for the answer, or None if it is."""
    status = str(row.get("status"))
    if status != OK:
        return status
    if truthy(row.get("serve_harness_limited")):
        return HARNESS_LIMITED
    for column, words in FLAGS.items():
        if truthy(row.get(column)):
            return words
    if falsy(row.get("accuracy_checked")):
        return "accuracy not checked"
    return None


def only_capped(row: dict[str, Any]) -> bool:
    """Measured, and kept out of the answer by `capped` alone."""
    flags = [column for column in FLAGS if truthy(row.get(column))]
    return str(row.get("status")) == OK and flags == ["capped"] and not falsy(row.get("accuracy_checked"))


def metric_of(mode: str) -> str:
    if mode == SERVE:
        return SERVE_METRIC
    return "throughput_sps" if mode == "throughput" else "latency_p50_ms"


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `speedup_vs_eager_fp32` against eager FP32 at the same model, batch, threads and mode:
    reference p50 / this p50 in latency mode, this throughput / reference's in throughput mode.
    With several hosts, on the same host too."""
    keys = keys_with_host(GROUP_KEYS, frame)
    frame = frame.assign(shape=frame["shape"].fillna("")) if "shape" in frame else frame.assign(shape="")
    serve = SERVE_METRIC in frame.columns  # serve mode: over eager FP32's own peak
    ok = frame[frame["status"] == OK]
    if serve:  # a harness-limited peak is a lower bound on the engine: no reference
        clean = (not harness_limited(r) for r in ok.to_dict("records"))
        ok = ok[np.fromiter(clean, dtype=bool, count=len(ok))]
    ref = ok[(ok["backend"] == REFERENCE[0]) & (ok["precision"] == REFERENCE[1])]
    ref = ref[[*keys, "latency_p50_ms", "throughput_sps", *([SERVE_METRIC] if serve else [])]]
    ref = ref.drop_duplicates(keys).rename(
        columns={"latency_p50_ms": "_ref_p50", "throughput_sps": "_ref_sps", SERVE_METRIC: "_ref_qps"}
    )
    merged = frame.drop(columns="speedup_vs_eager_fp32", errors="ignore").merge(ref, on=keys, how="left")
    speedup = np.where(
        merged["mode"] == "throughput",
        merged["throughput_sps"] / merged["_ref_sps"],
        merged["_ref_p50"] / merged["latency_p50_ms"],
    )
    if serve:
        peak = pd.to_numeric(merged[SERVE_METRIC], errors="coerce")
        speedup = np.where(merged["mode"] == SERVE, peak / pd.to_numeric(merged["_ref_qps"]), speedup)
    merged["speedup_vs_eager_fp32"] = speedup
    return merged.drop(columns=["_ref_p50", "_ref_sps", "_ref_qps"], errors="ignore")


@dataclass(frozen=True)
class Pick:
    """One chosen cell, with everything the answer says about it."""

    backend: str
    precision: str
    value: float  # p50 ms (latency mode) or samples/s (throughput mode)
    ci_low: float | None
    ci_high: float | None
    speedup_vs_eager_fp32: float | None
    speedup_vs_best_fp32: float | None
    best_fp32: str  # "backend fp32" of the best FP32 cell
    accuracy: dict[str, float]
    engine_precision: str
    lowp_share: float | None
    cell_key: str
    #: The range "within noise" is judged on, and what it covers (one of NOISE_BASES).
    band: tuple[float, float] | None = None
    noise: str = WITHIN_PROCESS
    #: Serve mode: the best batching policy ('max_batch 4 / wait 2 ms') and the target
    #: ('p99 ≤ 50 ms'); `ci_high` is then the first rate above the peak that did not meet it.
    policy: str = ""
    slo: str = ""

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}" + (f", {self.policy}" if self.policy else "")

    @property
    def ran(self) -> str:
        """What the engine really executed: its own precision, and the low-precision share."""
        ran = self.engine_precision or "?"
        if self.lowp_share is not None:
            ran += f" ({self.lowp_share:.0%} low precision)"
        return ran


@dataclass(frozen=True)
class Answer:
    """The verdict for one model, shape, batch size, thread count and mode."""

    model: str
    shape: str
    batch_size: int
    threads: int
    mode: str
    winner: Pick | None
    runner_up: Pick | None
    #: The runner-up's noise band overlaps the winner's: the order between them is within noise.
    within_noise: bool
    #: Measured but kept out of the answer, by reason (accuracy-fail, capped, ...).
    excluded: dict[str, int] = field(default_factory=dict)
    #: Did not produce numbers, by status (unsupported, unavailable, error, timeout).
    not_run: dict[str, int] = field(default_factory=dict)
    #: The machine every candidate ran on, when the run holds several ("" otherwise).
    host: str = ""
    #: With no winner: the fastest cell kept out only because it was capped (its maximum time
    #: came before the precision asked for). Shown as not decided, with its interval.
    provisional: Pick | None = None
    #: What the within-noise judgement covers: the weaker of the winner's and runner-up's.
    noise: str = WITHIN_PROCESS
    #: Serve mode: the cells left out because the load generator fell behind ('openvino int8').
    harness_limited: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        return metric_of(self.mode)

    @property
    def lower_is_better(self) -> bool:
        return self.mode not in HIGHER_IS_BETTER


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _interval(row: dict[str, Any], mode: str) -> tuple[float | None, float | None]:
    if mode == SERVE:  # the peak lies between the last rate met and the first rate not met
        return _num(row.get(SERVE_METRIC)), _num(row.get("max_qps_first_unmet"))
    if mode == "throughput":
        return _num(row.get("throughput_ci_low_sps")), _num(row.get("throughput_ci_high_sps"))
    return _num(row.get("latency_p50_ci_low_ms")), _num(row.get("latency_p50_ci_high_ms"))


def noise_band(row: dict[str, Any], mode: str) -> tuple[tuple[float, float] | None, str]:
    """The range a fresh measurement of this cell could land in, and what it covers.

    With --repeats the interval is already bootstrapped over processes; it is widened to the
    range the processes' own values spanned (`process_*_spread_pct`: (max - min) / median),
    since a few processes give a narrow interval easily. With one process, a calibrated spread
    of this runner (`calibrated_spread_pct`, same measure) widens the within-process interval
    on both sides; without one the interval stays within-process, and the answer says so."""
    value = _num(row.get(metric_of(mode)))
    low, high = _interval(row, mode)
    if value is None:
        return None, WITHIN_PROCESS
    if mode == SERVE:  # one search per cell: its bracket is all the answer knows
        return (value, value if high is None else max(value, high)), SEARCH
    low, high = (value if low is None else low), (value if high is None else high)
    spread_column = "process_throughput_spread_pct" if mode == "throughput" else "process_p50_spread_pct"
    calibrated = _num(row.get("calibrated_spread_pct"))
    if (_num(row.get("repeats")) or 1) > 1:
        half = value * (_num(row.get(spread_column)) or 0.0) / 200
        return (min(low, value - half), max(high, value + half)), BETWEEN_PROCESSES
    if calibrated is not None:
        half = value * calibrated / 200
        return (low - half, high + half), CALIBRATED
    # No interval (too few calls): no band, so only an equal value is within noise.
    return (None if low == high == value else (low, high)), WITHIN_PROCESS


def _speedup(value: float, reference: float | None, mode: str) -> float | None:
    if reference is None or reference <= 0 or value <= 0:
        return None
    return value / reference if mode in HIGHER_IS_BETTER else reference / value


def _pick(row: dict[str, Any], mode: str, eager: float | None, best_fp32: dict[str, Any] | None) -> Pick:
    value = float(row[metric_of(mode)])
    low, high = _interval(row, mode)
    best_value = _num(best_fp32[metric_of(mode)]) if best_fp32 else None
    figures = {k: _num(row.get(k)) for k in ACCURACY_FIGURES}
    band, noise = noise_band(row, mode)
    accuracy = {k: v for k, v in figures.items() if v is not None}
    return Pick(
        backend=str(row["backend"]),
        precision=str(row["precision"]),
        value=value,
        ci_low=low,
        ci_high=high,
        speedup_vs_eager_fp32=_speedup(value, eager, mode),
        speedup_vs_best_fp32=_speedup(value, best_value, mode),
        best_fp32=f"{best_fp32['backend']} fp32" if best_fp32 else "",
        accuracy=accuracy,
        engine_precision=str(row.get("engine_precision") or ""),
        lowp_share=_num(row.get("lowp_share")),
        cell_key=str(row.get("cell_key") or ""),
        band=band,
        noise=noise,
        policy=best_policy_text(row) if mode == SERVE else "",
        slo=slo_text(row) if mode == SERVE else "",
    )


def _overlap(a: Pick, b: Pick) -> bool:
    if a.band is None or b.band is None:
        return a.value == b.value
    return a.band[0] <= b.band[1] and b.band[0] <= a.band[1]


def _weaker_noise(a: Pick, b: Pick | None) -> str:
    """A judgement between two cells covers only what both their bands cover."""
    bases = [a.noise] + ([b.noise] if b else [])
    return min(bases, key=NOISE_BASES.index)


def _answer(key: tuple[Any, ...], rows: list[dict[str, Any]]) -> Answer:
    axes = dict(zip(GROUP_KEYS, key, strict=False))  # then the host, where there are several
    mode = axes["mode"]
    metric = metric_of(mode)
    candidates: list[tuple[int, dict[str, Any]]] = []
    excluded: dict[str, int] = {}
    not_run: dict[str, int] = {}
    for order, row in enumerate(rows):
        why = exclusion(row)
        if why is None and _num(row.get(metric)) is not None:
            candidates.append((order, row))
        elif str(row.get("status")) in NOT_RUN or why in ("error", "timeout"):
            not_run[why or ""] = not_run.get(why or "", 0) + 1
        else:
            reason = why or ("no rate met the SLO" if mode == SERVE else f"no {metric}")
            excluded[reason] = excluded.get(reason, 0) + 1

    sign = -1.0 if mode in HIGHER_IS_BETTER else 1.0

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[float, float, int]:
        # Ties on speed go to the more accurate cell, then to sweep order (deterministic).
        order, row = item
        err = _num(row.get("rel_l2_err"))
        return (sign * float(row[metric]), math.inf if err is None else err, order)

    ranked = [row for _, row in sorted(candidates, key=rank)]
    capped = (
        []
        if ranked
        else [(i, r) for i, r in enumerate(rows) if only_capped(r) and _num(r.get(metric)) is not None]
    )
    # The eager reference is the same number as the table's speedup_vs_eager_fp32 uses: any
    # `ok` eager FP32 cell, flagged or not (a flag keeps it from winning, not from measuring).
    eager_rows = [
        r
        for r in rows
        if (r["backend"], r["precision"]) == REFERENCE and r["status"] == OK and not harness_limited(r)
    ]
    eager = _num(eager_rows[0][metric]) if eager_rows else None
    fp32 = [r for r in ranked if r["precision"] == "fp32"]
    best_fp32 = fp32[0] if fp32 else None
    picks = [_pick(r, mode, eager, best_fp32) for r in ranked[:2]]
    winner = picks[0] if picks else None
    runner_up = picks[1] if len(picks) > 1 else None
    provisional = None
    if capped:
        leaders = [row for _, row in sorted(capped, key=rank)]
        fp32_capped = [r for r in leaders if r["precision"] == "fp32"]
        provisional = _pick(leaders[0], mode, eager, fp32_capped[0] if fp32_capped else None)
    return Answer(
        model=str(axes["model"]),
        shape=str(axes["shape"]),
        batch_size=int(axes["batch_size"]),
        threads=int(axes["threads"]) if _num(axes["threads"]) is not None else 0,
        mode=str(mode),
        winner=winner,
        runner_up=runner_up,
        within_noise=bool(winner and runner_up and _overlap(winner, runner_up)),
        excluded=dict(sorted(excluded.items())),
        not_run=dict(sorted(not_run.items())),
        host=host_of(rows[0]) if len(key) > len(GROUP_KEYS) else "",
        provisional=provisional,
        noise=_weaker_noise(winner, runner_up) if winner else WITHIN_PROCESS,
        # Named where counted: a cell excluded for another reason first (accuracy) is not one.
        harness_limited=tuple(
            f"{r['backend']} {r['precision']}" for r in rows if exclusion(r) == HARNESS_LIMITED
        ),
    )


def answers(frame: pd.DataFrame) -> list[Answer]:
    """One answer per model, batch size, thread count and mode, in sweep order; with several
    hosts, one per host too, host by host."""
    if frame.empty:
        return []
    frame = frame.copy()
    frame["mode"] = frame["mode"].fillna("latency") if "mode" in frame else "latency"
    frame["shape"] = frame["shape"].fillna("") if "shape" in frame else ""
    keys = keys_with_host(GROUP_KEYS, frame)
    if HOST in keys:  # a blank host (a row from an older shard) is a host of its own
        frame[HOST] = frame[HOST].fillna("")
    result = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        result.append(_answer(tuple(key), group.to_dict("records")))
    order = {host: i for i, host in enumerate(hosts_in(frame))}
    return sorted(result, key=lambda a: order.get(a.host, len(order)))  # stable: sweep order kept


def by_host(found: list[Answer]) -> list[tuple[str, list[Answer]]]:
    """The answers host by host ("" alone for a one-host run), in the order `answers` gives."""
    groups: dict[str, list[Answer]] = {}
    for answer in found:
        groups.setdefault(answer.host, []).append(answer)
    return list(groups.items())


def answer_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A run's table for answering: results.csv's columns, plus the flag columns the records
    carry that the CSV may not (yet) have. Report-only: nothing here is written to the CSV."""
    from inferbench.store.runfolder import to_frame

    frame = to_frame(records)
    for column in (*FLAGS, "accuracy_checked", "lowp_share", *SERVE_COLUMNS):
        if column not in frame.columns and any(column in r for r in records):
            frame[column] = [r.get(column) for r in records]
    return frame
