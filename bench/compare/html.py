"""compare.html: a comparison of two runs as one self-contained page, beside compare.md.

It shows what `compare`/`ab` decided, never a second statistic: the verdict frame
(`inferbench.compare.core.judge`: ratio, interval, MDE and verdict per cell and metric) becomes one
row per cell, coloured by the cell's worst gating verdict, with a filter for regressions or
inconclusive cells and sortable columns. Below it both environments side by side
(`inferbench.compare.env`), then per cell the two latency distributions overlaid, drawn from a
handful of quantiles per side (never the raw samples) with the run report's lazily loaded,
inlined plotly. Every user string (model names, reasons, run names) is escaped: html.escape
in the markup, plotly text as entities, chart JSON with `<` escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from inferbench.compare.core import KEY, SERVE_METRIC, CompareOptions
from inferbench.compare.env import RunView, environment_html, environment_rows
from inferbench.compare.format import formatted, headline, legend
from inferbench.compare.verdict import VERDICTS
from inferbench.config import Cell, axes_shown
from inferbench.markdown import fmt
from inferbench.report.charts import latency_quantiles
from inferbench.report.html import CHARTS_JS, CSS, SORT_JS

#: Quantiles (percent) each side's distribution is drawn from.
DIST_QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
#: Metric columns, gating ones first, with their units.
METRIC_UNITS = {"p50": "ms", "min": "ms", "throughput": "samples/s", "p99": "ms", SERVE_METRIC: "requests/s"}
#: A cell's class, worst first: its rank is the sort key of the cell's verdict column.
CELL_CLASSES = ("broken", "regression", "inconclusive", "status", "improvement", "no-change")

PAGE_CSS = """
tr.v-broken td,tr.v-regression td{background:#fde2e2} tr.v-inconclusive td{background:#fff4d6}
tr.v-improvement td{background:#e3f4e1} tr.v-status td{background:#f4f4f4;color:#555}
td.v-regression{color:#b00;font-weight:600} td.v-improvement{color:#070;font-weight:600}
td.v-inconclusive{color:#8a6d00} td.advisory{opacity:.7} td.key,th.key{text-align:left}
tr.mismatch th,tr.mismatch td{background:#fbc8c8} tr.differs th,tr.differs td{background:#fff1b8}
span.key{padding:0 4px} span.key.mismatch{background:#fbc8c8} span.key.differs{background:#fff1b8}
p.headline{font-size:1.2em} p.fail{color:#b00} p.undecided{color:#8a6d00} p.pass{color:#070}
.note{color:#555} mark{background:#fbc8c8} div.chart{min-height:320px;max-width:900px}
#cells td{white-space:nowrap} #cells thead tr:first-child th{position:static}
"""

# The verdict filter: every row carries data-regression / data-inconclusive; a cell's chart is
# hidden with its row.
FILTER_JS = """
const verdictFilter = document.getElementById('verdict-filter');
function applyVerdictFilter() {
  const want = verdictFilter.value; let shown = 0;
  for (const tr of document.querySelectorAll('table#cells tbody tr')) {
    const keep = want === 'all' || tr.dataset[want] === '1';
    tr.hidden = !keep; shown += keep;
    const chart = tr.dataset.chart ? document.getElementById(tr.dataset.chart) : null;
    if (chart) chart.hidden = !keep;
  }
  document.getElementById('shown').textContent = shown;
}
verdictFilter.addEventListener('change', applyVerdictFilter);
"""


def verdict_class(verdict: str) -> str:
    """A CSS class for a verdict: `v-regression`, `v-no-change`, ...; a status change (`broken
    (error)`, `still unsupported`, `fixed (was error)`) is `v-status`."""
    return "v-" + (verdict.replace(" ", "-") if verdict in VERDICTS else "status")


def _e(value: Any) -> str:
    return html.escape(str(value))


def inline_markdown(text: str) -> str:
    """The comparison's Markdown sentences (headline, legend, notes) as HTML: escaped first,
    then **bold** and `code`."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _cell_class(rows: pd.DataFrame) -> str:
    if rows["broken"].any():
        return "broken"
    if rows["regression"].any():
        return "regression"
    if rows["inconclusive"].any():
        return "inconclusive"
    if (rows["metric"] == "status").any():
        return "status"
    gating = rows[rows["gating"]]
    return "improvement" if (gating["verdict"] == "improvement").any() else "no-change"


def cells(frame: pd.DataFrame) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame, str]]:
    """(key, the cell's rows, the cell's class) in the frame's order."""
    if frame.empty:
        return
    for key, rows in frame.groupby(KEY, sort=False, dropna=False):
        yield tuple(key), rows, _cell_class(rows)


def _metrics(frame: pd.DataFrame) -> list[str]:
    present = set(frame["metric"]) if not frame.empty else set()
    return [m for m in METRIC_UNITS if m in present]


def _metric_cells(rows: pd.DataFrame, shown: pd.DataFrame, metric: str) -> str:
    found = rows.index[rows["metric"] == metric]
    if not len(found):
        return "<td></td>" * 5
    i = found[0]
    row, text = rows.loc[i], shown.loc[i]
    ratio = f' data-sort="{row["ratio"]:.6g}"' if pd.notna(row["ratio"]) else ""
    mde = f' data-sort="{row["mde_pct"]:.6g}"' if pd.notna(row["mde_pct"]) else ""
    advisory = "" if row["gating"] else " advisory"
    verdict = str(row["verdict"])
    return (
        f"<td>{_e(fmt(row.get('base_value'), 4))}</td><td>{_e(fmt(row.get('new_value'), 4))}</td>"
        f"<td{ratio}>{_e(text['ratio (CI)'])}</td><td{mde}>{_e(text['MDE'])}</td>"
        f'<td class="key {verdict_class(verdict)}{advisory}">{_e(verdict)}</td>'
    )


def _note(rows: pd.DataFrame, base: RunView, new: RunView, key: tuple[Any, ...]) -> str:
    notes = [str(n) for n in dict.fromkeys(rows["note"].fillna("")) if n]
    hashes = [(v.record(key) or {}).get("settings_hash") for v in (base, new)]
    if all(hashes) and hashes[0] != hashes[1]:
        notes.append(f"settings differ ({hashes[0]} vs {hashes[1]})")
    return "; ".join(notes)


def _advisory(frame: pd.DataFrame, metric: str) -> str:
    """What a metric's column header says about gating (`compare_core.gates`)."""
    gating = frame.loc[frame["metric"] == metric, "gating"]
    if gating.all():
        return ""
    return " advisory" if not gating.any() else " advisory in latency mode"


def _table_html(frame: pd.DataFrame, base: RunView, new: RunView, charts: dict[tuple[Any, ...], str]) -> str:
    metrics = _metrics(frame)
    keys = axes_shown(frame.get("shape", ())) if not frame.empty else KEY
    groups = f'<th class="key" colspan="{len(keys)}">cell</th><th></th>' + "".join(
        f'<th colspan="5">{m} ({METRIC_UNITS[m]}){_advisory(frame, m)}</th>' for m in metrics
    )
    names = "".join(f'<th class="key">{"batch" if k == "batch_size" else k}</th>' for k in keys)
    names += '<th class="key">verdict</th>'
    per_metric = "<th>base</th><th>new</th><th>ratio [CI]</th><th>MDE</th><th>verdict</th>"
    names += per_metric * len(metrics)
    names += '<th class="key">note</th><th class="key">chart</th>'
    shown = formatted(frame) if not frame.empty else frame
    body = []
    for key, rows, klass in cells(frame):
        status = rows[rows["metric"] == "status"]
        verdict = str(status["verdict"].iloc[0]) if len(status) else klass.replace("-", " ")
        tds = "".join(f'<td class="key">{_e(v)}</td>' for k, v in zip(KEY, key, strict=True) if k in keys)
        tds += f'<td class="key" data-sort="{CELL_CLASSES.index(klass)}">{_e(verdict)}</td>'
        tds += "".join(_metric_cells(rows, shown, m) for m in metrics)
        chart = charts.get(key)
        link = f'<a href="#{chart}">chart</a>' if chart else ""
        tds += f'<td class="key">{_e(_note(rows, base, new, key))}</td><td class="key">{link}</td>'
        data = f' data-regression="{int(klass in ("broken", "regression"))}"'
        data += f' data-inconclusive="{int(klass == "inconclusive")}"'
        data += f' data-chart="{chart}"' if chart else ""
        body.append(f'<tr class="v-{klass}"{data}>{tds}</tr>')
    options = "".join(
        f'<option value="{v}">{label}</option>'
        for v, label in (
            ("all", "all cells"),
            ("regression", "regressions (and broken cells) only"),
            ("inconclusive", "inconclusive only"),
        )
    )
    return (
        f'<p class="filters"><label>show <select id="verdict-filter">{options}</select></label> '
        f'<span id="shown">{len(body)}</span> of {len(body)} cells shown. Click a header to sort.</p>'
        f'<div class="scroll"><table class="sortable" id="cells"><thead><tr>{groups}</tr>'
        f"<tr>{names}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def distribution_figure(title: str, sides: Sequence[tuple[str, dict[str, float]]]) -> Any:
    """The sides' latency distributions overlaid: percentile against latency, one line each
    (a line further right is slower)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (label, quantiles), colour in zip(sides, ("#1f77b4", "#d62728"), strict=False):
        fig.add_trace(
            go.Scatter(
                x=list(quantiles.values()),
                y=[int(q[1:]) for q in quantiles],
                mode="lines+markers",
                name=_e(label),  # plotly renders a subset of HTML in text
                line={"color": colour},
                hovertemplate="p%{y}: %{x:.4g} ms<extra></extra>",
            )
        )
    fig.update_layout(
        title=_e(title),
        # Log latency: a few slow outliers at p99 must not squeeze the body of both curves.
        xaxis={"title": {"text": "latency (ms, log scale)"}, "type": "log"},
        yaxis_title="percentile",
        height=320,
        margin={"t": 50, "b": 50},
    )
    return fig


def _figures(
    frame: pd.DataFrame, base: RunView, new: RunView
) -> tuple[list[tuple[str, Any]], dict[tuple[Any, ...], str]]:
    """One figure per cell with samples on both sides, and each cell's chart element id."""
    named: list[tuple[str, Any]] = []
    ids: dict[tuple[Any, ...], str] = {}
    for key, _, _ in cells(frame):
        sides = []
        for view in (base, new):
            record = view.record(key) or {}
            q = latency_quantiles(record.get("latencies_ns"), DIST_QUANTILES)
            if q is not None:
                sides.append((f"{'base' if view is base else 'new'}: {view.name}", q))
        if len(sides) < 2:
            continue
        title = Cell(*key).title
        ids[key] = f"chart-{len(named)}"  # the id the shared chart markup gives the k-th figure
        named.append((f"cell-{len(named)}", distribution_figure(title, sides)))
    return named, ids


def _unmatched_html(unmatched: pd.DataFrame) -> str:
    if unmatched.empty:
        return ""
    cols = [*axes_shown(unmatched.get("shape", ())), "only_in"]
    head = "".join(f'<th class="key">{c}</th>' for c in cols)
    rows = "".join(
        "<tr>" + "".join(f'<td class="key">{_e(r.get(c))}</td>' for c in cols) + "</tr>"
        for r in unmatched.to_dict("records")
    )
    return (
        '<section id="unmatched"><h2>Cells in one run only</h2>'
        f'<table id="unmatched-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>'
    )


def render_compare_html(
    frame: pd.DataFrame,
    unmatched: pd.DataFrame,
    options: CompareOptions,
    base: RunView,
    new: RunView,
    notes: Sequence[str] = (),
) -> str:
    """The whole page."""
    from inferbench.report.page import charts_html, plotly_gz

    named, chart_ids = _figures(frame, base, new)
    title = _e(f"InferBench comparison: {base.name} → {new.name}")
    top = headline(frame)
    outcome = "fail" if "FAIL" in top else "undecided" if "UNDECIDED" in top else "pass"
    env_rows = environment_rows(base, new)
    checked = sum(klass == "mismatch" for *_, klass in env_rows)
    other = sum(klass == "differs" for *_, klass in env_rows)
    env_line = (
        f"<p>Environments: {checked} checked difference(s), {other} other "
        '(<a href="#environment">side by side below</a>).</p>'
    )
    table = _table_html(frame, base, new, chart_ids) if not frame.empty else "<p>No cells in common.</p>"
    if named:
        charts = (
            '<p class="note">Per cell, each side\'s latency percentiles (p1 to p99, from the raw '
            "samples; latency on a log scale): a line further right is slower; a wider spread "
            f"between p50 and p99 is a longer tail.</p>{charts_html(named)}"
        )
        scripts = (
            f'<script type="text/plain" id="plotly-gz">{plotly_gz()}</script>'
            f"<script>{SORT_JS}</script><script>{FILTER_JS}</script><script>{CHARTS_JS}</script>"
        )
    else:
        charts = "<p>No cell has latency samples on both sides.</p>"
        scripts = f"<script>{SORT_JS}</script><script>{FILTER_JS}</script>" if not frame.empty else ""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}{PAGE_CSS}</style></head><body><h1>{title}</h1>"
        f'<p class="headline {outcome}" id="headline">{inline_markdown(top)}</p>'
        f"<p>{inline_markdown(legend(options, frame))}</p>"
        + "".join(f'<p class="note">{inline_markdown(n)}</p>' for n in notes)
        + env_line
        + f'<section id="cells-section"><h2>Cells</h2>{table}</section>'
        + _unmatched_html(unmatched)
        + f'<section id="environment"><h2>Environments</h2>{environment_html(base, new)}</section>'
        + f'<section id="charts"><h2>Latency distributions</h2>{charts}</section>'
        + f"{scripts}</body></html>"
    )
