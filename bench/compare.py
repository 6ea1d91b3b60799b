"""Noise-aware comparison of two runs, usable as a CI performance gate.

For each cell present in both runs and each metric (p50, p99 latency, throughput) the ratio
NEW/BASE gets a bootstrap confidence interval (`scipy.stats.bootstrap`, ratio of the two
statistics) from the raw per-iteration samples, and a two-sided p-value for "ratio = 1" from
the same bootstrap distribution. When both runs measured the cell in several fresh processes
(`repeats`), the process is the unit instead: each process contributes its own statistic and
Welch's t-test across processes (on logs) gives the interval and p-value, so the
process-to-process variation, which on a shared machine dwarfs the within-process noise, is
part of the verdict. The p-values of all comparisons are adjusted together with
Benjamini-Hochberg (`scipy.stats.false_discovery_control`) so a 200-cell sweep does not fail
by chance. A regression is a change that is significant after
that correction AND larger than the threshold (default 5%). A cell that ran in BASE but fails
in NEW is a regression too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferbench.errors import UserError
from inferbench.markdown import markdown_table
from inferbench.status import FAILED
from inferbench.storage import load_run
from inferbench.util import atomic_write_text

KEY = ["model", "backend", "precision", "batch_size", "threads", "mode"]


@dataclass(frozen=True)
class Metric:
    name: str
    statistic: Callable[..., Any]  # f(samples, axis) -> value, vectorized over axis
    higher_is_better: bool
    # Samples are rates (throughput mode's per-slice samples/s), not latencies.
    from_rates: bool = False

    def ratio(self, base: np.ndarray, new: np.ndarray, axis: int = -1) -> Any:
        """NEW relative to BASE, in the metric's own units (>1 = bigger number)."""
        b, n = self.statistic(base, axis=axis), self.statistic(new, axis=axis)
        return b / n if self.higher_is_better and not self.from_rates else n / b


def _p99(x: np.ndarray, axis: int = -1) -> Any:
    return np.percentile(x, 99, axis=axis)


# Throughput in latency mode is batch / mean latency: its ratio is mean(base) / mean(new).
METRICS = {
    "p50": Metric("p50", np.median, higher_is_better=False),
    "p99": Metric("p99", _p99, higher_is_better=False),
    "throughput": Metric("throughput", np.mean, higher_is_better=True),
}
# Throughput mode counts completions: its samples are the run's per-slice rates.
COUNTED_THROUGHPUT = Metric("throughput", np.mean, higher_is_better=True, from_rates=True)


@dataclass(frozen=True)
class CompareOptions:
    max_regression: float = 0.05
    thresholds: dict[str, float] = field(default_factory=dict)  # per-metric overrides
    alpha: float = 0.05
    confidence: float = 0.95
    n_resamples: int = 2000
    metrics: tuple[str, ...] = ("p50", "p99", "throughput")
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (*self.metrics, *self.thresholds):
            if name not in METRICS:
                raise UserError(f"metric must be one of {', '.join(METRICS)}; got {name!r}")
        for value in (self.max_regression, *self.thresholds.values()):
            if not 0 <= value < 1:
                raise UserError(f"regression threshold must be between 0% and 100%; got {value:.0%}")
        if not 0 < self.alpha < 1:
            raise UserError(f"alpha must be between 0 and 1; got {self.alpha}")

    def threshold(self, metric: str) -> float:
        return self.thresholds.get(metric, self.max_regression)


def bootstrap_ratio(
    base: np.ndarray,
    new: np.ndarray,
    metric: Metric,
    options: CompareOptions,
    rng: np.random.Generator,
) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, p_value) for NEW/BASE of one metric from raw samples."""
    from scipy.stats import bootstrap

    def stat(b: np.ndarray, n: np.ndarray, axis: int = -1) -> Any:
        return metric.ratio(b, n, axis=axis)

    result = bootstrap(
        (base, new),
        stat,
        n_resamples=options.n_resamples,
        paired=False,
        vectorized=True,
        confidence_level=options.confidence,
        method="percentile",
        random_state=rng,
    )
    dist = result.bootstrap_distribution
    # Two-sided bootstrap p-value for "no change": how often the resampled ratio is on the
    # other side of 1 than most of the distribution.
    tail = min(np.mean(dist <= 1.0), np.mean(dist >= 1.0))
    p = float(np.clip(2 * tail, 1 / (options.n_resamples + 1), 1.0))
    ci = result.confidence_interval
    return float(metric.ratio(base, new)), float(ci.low), float(ci.high), p


def process_ratio(
    base: np.ndarray, new: np.ndarray, metric: Metric, options: CompareOptions
) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, p_value) from one value of the metric per process.

    A handful of processes is too few to bootstrap (3 vs 3 has 20 distinct splits), so this is
    pyperf's approach: Welch's t-test across processes, here on log values so the interval is
    one of the ratio of geometric means."""
    from scipy.stats import ttest_ind

    # `base`/`new` are latency statistics; throughput's ratio is the inverse of its latency's.
    log_b, log_n = np.log(base), np.log(new)
    result = ttest_ind(log_n, log_b, equal_var=False)
    ci = result.confidence_interval(options.confidence)
    diff = float(np.mean(log_n) - np.mean(log_b))
    p = float(result.pvalue) if np.isfinite(result.pvalue) else 1.0
    if metric.higher_is_better and not metric.from_rates:
        return float(np.exp(-diff)), float(np.exp(-ci.high)), float(np.exp(-ci.low)), p
    return float(np.exp(diff)), float(np.exp(ci.low)), float(np.exp(ci.high)), p


def compare_records(
    base: list[dict[str, Any]], new: list[dict[str, Any]], options: CompareOptions
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-metric comparison rows and the unmatched cells."""
    from scipy.stats import false_discovery_control

    def index(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        # Records from before the mode axis are latency mode.
        return {tuple(r.get(k) or "latency" if k == "mode" else r[k] for k in KEY): r for r in records}

    base_ix, new_ix = index(base), index(new)
    unmatched = [{**dict(zip(KEY, k, strict=True)), "only_in": "base"} for k in base_ix if k not in new_ix]
    unmatched += [{**dict(zip(KEY, k, strict=True)), "only_in": "new"} for k in new_ix if k not in base_ix]
    rng = np.random.default_rng(options.seed)
    rows: list[dict[str, Any]] = []
    for key, b in base_ix.items():
        n = new_ix.get(key)
        if n is None:
            continue
        cell = dict(zip(KEY, key, strict=True))
        if b["status"] != "ok" or n["status"] != "ok":
            rows.append(
                {
                    **cell,
                    "metric": "status",
                    "base_status": b["status"],
                    "new_status": n["status"],
                    "change": _status_change(b["status"], n["status"]),
                    "regression": b["status"] == "ok" and n["status"] in FAILED,
                    "reason": n.get("reason", ""),
                }
            )
            continue
        for name in options.metrics:
            metric, b_procs, n_procs = _samples(b, n, name)
            per_process = len(b_procs) > 1 and len(n_procs) > 1
            b_ms, n_ms = np.concatenate(b_procs), np.concatenate(n_procs)
            if per_process:
                b_units = np.array([metric.statistic(x) for x in b_procs])
                n_units = np.array([metric.statistic(x) for x in n_procs])
                ratio, low, high, p = process_ratio(b_units, n_units, metric, options)
            else:
                ratio, low, high, p = bootstrap_ratio(b_ms, n_ms, metric, options, rng)
            rows.append(
                {
                    **cell,
                    "metric": name,
                    "base_status": "ok",
                    "new_status": "ok",
                    "base_value": _value(b, name),
                    "new_value": _value(n, name),
                    "ratio": ratio,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": p,
                    "n_base": len(b_ms),
                    "n_new": len(n_ms),
                    "unit": "process" if per_process else "iteration",
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, pd.DataFrame(unmatched)
    timed = frame["metric"] != "status"
    frame["q_value"] = np.nan
    if timed.any():
        frame.loc[timed, "q_value"] = false_discovery_control(
            frame.loc[timed, "p_value"].to_numpy(), method="bh"
        )
    for i in frame.index[timed]:
        frame.loc[i, ["change", "regression"]] = _classify(frame.loc[i], options)
    frame["regression"] = frame["regression"].astype(bool)
    return frame, pd.DataFrame(unmatched)


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


def _value(record: dict[str, Any], metric: str) -> float:
    column = {"p50": "latency_p50_ms", "p99": "latency_p99_ms", "throughput": "throughput_sps"}[metric]
    return float(record[column])


def _status_change(base: str, new: str) -> str:
    if base == new:
        return f"still {new}"
    if base == "ok" and new in FAILED:
        return f"broke ({new})"
    if new == "ok":
        return f"fixed (was {base})"
    return f"{base} -> {new}"


def _classify(row: pd.Series, options: CompareOptions) -> tuple[str, bool]:
    metric = METRICS[str(row["metric"])]
    worse = row["ratio"] < 1 if metric.higher_is_better else row["ratio"] > 1
    if row["q_value"] >= options.alpha:
        return "no significant change", False
    change = "slower" if worse else "faster"
    size = abs(row["ratio"] - 1) if not metric.higher_is_better else abs(1 - row["ratio"])
    return change, bool(worse and size > options.threshold(str(row["metric"])))


# ---------------------------------------------------------------- output


def compare_markdown(
    frame: pd.DataFrame,
    unmatched: pd.DataFrame,
    options: CompareOptions,
    base_name: str,
    new_name: str,
) -> str:
    regressions = frame[frame["regression"]] if not frame.empty else frame
    verdict = "**FAIL**: performance regression" if len(regressions) else "**PASS**: no regression"
    parts = [
        f"## InferBench comparison: `{base_name}` → `{new_name}`",
        "",
        verdict,
        "",
        f"Regression = significant after Benjamini-Hochberg at alpha={options.alpha} and worse than "
        f"{options.max_regression:.0%}"
        + "".join(f", {m} {t:.0%}" for m, t in options.thresholds.items())
        + f". Ratios are NEW/BASE with {options.confidence:.0%} bootstrap intervals.",
    ]
    if frame.empty:
        parts += ["", "No cells in common."]
    else:
        shown = frame.copy()
        shown["ratio (CI)"] = [
            f"{r:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(r) else ""
            for r, lo, hi in zip(
                shown.get("ratio", np.nan),
                shown.get("ci_low", np.nan),
                shown.get("ci_high", np.nan),
                strict=True,
            )
        ]
        cols = [*KEY, "metric", "change", "ratio (CI)", "q_value", "regression"]
        if len(regressions):
            parts += ["", "### Regressions", "", markdown_table(shown[shown["regression"]], cols)]
        parts += ["", "### All compared cells", "", markdown_table(shown, cols)]
    if not unmatched.empty:
        parts += ["", "### Unmatched cells", "", markdown_table(unmatched, [*KEY, "only_in"])]
    return "\n".join(parts) + "\n"


def compare_runs(
    base_dir: Path, new_dir: Path, options: CompareOptions, out_dir: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Compare two run directories; writes compare.csv and compare.md into out_dir (default NEW)."""
    base_dir, new_dir = _run_dir(base_dir), _run_dir(new_dir)
    _, base, _ = load_run(base_dir)
    _, new, _ = load_run(new_dir)
    frame, unmatched = compare_records(base, new, options)
    out_dir = out_dir or new_dir
    atomic_write_text(out_dir / "compare.csv", frame.to_csv(index=False, float_format="%.6g"))
    md = out_dir / "compare.md"
    atomic_write_text(md, compare_markdown(frame, unmatched, options, base_dir.name, new_dir.name))
    return frame, unmatched, md


def _run_dir(path: Path) -> Path:
    """Accept a run directory or its results.csv (the raw samples are read from beside it)."""
    if path.is_file() and path.name == "results.csv":
        path = path.parent
    if not path.exists():
        raise UserError(f"no such run: {path}")
    return path
