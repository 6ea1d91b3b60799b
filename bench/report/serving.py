"""Serve-mode cells as the report reads them: the words for a batching policy and a latency
target, and each cell's latency-vs-offered-load curve (the chart's data, then its figure).

A serve cell (`mode` "serve", inferbench.serve) answers "how many requests per second meet the
p99 target": `max_qps_at_slo`, the peak search's highest passing rate under the best batching
policy it tried (`best_max_batch`, `best_max_wait_ms`), and `max_qps_first_unmet`, the lowest
rate above it that did not pass; the true knee lies between. The cell file keeps every policy
and every trial (`serve_policies`); the curve is drawn from those trials, never from raw
latencies, so its size is bounded by the trials (at most a dozen per policy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inferbench.compare.core import SERVE_METRIC
from inferbench.markdown import fmt
from inferbench.store.record import CSV_COLUMNS, FIELDS

SERVE = "serve"
#: The serve columns of results.csv the report reads: the record's serve part, in CSV order.
SERVE_COLUMNS = tuple(name for name in CSV_COLUMNS if FIELDS[name].group == "serve")
#: The column the report adds for serve rows: the best policy in words.
POLICY = "best policy"
#: What the results table and summary.md show of a serve row, after its status.
TABLE_EXTRA = ("slo_ms", SERVE_METRIC, "max_qps_first_unmet", POLICY)
#: The words every answer table adds when the run holds serve cells.
SERVE_RULE = (
    "Serve mode: the most requests per second whose p99 latency (counted from each request's "
    "scheduled time) met the SLO, max_qps_at_slo, under the best batching policy the cell tried "
    "(max_batch / max_wait_ms); the peak lies below the next rate tried, which did not meet it. "
    "Speed-ups are over eager FP32's own peak. A harness-limited cell (the load generator could "
    "not keep its schedule) is not a result: it never wins and is named."
)


def number(value: Any) -> float | None:
    """A record or CSV value as a float, None for blanks and NaN."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def is_serve(row: dict[str, Any]) -> bool:
    return str(row.get("mode")) == SERVE


def qps_text(value: float | None) -> str:
    """A rate as a person reads it: whole requests/s from 100 up ('1,234'), else 3 digits."""
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else fmt(float(value))


def policy_text(max_batch: Any, max_wait_ms: Any) -> str:
    """'max_batch 4 / wait 2 ms'; 'no batching' for max_batch 1; '' when the record names no policy."""
    batch, wait = number(max_batch), number(max_wait_ms)
    if batch is None:
        return ""
    if batch == 1:
        return "no batching"
    return f"max_batch {batch:.0f}" + (f" / wait {fmt(wait)} ms" if wait is not None else "")


def best_policy_text(row: dict[str, Any]) -> str:
    return policy_text(row.get("best_max_batch"), row.get("best_max_wait_ms"))


def slo_text(row: dict[str, Any]) -> str:
    """'p99 ≤ 50 ms' from the row's percentile (99, or 0.99) and SLO."""
    slo = number(row.get("slo_ms"))
    if slo is None:
        return "the SLO"
    pct = number(row.get("serve_percentile"))
    pct = 99.0 if pct is None else pct * 100 if pct <= 1 else pct
    return f"p{fmt(pct, 4)} ≤ {fmt(slo)} ms"


@dataclass(frozen=True)
class Curve:
    """One policy's trials, in rate order: what the chart draws for it."""

    label: str
    rate_qps: list[float]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    outcome: list[str]
    max_qps_at_slo: float | None


@dataclass(frozen=True)
class ServeChart:
    """A serve cell's latency-vs-offered-load chart: the best policy's curve (p50 and p99), the
    other policies' (p99 only), the SLO (a horizontal line) and the knee (`max_qps_at_slo`)."""

    title: str
    slo_ms: float | None
    slo: str
    knee_qps: float | None
    first_unmet_qps: float | None
    best: Curve | None
    others: list[Curve]


def _curve(policy: dict[str, Any]) -> Curve:
    trials = sorted(
        (t for t in policy.get("trials") or [] if number(t.get("rate_qps")) is not None),
        key=lambda t: float(t["rate_qps"]),
    )
    return Curve(
        label=policy_text(policy.get("max_batch"), policy.get("max_wait_ms")) or "policy",
        rate_qps=[float(t["rate_qps"]) for t in trials],
        p50_ms=[number(t.get("p50_ms")) for t in trials],
        p99_ms=[number(t.get("p99_ms")) for t in trials],
        outcome=[str(t.get("outcome") or "") for t in trials],
        max_qps_at_slo=number(policy.get(SERVE_METRIC)),
    )


def _is_best(policy: dict[str, Any], row: dict[str, Any]) -> bool:
    return number(policy.get("max_batch")) == number(row.get("best_max_batch")) and number(
        policy.get("max_wait_ms")
    ) == number(row.get("best_max_wait_ms"))


def serve_chart(record: dict[str, Any], title: str) -> ServeChart:
    """The chart of one serve cell from its record: the best policy is the one the record names
    (`best_max_batch`, `best_max_wait_ms`), else the policy with the highest peak."""
    policies = [p for p in record.get("serve_policies") or [] if isinstance(p, dict)]
    best = next((p for p in policies if _is_best(p, record)), None)
    if best is None and policies:
        best = max(policies, key=lambda p: number(p.get(SERVE_METRIC)) or -math.inf)
    return ServeChart(
        title=title,
        slo_ms=number(record.get("slo_ms")),
        slo=slo_text(record),
        knee_qps=number(record.get(SERVE_METRIC)),
        first_unmet_qps=number(record.get("max_qps_first_unmet")),
        best=_curve(best) if best is not None else None,
        others=[_curve(p) for p in policies if p is not best],
    )


def serve_figure(chart: ServeChart) -> Any:
    """p50 and p99 latency against the offered rate, log-log: the best policy's two lines, the
    other policies' p99 (hidden until picked in the legend), the SLO as a dashed horizontal
    line and the knee as a dotted vertical one with a star on the p99 curve. A trial that did
    not pass is drawn as an x and says why on hover."""
    import plotly.graph_objects as go

    fig = go.Figure()
    rates: list[float] = []
    if chart.best is not None:
        best = chart.best
        rates += best.rate_qps
        symbols = ["circle" if o == "pass" else "x" for o in best.outcome]
        hover = [f"{qps_text(r)} QPS: {o}" for r, o in zip(best.rate_qps, best.outcome, strict=True)]
        for stat, values in (("p50", best.p50_ms), ("p99", best.p99_ms)):
            fig.add_trace(
                go.Scatter(
                    x=best.rate_qps,
                    y=values,
                    mode="lines+markers",
                    name=f"{stat}, {best.label}",
                    marker={"symbol": symbols, "size": 8},
                    hovertext=hover,
                    hoverinfo="text+x+y",
                )
            )
    for other in chart.others:
        rates += other.rate_qps
        fig.add_trace(
            go.Scatter(
                x=other.rate_qps,
                y=other.p99_ms,
                mode="lines+markers",
                name=f"p99, {other.label}",
                line={"dash": "dot"},
                visible="legendonly",
            )
        )
    if chart.slo_ms is not None and rates:
        fig.add_trace(
            go.Scatter(
                x=[min(rates), max(rates)],
                y=[chart.slo_ms, chart.slo_ms],
                mode="lines",
                name=f"SLO: {chart.slo}",
                line={"dash": "dash", "color": "#a00"},
                hoverinfo="name",
            )
        )
    if chart.knee_qps is not None:
        fig.add_vline(x=chart.knee_qps, line={"dash": "dot", "color": "#2a7"})
        fig.add_trace(
            go.Scatter(
                x=[chart.knee_qps],
                y=[_p99_at(chart.best, chart.knee_qps) or chart.slo_ms],
                mode="markers+text",
                name=f"knee: {qps_text(chart.knee_qps)} QPS at {chart.slo}",
                text=[f"{qps_text(chart.knee_qps)} QPS"],
                textposition="top left",
                marker={"symbol": "star", "size": 14, "color": "#2a7"},
            )
        )
    fig.update_layout(
        title=chart.title,
        xaxis_title="offered load (requests/s)",
        yaxis_title="latency from scheduled time (ms)",
        xaxis_type="log",
        yaxis_type="log",
        template="plotly_white",
    )
    return fig


def _p99_at(curve: Curve | None, rate: float) -> float | None:
    if curve is None:
        return None
    return next((p for r, p in zip(curve.rate_qps, curve.p99_ms, strict=True) if r == rate), None)
