"""reports/history.html: per cell, a metric over time and commits, one line per machine.

Self-contained like the run report: plotly's JavaScript inlined once, every user string
escaped (html.escape in tables, plotly's JSON encoding in charts). Change-points are marked
on the line they belong to, with the segment means drawn dashed.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
from typing import Any

import pandas as pd

from inferbench.history.changepoints import Metric
from inferbench.history.series import Series

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right} th{background:#f0f0f0;cursor:pointer}
td.s,th.s{text-align:left} tr.regression td{background:#fde2e2} .note{color:#555}
code{background:#f4f4f4;padding:0 3px}
"""
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = tr => { const t = tr.cells[col].textContent.replace('%', ''); const n = Number(t);
    return t === '' ? null : isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _commit(row: pd.Series) -> str:
    sha = row["git_commit"]
    if not isinstance(sha, str) or not sha:
        return "commit unknown"
    return sha[:10] + (" (dirty)" if row["git_dirty"] else "")


def _figure(title: str, group: list[Series], metric: Metric, colours: dict[str, str]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for series in group:
        pts = series.points
        colour = colours[series.fingerprint]
        # Plotly renders a subset of HTML in text (<b>, <a href>): user strings go in as entities.
        name = _e(f"{series.fingerprint} {series.machine}"[:80])
        error: dict[str, Any] | None = None
        if metric.ci_low and metric.ci_high and pts[metric.ci_low].notna().any():
            error = {
                "type": "data",
                "symmetric": False,
                "array": (pts[metric.ci_high] - pts[metric.column]).tolist(),
                "arrayminus": (pts[metric.column] - pts[metric.ci_low]).tolist(),
                "color": colour,
                "thickness": 1,
            }
        hover = [
            f"run {_e(r['run_id'])}<br>{_e(_commit(r))}<br>machine {series.fingerprint}"
            for _, r in pts.iterrows()
        ]
        fig.add_trace(
            go.Scatter(
                x=pts["run_time"],
                y=pts[metric.column],
                error_y=error,
                mode="lines+markers",
                name=name,
                line={"color": colour},
                text=hover,
                hovertemplate="%{y:.4g}<br>%{text}<extra></extra>",
            )
        )
        _mark_steps(fig, series, metric, colour)
    fig.update_layout(
        title=_e(title),
        xaxis_title="run time (UTC)",
        yaxis_title=metric.label,
        height=420,
        legend={"orientation": "h", "yanchor": "top", "y": -0.3},
        margin={"b": 120},
    )
    return fig


def _mark_steps(fig: Any, series: Series, metric: Metric, colour: str) -> None:
    import plotly.graph_objects as go

    if not series.steps:
        return
    pts = series.points
    bounds = [0, *(s.index for s in series.steps), len(pts)]
    xs: list[Any] = []
    ys: list[Any] = []
    for a, b in itertools.pairwise(bounds):
        mean = float(pts[metric.column].iloc[a:b].mean())
        xs += [pts["run_time"].iloc[a], pts["run_time"].iloc[b - 1], None]
        ys += [mean, mean, None]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": colour, "dash": "dash", "width": 1},
            name=f"{series.fingerprint}: segment means",
            hoverinfo="skip",
        )
    )
    at = [s.index for s in series.steps]
    fig.add_trace(
        go.Scatter(
            x=pts["run_time"].iloc[at],
            y=pts[metric.column].iloc[at],
            mode="markers",
            marker={
                "symbol": "x",
                "size": 14,
                "color": ["#d62728" if s.worse else "#2ca02c" for s in series.steps],
                "line": {"width": 2},
            },
            name=f"{series.fingerprint}: change-points",
            text=[f"{'worse' if s.worse else 'better'} {s.change:+.1%}" for s in series.steps],
            hovertemplate="change-point: %{text}<extra></extra>",
        )
    )


def _summary_row(series: Series, metric: Metric, anchor: str) -> str:
    pts = series.points
    values = pts[metric.column].astype(float)
    first, last = values.iloc[0], values.iloc[-1]
    latest_step = ""
    if series.steps:
        step = series.steps[-1]
        row = pts.iloc[step.index]
        latest_step = f"{step.change:+.1%} at {row['run_id']} ({_commit(row)})"
    flagged = series.regression is not None
    cells = [
        (f'<a href="#{anchor}">{_e(series.title)}</a>', "s"),
        (_e(series.fingerprint), "s"),
        (str(len(pts)), ""),
        (f"{first:.4g}", ""),
        (f"{last:.4g}", ""),
        (f"{last / first - 1:+.1%}" if first else "", ""),
        (str(len(series.steps)), ""),
        (_e(latest_step), "s"),
        ("REGRESSION" if flagged else "", "s"),
    ]
    tds = "".join(f'<td class="{cls}">{text}</td>' for text, cls in cells)
    return f'<tr class="{"regression" if flagged else ""}">{tds}</tr>'


def render_history(series: list[Series], metric: Metric, machines: pd.DataFrame, note: str = "") -> str:
    """The whole page: machines, a sortable summary of every series, then one chart per cell."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    colours = {fp: _PALETTE[i % len(_PALETTE)] for i, fp in enumerate(machines["fingerprint"])}
    for s in series:
        colours.setdefault(s.fingerprint, _PALETTE[len(colours) % len(_PALETTE)])
    by_cell: dict[tuple[str, str], list[Series]] = {}
    for s in series:
        by_cell.setdefault((s.cell_key, s.settings_hash), []).append(s)
    anchors = {key: f"cell-{i}" for i, key in enumerate(by_cell)}
    head = "".join(
        f'<th class="s">{h}</th>' if i in (0, 1, 7, 8) else f"<th>{h}</th>"
        for i, h in enumerate(
            (
                "cell",
                "machine",
                "points",
                "first",
                "latest",
                "latest vs first",
                "change-points",
                "last step",
                "check",
            )
        )
    )
    rows = "".join(_summary_row(s, metric, anchors[(s.cell_key, s.settings_hash)]) for s in series)
    machine_rows = "".join(
        f'<tr><td class="s"><span style="color:{colours.get(r.fingerprint, "#000")}">&#9632;</span> '
        f'{_e(r.fingerprint)}</td><td class="s">{_e(r.label)}</td><td>{int(r.runs)}</td></tr>'
        for r in machines.itertuples()
    )
    charts = []
    for key, group in by_cell.items():
        title = group[0].title + (f" (settings {group[0].settings_hash})" if group[0].settings_hash else "")
        fig = _figure(title, group, metric, colours)
        chart = pio.to_html(fig, include_plotlyjs=False, full_html=False)
        charts.append(f'<div class="chart" id="{anchors[key]}">{chart}</div>')
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>InferBench history</title>"
        f"<style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>InferBench history: {_e(metric.label)}</h1>"
        f'<p class="note">Written {stamp}. {_e(note)} Each line is one machine; error bars are the '
        "95% intervals of each run; an x marks a change-point (red: worse, green: better), dashed "
        "lines the segment means.</p>"
        f"<h2>Machines</h2><table id='machines'><thead><tr><th class='s'>fingerprint</th>"
        f"<th class='s'>machine</th><th>runs</th></tr></thead><tbody>{machine_rows}</tbody></table>"
        f"<h2>Series</h2><p>Click a header to sort.</p><table class='sortable' id='series'><thead><tr>{head}"
        f"</tr></thead><tbody>{rows}</tbody></table><h2>Charts</h2>{''.join(charts)}"
        f"<script>{_SORT_JS}</script></body></html>"
    )
