"""The compare core: two runs' cell records in, one verdict per cell and metric out, and the
decision rules on those verdicts (`exit_code`, `nothing_timed`). Shared by `inferbench compare`
(`inferbench.compare.runs`, which reads the run folders) and `inferbench ab`; the outputs
(`compare_report`, `compare_html`) only render what this module decided.

Each cell in both runs and each metric (p50, p99 latency, throughput) becomes one estimate of
the change (see `inferbench.compare.verdict`), from the best unit the runs allow:

- both runs measured the cell in several fresh processes (`repeats`): one value per process,
  Welch's t on log values, because on a shared machine the level moves between processes by
  more than within one;
- otherwise (one process per side): a bootstrap over the iterations, whose standard error
  feeds a normal test. That covers the noise within each process only. A process-level shift
  (memory layout, frequency, a neighbour) is invisible to it, and the markdown says so.

p50 gates, and throughput in throughput-mode cells (`gates`); p99, and a latency-mode cell's
throughput, are advisory (reported, never a failure). A cell that ran in BASE
and is broken or missing in NEW fails the comparison; a cell whose timed window was disturbed
(`interfered`) is inconclusive, never a change.

A serve-mode cell (inferbench.serve) is compared on one metric, `max_qps_at_slo` (the most
requests/s meeting its latency target; higher is better), and it gates. One peak search per side
gives one number bracketed by the next rate tried, which did not pass: the estimate's spread is
that bracket (`peak_estimate`), the search's resolution, not the run-to-run noise (`ab`'s paired
rounds measure that). A side whose load generator could not keep up (status `harness-limited`, or
`serve_harness_limited`: the peak is where the dispatcher fell behind) is not a result: the cell
is inconclusive, never a regression.

Runs merged from several machines keep machines apart: a cell is matched on its key and its
host. A cell that BASE and NEW measured on different hosts is an environment difference, like
two runs from different CPUs (`inferbench.compare.envcheck`): `compare` refuses it unless
`--allow-mismatch`, and here it is inconclusive, never a regression.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from inferbench.compare.sequential import Looks
from inferbench.compare.verdict import (
    INCONCLUSIVE,
    REGRESSION,
    Decision,
    Estimate,
    decide,
    decide_sequential,
    welch_estimate,
)
from inferbench.config import CELL_AXES, cell_axes
from inferbench.errors import EXIT_OK, EXIT_REGRESSION, EXIT_UNDECIDED, UserError
from inferbench.machine.hosts import HOST, host_of, several_hosts
from inferbench.status import HARNESS_LIMITED, OK

KEY = list(CELL_AXES)


def gates(metric: str, mode: str, latency: str = "p50") -> bool:
    """Whether a metric can fail a comparison: the gating latency statistic (`latency`: p50, or
    the per-process minimum, `ab --gate-on min`) always, throughput in throughput mode.

    In latency mode throughput is batch / mean latency of the very calls p50 is the median of:
    it tells a user nothing p50 does not, but a mean carries every stall, and between fresh
    processes on a shared 2-vCPU machine it spread 2-3x as much as p50 (gate trials,
    docs/measurements/2026-11-24-gate-trials.md). Gating on it there doubled the tests Holm
    corrects for and left most cells undecided, for no regression p50 would miss. It is
    still shown, as advisory, like p99."""
    return (
        metric == latency
        or (metric == "throughput" and mode == "throughput")
        or metric in COUNTED
        or metric == SERVE_METRIC
    )


@dataclass(frozen=True)
class Metric:
    name: str
    statistic: Callable[..., Any]  # f(samples, axis) -> value, vectorized over axis
    higher_is_better: bool
    # Samples are rates (throughput mode's per-slice samples/s), not latencies.
    from_rates: bool = False

    def worse_when_larger(self) -> bool:
        """Whether a larger statistic of the samples is worse (latency-based metrics)."""
        return not self.higher_is_better or not self.from_rates


def _p99(x: np.ndarray, axis: int = -1) -> Any:
    return np.percentile(x, 99, axis=axis)


# Throughput in latency mode is batch / mean latency: its change is that of the mean latency.
METRICS = {
    "p50": Metric("p50", np.median, higher_is_better=False),
    "p99": Metric("p99", _p99, higher_is_better=False),
    "throughput": Metric("throughput", np.mean, higher_is_better=True),
    # The fastest call of a process: what the code costs with the least of the machine's noise
    # on top (`ab --gate-on min`; one value per process, never bootstrapped).
    "min": Metric("min", np.min, higher_is_better=False),
}
#: Counted (not timed) metrics, with their default thresholds: `ab --instructions` decides
#: them by their counts (`inferbench.compare.verdict.decide_count`), outside the timed tests' family.
COUNTED = {"instructions": 0.01}
#: Latency statistics a comparison can gate on (`CompareOptions.gate_on`).
GATE_ON = ("p50", "min")
# Throughput mode counts completions: its samples are the run's per-slice rates.
COUNTED_THROUGHPUT = Metric("throughput", np.mean, higher_is_better=True, from_rates=True)
#: Serve mode's one metric: the most requests/s whose tail latency met the SLO.
SERVE_METRIC = "max_qps_at_slo"
SERVE_MODE = "serve"
VALUE_COLUMN = {
    "p50": "latency_p50_ms",
    "p99": "latency_p99_ms",
    "throughput": "throughput_sps",
    "min": "latency_min_ms",
    SERVE_METRIC: SERVE_METRIC,
}
#: Metrics whose larger value is better: a ratio NEW/BASE below 1 is worse.
HIGHER_IS_BETTER = frozenset({"throughput", SERVE_METRIC})


#: What an interval covers (`compare.csv` column `interval`): the noise inside one process per
#: side only, or also the spread from process to process (fresh processes, or `ab`'s rounds).
WITHIN_PROCESS = "within-process"
BETWEEN_PROCESSES = "between-process"
#: "search": one peak search per side (serve mode), bracketed by the search's resolution.
INTERVAL_COVERS = {
    "iteration": WITHIN_PROCESS,
    "process": BETWEEN_PROCESSES,
    "round": BETWEEN_PROCESSES,
    "search": WITHIN_PROCESS,
}


@dataclass(frozen=True)
class CompareOptions:
    max_regression: float = 0.05
    thresholds: dict[str, float] = field(default_factory=dict)  # per-metric overrides
    alpha: float = 0.05
    confidence: float = 0.95
    n_resamples: int = 2000
    metrics: tuple[str, ...] = ("p50", "p99", "throughput")
    seed: int = 0
    gate_on: str = "p50"  # the latency statistic that gates (GATE_ON); compared even if not in metrics

    @property
    def compared(self) -> tuple[str, ...]:
        """The metrics compared: the gating latency statistic first, then `metrics`."""
        return (self.gate_on, *(m for m in self.metrics if m != self.gate_on))

    def __post_init__(self) -> None:
        if self.gate_on not in GATE_ON:
            raise UserError(f"--gate-on must be one of {', '.join(GATE_ON)}; got {self.gate_on!r}")
        for name in self.metrics:
            if name not in METRICS:
                raise UserError(f"metric must be one of {', '.join(METRICS)}; got {name!r}")
        for name in self.thresholds:
            if name not in METRICS and name not in COUNTED and name != SERVE_METRIC:
                known = ", ".join([*METRICS, *COUNTED, SERVE_METRIC])
                raise UserError(f"metric must be one of {known}; got {name!r}")
        for value in (self.max_regression, *self.thresholds.values()):
            if not 0 < value < 1:
                raise UserError(f"regression threshold must be between 0% and 100%; got {value:.0%}")
        if not 0 < self.alpha < 1:
            raise UserError(f"alpha must be between 0 and 1; got {self.alpha}")
        if not 0 < self.confidence < 1:
            raise UserError(f"confidence must be between 0 and 1; got {self.confidence}")

    def threshold(self, metric: str) -> float:
        return self.thresholds.get(metric, COUNTED.get(metric, self.max_regression))

    def compared_in(self, mode: str, compared: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The metrics a cell of `mode` is compared on: serve mode's peak alone, else `compared`
        (default `self.compared`)."""
        return (SERVE_METRIC,) if mode == SERVE_MODE else (compared or self.compared)


def harness_limited(record: dict[str, Any]) -> bool:
    """A serve record the load generator could not drive: not a result (status
    `harness-limited`, or a peak that is where the dispatcher, not the engine, fell behind)."""
    return record.get("status") == HARNESS_LIMITED or record.get("serve_harness_limited") is True


def _bracket_log(record: dict[str, Any]) -> tuple[float, float] | None:
    """Where a serve cell's knee lies, on the log scale: from its highest passing rate to the
    first rate above it that did not pass. Without an unmet rate (the search reached its
    ceiling) the knee is at least the peak: a bracket of the search's 5% resolution; with no
    passing rate it is below the lowest rate tried. None: neither is known."""
    peak, unmet = _positive(record.get(SERVE_METRIC)), _positive(record.get("max_qps_first_unmet"))
    if peak is not None:
        return math.log(peak), math.log(unmet if unmet is not None and unmet > peak else peak * 1.05)
    if unmet is not None:
        return math.log(unmet), math.log(unmet)
    return None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and math.isfinite(number) else None


def peak_estimate(base: dict[str, Any], new: dict[str, Any]) -> Estimate | None:
    """The change of `max_qps_at_slo` between two serve records, positive when NEW serves fewer
    requests/s: the log ratio of the brackets' geometric middles, with each knee taken as
    uniform over its bracket (standard deviation width / sqrt(12))."""
    b, n = _bracket_log(base), _bracket_log(new)
    if b is None or n is None:
        return None
    middle_b, middle_n = (b[0] + b[1]) / 2, (n[0] + n[1]) / 2
    se = math.hypot(b[1] - b[0], n[1] - n[0]) / math.sqrt(12)
    return Estimate(middle_b - middle_n, se, n=2)


def bootstrap_estimate(
    base: np.ndarray, new: np.ndarray, metric: Metric, resamples: int, rng: np.random.Generator
) -> Estimate:
    """Iterations as the unit: the log change of the statistic and its bootstrap standard
    error (each side resampled on its own), for a normal test with no p-value floor."""

    def log_stat_se(x: np.ndarray) -> tuple[float, float]:
        if metric.statistic is np.mean:  # the delta method is exact enough and free
            return float(np.log(x.mean())), float(x.std(ddof=1) / x.mean() / np.sqrt(len(x)))
        # In chunks: 2000 resamples of 60 000 microsecond-scale samples do not fit at once.
        chunk = max(1, int(2e7 // max(1, len(x))))
        values = []
        for start in range(0, resamples, chunk):
            idx = rng.integers(0, len(x), size=(min(chunk, resamples - start), len(x)))
            values.append(np.log(metric.statistic(x[idx], axis=1)))
        return float(np.log(metric.statistic(x))), float(np.concatenate(values).std(ddof=1))

    b, b_se = log_stat_se(base)
    n, n_se = log_stat_se(new)
    worse = (n - b) if metric.worse_when_larger() else (b - n)
    return Estimate(worse, float(np.hypot(b_se, n_se)), n=len(base) + len(new))


def compare_records(
    base: list[dict[str, Any]], new: list[dict[str, Any]], options: CompareOptions
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-metric comparison rows (with verdicts) and the cells present in one run only."""
    apart = several_hosts(base) or several_hosts(new)
    pairs, only_new = pair_cells(base, new)
    unmatched = [{**_cell(b, apart), "only_in": "base"} for b, n in pairs if n is None]
    unmatched += [{**_cell(n, apart), "only_in": "new"} for n in only_new]
    rng = np.random.default_rng(options.seed)
    rows: list[dict[str, Any]] = []
    estimates: list[Estimate | None] = []
    for b, n in pairs:
        cell = _cell(b, False)
        if apart:
            cell.update(base_host=host_of(b), new_host=host_of(n) if n is not None else "")
        moved = _moved(b, n, apart)
        if n is None or b["status"] != OK or n["status"] != OK:
            row = status_row(cell, b, n)
            if moved:  # another machine may lack an engine: not a breakage of the code
                row.update(broken=False, verdict=f"{row['verdict']} on another host", note=moved)
            rows.append(row)
            estimates.append(None)
            continue
        if str(b.get("mode")) == SERVE_MODE:
            rows.append(_serve_row(cell, b, n, moved))
            estimates.append(None if moved or _limited_sides(b, n) else peak_estimate(b, n))
            continue
        disturbed = [side for side, r in (("base", b), ("new", n)) if r.get("interfered")]
        for name in options.compared:
            metric, b_procs, n_procs = _samples(b, n, name)
            per_process = len(b_procs) > 1 and len(n_procs) > 1
            estimate: Estimate | None = None
            if disturbed or moved:
                pass  # a disturbed window, or another machine, says nothing about the code
            elif per_process:
                b_units = [float(metric.statistic(x)) for x in b_procs]
                n_units = [float(metric.statistic(x)) for x in n_procs]
                estimate = welch_estimate(b_units, n_units, not metric.worse_when_larger())
            else:
                b_all, n_all = np.concatenate(b_procs), np.concatenate(n_procs)
                estimate = bootstrap_estimate(b_all, n_all, metric, options.n_resamples, rng)
            rows.append(
                {
                    **cell,
                    "metric": name,
                    "base_status": OK,
                    "new_status": OK,
                    "base_value": float(b[VALUE_COLUMN[name]]),
                    "new_value": float(n[VALUE_COLUMN[name]]),
                    "n_base": len(b_procs) if per_process else sum(map(len, b_procs)),
                    "n_new": len(n_procs) if per_process else sum(map(len, n_procs)),
                    "unit": "process" if per_process else "iteration",
                    "note": moved or (f"interfered ({', '.join(disturbed)})" if disturbed else ""),
                }
            )
            estimates.append(estimate)
    return judge(rows, estimates, options), pd.DataFrame(unmatched)


def _limited_sides(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [side for side, r in (("base", base), ("new", new)) if harness_limited(r)]


def _serve_row(cell: dict[str, Any], base: dict[str, Any], new: dict[str, Any], moved: str) -> dict[str, Any]:
    """A serve cell measured on both sides: its `max_qps_at_slo` row (judged from its brackets)."""
    limited = _limited_sides(base, new)
    note = moved or (f"harness-limited ({', '.join(limited)}): not a result" if limited else "")
    return {
        **cell,
        "metric": SERVE_METRIC,
        "base_status": OK,
        "new_status": OK,
        "base_value": _value(base.get(SERVE_METRIC)),
        "new_value": _value(new.get(SERVE_METRIC)),
        "n_base": len(base.get("serve_policies") or []) or 1,
        "n_new": len(new.get("serve_policies") or []) or 1,
        "unit": "search",
        "note": note,
    }


def _value(value: Any) -> float:
    return _positive(value) or float("nan")


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return cell_axes(record)


def _cell(record: dict[str, Any], with_host: bool) -> dict[str, Any]:
    cell = dict(zip(KEY, _key(record), strict=True))
    return {**cell, HOST: host_of(record)} if with_host else cell


def _moved(base: dict[str, Any], new: dict[str, Any] | None, apart: bool) -> str:
    """Why a pair is an environment difference ("" when it is not)."""
    if not apart or new is None or host_of(base) == host_of(new):
        return ""
    return f"host differs (BASE {host_of(base) or '?'}, NEW {host_of(new) or '?'})"


def pair_cells(
    base: list[dict[str, Any]], new: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any] | None]], list[dict[str, Any]]]:
    """(BASE record, its NEW record or None) in BASE's order, and the NEW records no BASE cell
    matched. With several hosts on either side a cell is matched on its key and host; failing
    that, on its key alone with another host (a pair `_moved` names), never silently."""
    apart = several_hosts(base) or several_hosts(new)

    def index(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {(*_key(r), host_of(r) if apart else ""): r for r in records}

    base_ix, new_ix = index(base), index(new)
    elsewhere: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for key in new_ix:
        if key not in base_ix:
            elsewhere.setdefault(key[:-1], []).append(key)
    pairs: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    used: set[tuple[Any, ...]] = set()
    for key, record in base_ix.items():
        match = key if key in new_ix else None
        if match is None:  # the same cell measured on another machine
            match = next((k for k in elsewhere.get(key[:-1], []) if k not in used), None)
        if match is not None:
            used.add(match)
        pairs.append((record, new_ix[match] if match is not None else None))
    return pairs, [r for k, r in new_ix.items() if k not in used]


def moved_cells(base: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """'cell: host differs (...)' for every cell BASE and NEW measured on different hosts."""
    apart = several_hosts(base) or several_hosts(new)
    pairs, _ = pair_cells(base, new)
    named = (("/".join(str(v) for v in _key(b) if v != ""), _moved(b, n, apart)) for b, n in pairs)
    return [f"{name}: {why}" for name, why in named if why]


def status_row(cell: dict[str, Any], base: dict[str, Any], new: dict[str, Any] | None) -> dict[str, Any]:
    """A cell that was not measured on both sides: ok -> anything else (or missing) fails."""
    new_status = new["status"] if new is not None else "missing"
    broke = base["status"] == OK and new_status != OK
    limited = [
        side for side, status in (("base", base["status"]), ("new", new_status)) if status == HARNESS_LIMITED
    ]
    if limited:  # the load generator could not keep up: nothing was learned about the engine
        return {
            **cell,
            "metric": "status",
            "base_status": base["status"],
            "new_status": new_status,
            "verdict": INCONCLUSIVE,
            "broken": False,
            "note": f"harness-limited ({', '.join(limited)}): not a result",
        }
    if base["status"] == new_status:
        verdict = f"still {new_status}"
    elif broke:
        verdict = f"broken ({new_status})"
    elif new_status == OK:
        verdict = f"fixed (was {base['status']})"
    else:
        verdict = f"{base['status']} -> {new_status}"
    return {
        **cell,
        "metric": "status",
        "base_status": base["status"],
        "new_status": new_status,
        "verdict": verdict,
        "broken": broke,
        "note": (new or {}).get("reason", "") or ("not in NEW" if new is None else ""),
    }


def _gate_on(row: dict[str, Any], options: CompareOptions) -> str:
    """The statistic a row's cell gates on: its own (`ab --gate-on auto`), else the options'."""
    return str(row.get("gate_on") or options.gate_on)


def judge(
    rows: list[dict[str, Any]],
    estimates: list[Estimate | None],
    options: CompareOptions,
    looks: list[Looks | None] | None = None,
) -> pd.DataFrame:
    """Add ratio, interval, MDE and verdict to the rows: the gating metrics are corrected
    together, each advisory metric is judged on its own. With `looks` (one per row, `ab`'s
    sequential rounds) each row is judged at its latest look (`decide_sequential`); without,
    as one fixed sample (`decide`, Holm)."""
    if not rows:
        return pd.DataFrame()
    rows = [
        {
            "broken": False,
            **row,
            "gating": gates(row["metric"], row.get("mode", "latency"), _gate_on(row, options)),
        }
        for row in rows
    ]
    # A counted row arrives decided (`decide_count`): it is in no family.
    timed = [i for i, row in enumerate(rows) if row["metric"] != "status" and row["metric"] not in COUNTED]
    families = [[i for i in timed if rows[i]["gating"]]]
    families += [[i] for i in timed if not rows[i]["gating"]]
    for family in families:
        if not family:
            continue
        thresholds = [options.threshold(rows[i]["metric"]) for i in family]
        family_estimates = [estimates[i] for i in family]
        levels = {"alpha": options.alpha, "confidence": options.confidence}
        decisions = (
            decide(family_estimates, thresholds, **levels)
            if looks is None
            else decide_sequential(family_estimates, thresholds, [looks[i] for i in family], **levels)
        )
        for i, d, threshold in zip(family, decisions, thresholds, strict=True):
            rows[i].update(decision_columns(d, higher_is_better=rows[i]["metric"] in HIGHER_IS_BETTER))
            if d.verdict == INCONCLUSIVE and d.ci_low > 1 + threshold and len(family) > 1:
                rows[i]["note"] = _short_of_regression(rows[i].get("note"), options, len(family))
    frame = pd.DataFrame(rows)
    for column in ("ratio", "ci_low", "ci_high", "mde_pct", "p_value", "q_value"):
        if column not in frame:
            frame[column] = np.nan
    # What each interval covers: one process per side sees only the noise inside it.
    frame["interval"] = frame["unit"].map(INTERVAL_COVERS).fillna("") if "unit" in frame else ""
    frame["regression"] = (frame["gating"] & (frame["verdict"] == REGRESSION)) | frame["broken"]
    # A status row is undecided only when a side failed in some rounds and not in others (ab).
    frame["inconclusive"] = (frame["gating"] | (frame["metric"] == "status")) & (
        frame["verdict"] == INCONCLUSIVE
    )
    return frame


def _short_of_regression(note: str | None, options: CompareOptions, tests: int) -> str:
    """Why a row whose interval lies wholly past the threshold is not a regression: the interval
    is at the stated confidence, one cell at a time, while a regression must hold at alpha over
    all the gating tests at once (Holm; `ab`: alpha / tests at the sequential boundary)."""
    why = (
        f"worse than the threshold at {options.confidence:.0%}, short of the alpha {options.alpha:g} "
        f"over {tests} gating tests a regression needs: more rounds decide it"
    )
    return f"{note}; {why}" if note else why


def decision_columns(d: Decision, higher_is_better: bool) -> dict[str, Any]:
    """A decision as row columns; ratios in the metric's own units, NEW/BASE (for throughput,
    below 1 is worse)."""
    ratio, low, high = d.worse_ratio, d.ci_low, d.ci_high
    if higher_is_better:  # an early look's interval can reach 0 and inf
        ratio, low, high = (1 / x if x else math.inf for x in (ratio, high, low))
    return {
        "ratio": ratio,
        "ci_low": low,
        "ci_high": high,
        "mde_pct": d.mde_pct,
        "p_value": d.p_value,
        "q_value": d.q_value,
        "verdict": d.verdict,
    }


def _samples(
    base: dict[str, Any], new: dict[str, Any], name: str
) -> tuple[Metric, list[np.ndarray], list[np.ndarray]]:
    """The metric and the samples per process it is computed from, for both records."""
    counted = all("throughput_slices_sps" in r for r in (base, new))
    if name == "throughput" and counted:
        return COUNTED_THROUGHPUT, _process_rates(base), _process_rates(new)
    return METRICS[name], _processes_ms(base), _processes_ms(new)


def _process_rates(record: dict[str, Any]) -> list[np.ndarray]:
    groups = record.get("process_throughput_slices_sps") or [record["throughput_slices_sps"]]
    return [np.asarray(g, dtype=np.float64) for g in groups]


def _processes_ms(record: dict[str, Any]) -> list[np.ndarray]:
    groups = record.get("process_latencies_ns") or [record["latencies_ns"]]
    return [np.asarray(g, dtype=np.float64) / 1e6 for g in groups]


def exit_code(frame: pd.DataFrame) -> int:
    """0 = no regression, 1 = regression or broken cell, 3 = could not decide (also when no
    cell was timed on both sides, e.g. every engine missing on this runner: no verdict is
    not a pass)."""
    if not frame.empty and frame["regression"].any():
        return EXIT_REGRESSION
    return EXIT_UNDECIDED if nothing_timed(frame) or frame["inconclusive"].any() else EXIT_OK


def nothing_timed(frame: pd.DataFrame) -> bool:
    """No result at all: no cell timed on both sides and none fixed, e.g. every engine
    missing on this runner ("still unavailable"), or no cell in common."""
    if frame.empty:
        return True
    timed = frame["gating"] & (frame["metric"] != "status")
    return not (timed | (frame["new_status"] == OK)).any()
