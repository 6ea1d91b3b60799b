"""The report's charts, as plotly figure specs (JSON), a handful per model.

Sizes stay bounded by the number of cells, never by the number of samples: latency
distributions are drawn from quantiles computed here from each cell's raw samples (a box
per cell: p1, p25, p50, p75, p99), so a cell with 50,000 samples costs the same few bytes
as one with 50. A run merged from several machines gets each model's charts once per host:
a line never joins two machines' points.

Serve-mode cells get a chart each instead (inferbench.report.serving): p50 and p99 latency
against the offered rate, from the peak search's trials, with the SLO and the knee.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from inferbench.machine.hosts import HOST, keys_with_host
from inferbench.report.answer import exclusion, falsy, with_speedup
from inferbench.report.serving import SERVE, serve_chart, serve_figure, slo_text
from inferbench.status import OK

#: Quantiles (percent) each cell's latency box is drawn from: whiskers, box, median.
BOX_QUANTILES = (1, 25, 50, 75, 99)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (higher speed, lower error)."""
    front = []
    for i, (speed, err) in enumerate(points):
        dominated = any(
            s >= speed and e <= err and (s > speed or e < err) for j, (s, e) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def latency_quantiles(
    latencies_ns: list[int] | None, quantiles: tuple[int, ...] = BOX_QUANTILES
) -> dict[str, float] | None:
    """Quantiles (default p1/p25/p50/p75/p99) in ms from a cell's raw samples (None without
    samples): a page carries these few numbers, never the samples."""
    if not latencies_ns:
        return None
    values = np.percentile(np.asarray(latencies_ns, dtype=np.float64) / 1e6, quantiles)
    return {f"p{q}": float(v) for q, v in zip(quantiles, values, strict=True)}


def figures(frame: pd.DataFrame, records: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(name, plotly figure) for every chart, model by model (and host by host), then one per
    serve cell."""
    yield from _engine_figures(frame, records)
    yield from serve_figures(frame, records)


def serve_figures(frame: pd.DataFrame, records: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(name, figure) for each serve cell that has trials, in the frame's order: its latency
    against offered load (inferbench.report.serving.serve_figure)."""
    by_key = {r.get("cell_key"): r for r in records if r.get("serve_policies")}
    several = HOST in keys_with_host(["model"], frame)
    for row in frame.to_dict("records"):
        record = by_key.get(row.get("cell_key"))
        if str(row.get("mode")) != SERVE or record is None:
            continue
        where = f" on host {row.get(HOST) or 'unknown'}" if several else ""
        status = "" if row.get("status") == OK else f" ({row.get('status')})"
        title = (
            f"{row['model']}{where} {row['backend']} {row['precision']} b{row['batch_size']} "
            f"t{row['threads']}{status}: latency vs offered load ({slo_text(record)})"
        )
        yield f"{row['cell_key']}-serve", serve_figure(serve_chart(record, plotly_text(title)))


def _engine_figures(frame: pd.DataFrame, records: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Latency and throughput against batch size, speed-ups, accuracy against speed and
    latency distributions, model by model (serve cells have their own charts)."""
    ok = with_speedup(frame[(frame["status"] == OK) & (frame["mode"].astype(str) != SERVE)]).copy()
    if ok.empty:
        return
    # Plotly renders a subset of HTML in chart text (<a href>, <b>, <span style>): every name
    # a chart shows goes in as entities, as the tables escape it.
    ok["engine"] = (ok["backend"] + " " + ok["precision"]).map(plotly_text)
    ok["series"] = ok["engine"] + ok["mode"].map({"throughput": " (tput)"}).fillna("")
    if "shape" in ok:  # a shape axis: one line per engine and shape
        shape = ok["shape"].fillna("").astype(str).map(plotly_text)
        ok["series"] = ok["series"].where(shape == "", ok["series"] + " " + shape)
    quantiles = {r.get("cell_key"): latency_quantiles(r.get("latencies_ns")) for r in records}
    keys = keys_with_host(["model"], frame)
    if HOST in keys:
        ok[HOST] = ok[HOST].fillna("")
    for key, group in ok.groupby(keys, sort=False):
        # Titles and names carry the host when there are several: 'mlp on host 3fa2c1d0e9ab'.
        model = f"{key[0]} on host {key[1] or 'unknown'}" if HOST in keys else str(key[0])
        shown = plotly_text(model)  # the charts' text; the figure's name stays raw for the page
        group = group.sort_values("batch_size", kind="stable")
        for metric, fig in _line_charts(shown, group):
            yield f"{model}-{metric}", fig
        heat = _heatmap(shown, group)
        if heat is not None:
            yield f"{model}-heatmap", heat
        yield f"{model}-pareto", pareto_figure(shown, group)
        yield f"{model}-distribution", distribution_figure(shown, group, quantiles)


def plotly_text(value: Any) -> str:
    """A string as plotly text that shows as it is: `<`, `>` and `&` become the entities plotly
    draws as those characters. Quotes stay: without a `<` they open nothing, and plotly would
    show `&quot;` as it is written."""
    return html.escape(str(value), quote=False)


def _line_charts(model: str, group: pd.DataFrame) -> Iterator[tuple[str, Any]]:
    """(metric, figure) for p50 latency and throughput against batch size."""
    import plotly.express as px

    for metric, title, log in (
        ("latency_p50_ms", "p50 latency (ms)", True),
        ("throughput_sps", "throughput (samples/s)", False),
    ):
        fig = px.line(
            group,
            x="batch_size",
            y=metric,
            color="series",
            markers=True,
            log_y=log,
            title=f"{model}: {title} vs batch size",
            template="plotly_white",
        )
        fig.update_xaxes(type="category")
        yield metric, fig


def _heatmap(model: str, group: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    heat = group.pivot_table(index="series", columns="batch_size", values="speedup_vs_eager_fp32")
    if not heat.notna().any().any():
        return None
    fig = go.Figure(
        # Colour on a log scale so 2x faster and 2x slower are equally far from 1x.
        go.Heatmap(
            z=np.log2(heat.values),
            x=[str(c) for c in heat.columns],
            y=list(heat.index),
            colorscale="RdYlGn",
            zmid=0.0,
            text=np.round(heat.values, 2),
            texttemplate="%{text}x",
            hovertemplate="%{y}, batch %{x}: %{text}x<extra></extra>",
            colorbar={"title": "log2 speed-up"},
        )
    )
    fig.update_layout(
        title=f"{model}: speed-up over eager FP32 (same batch)",
        xaxis_title="batch size",
        template="plotly_white",
        height=max(400, 24 * len(heat.index) + 160),
    )
    return fig


def pareto_figure(model: str, group: pd.DataFrame) -> Any:
    """Accuracy against speed; points on the front carry a visible engine + precision label.

    Only cells the answer could pick compete for the front: a cell flagged or left without an
    accuracy check (`accuracy_checked` false, when the run records it) is drawn apart."""
    import plotly.graph_objects as go

    err = group["rel_l2_err"].fillna(0.0).clip(lower=1e-12).tolist()
    speed = group["throughput_sps"].tolist()
    labels = group["engine"].tolist()
    hover = (group["series"] + " b" + group["batch_size"].astype(str)).tolist()
    rows = group.to_dict("records")
    unchecked = [falsy(r.get("accuracy_checked")) or exclusion(r) is not None for r in rows]
    eligible = [i for i in range(len(rows)) if not unchecked[i]]
    front = {eligible[k] for k in pareto_front([(speed[i], err[i]) for i in eligible])}
    fig = go.Figure()
    for name, idx, style in (
        ("dominated", [i for i in eligible if i not in front], {"size": 7, "symbol": "circle"}),
        (
            "left out (flagged or unchecked)",
            [i for i, u in enumerate(unchecked) if u],
            {"size": 7, "symbol": "x"},
        ),
        ("Pareto front", sorted(front, key=lambda i: speed[i]), {"size": 12, "symbol": "star"}),
    ):
        if not idx:
            continue
        on_front = name == "Pareto front"
        fig.add_trace(
            go.Scatter(
                x=[speed[i] for i in idx],
                y=[err[i] for i in idx],
                text=[labels[i] for i in idx] if on_front else None,
                hovertext=[hover[i] for i in idx],
                hoverinfo="text+x+y",
                mode="markers+text" if on_front else "markers",
                textposition="top center",
                name=name,
                marker=style,
            )
        )
    fig.update_layout(
        title=f"{model}: accuracy vs speed (relative L2 error vs eager FP32)",
        xaxis_title="throughput (samples/s)",
        yaxis_title="relative L2 error",
        yaxis_type="log",
        template="plotly_white",
    )
    return fig


def distribution_figure(
    model: str, group: pd.DataFrame, quantiles: dict[Any, dict[str, float] | None]
) -> Any:
    """One box per cell from its p1/p25/p50/p75/p99: the spread and tail of each cell."""
    import plotly.graph_objects as go

    names, stats = [], []
    for row in group.itertuples(index=False):
        q = quantiles.get(row.cell_key)
        if q is not None:
            names.append(f"{row.series} b{row.batch_size}")
            stats.append(q)
    fig = go.Figure()
    if stats:
        fig.add_trace(
            go.Box(
                y=names,
                lowerfence=[s["p1"] for s in stats],
                q1=[s["p25"] for s in stats],
                median=[s["p50"] for s in stats],
                q3=[s["p75"] for s in stats],
                upperfence=[s["p99"] for s in stats],
                orientation="h",
                name=model,
                hoverinfo="y+x",
            )
        )
    fig.update_layout(
        title=f"{model}: latency distribution per cell (whiskers p1-p99, box p25-p75)",
        xaxis_title="latency (ms)",
        xaxis_type="log",
        height=max(400, 18 * len(names) + 160),
        showlegend=False,
        template="plotly_white",
        margin={"l": 260},
    )
    return fig
