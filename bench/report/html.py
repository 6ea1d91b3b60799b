"""The report's HTML pieces: the answer, the filterable results table, the environment, and the
style and script that make them usable offline (no library, no network).

Every user-provided string goes through html.escape; rows carry their model, backend,
precision, mode and status as data attributes so the filters need no parsing of cells. A run
merged from several machines answers per host and its table gains a host column and filter.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from inferbench.config import CELL_AXES, axes_shown
from inferbench.machine.hosts import HOST, host_title, several_hosts
from inferbench.markdown import fmt
from inferbench.report.answer import NOT_RUN_ANCHOR, answers, by_host, exclusion
from inferbench.report.answer_text import answer_columns, answer_rows
from inferbench.report.serving import POLICY, TABLE_EXTRA, best_policy_text, is_serve
from inferbench.status import HARNESS_LIMITED, MEASURED
from inferbench.store.record import FIELDS, TABLE_COLUMNS, TEXT

# TABLE_COLUMNS, the results table's columns, come with the record (inferbench.store.record); the
# table adds the shape and host columns after the cell's axes where a run has them.
_LEADING_AXES = sum(c in CELL_AXES for c in TABLE_COLUMNS)
#: Columns the results table can be filtered on (a drop-down each).
FILTERS = ("model", "backend", "precision", "mode", "status")
#: Left-aligned columns: the table's words.
TEXT_COLUMNS = frozenset({*(c for c in TABLE_COLUMNS if FIELDS[c].kind == TEXT), HOST, POLICY})
#: Listed with the measured cells, not with those that did not run: a harness-limited serve
#: cell ran, but is not a result.
SHOWN_MEASURED = MEASURED | {HARNESS_LIMITED}
_FEW_SAMPLES = "fewer samples than measure.tail_samples: p99 rests on too few observations"

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right} th{background:#f0f0f0}
td.s,th.s{text-align:left} tr.status-error td,tr.status-timeout td{background:#fde2e2}
tr.status-unsupported td,tr.status-unavailable td{background:#f4f4f4;color:#666} .warn{color:#a00}
td.few{color:#999;font-style:italic} .noise{background:#fff4d6;border:1px solid #e0b000;padding:6px 10px}
.scroll{max-height:80vh;overflow:auto;border:1px solid #ccc}
.scroll thead th{position:sticky;top:0;z-index:1;cursor:pointer;box-shadow:0 1px 0 #ccc}
#answer td.win{font-weight:600} .filters label{margin-right:1em} .filters select{margin-left:.3em}
div.chart{min-height:450px}
"""

# Sorting of any `table.sortable` (click a header): by a cell's data-sort when it has one (a
# number behind formatted text such as "1.02 [0.99, 1.05]"), else by its text.
SORT_JS = """
const sortHeaders = document.querySelectorAll('table.sortable thead tr:last-child th');
sortHeaders.forEach(th => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0]; const col = th.cellIndex;
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = tr => { const td = tr.cells[col];
    const t = td.dataset.sort ?? td.textContent; const n = Number(t);
    return t === '' ? null : isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // blanks always last
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""
# Sorting and filtering (drop-downs) of the results table.
TABLE_JS = (
    SORT_JS
    + """
const filters = [...document.querySelectorAll('.filters select')];
function applyFilters() {
  const want = filters.map(s => [s.dataset.col, s.value]).filter(([, v]) => v !== '');
  let shown = 0;
  for (const tr of document.querySelectorAll('table#results tbody tr')) {
    const keep = want.every(([c, v]) => tr.dataset[c] === v);
    tr.hidden = !keep; shown += keep;
  }
  document.getElementById('shown').textContent = shown;
}
filters.forEach(s => s.addEventListener('change', applyFilters));
"""
)

# plotly.js travels gzipped (base64) and is inflated by the browser's own DecompressionStream:
# a third of the bytes, still one offline file. It is loaded when the charts section nears the
# viewport, and each chart is drawn when it does, so a report with many models costs only the
# charts someone looks at.
CHARTS_JS = """
async function loadCharts() {
  const status = document.getElementById('charts-status');
  try {
    // The browser decodes the base64 (a data: URL) and inflates it natively.
    const packed = await fetch(
      'data:application/octet-stream;base64,' + document.getElementById('plotly-gz').textContent);
    const code = await new Response(packed.body.pipeThrough(new DecompressionStream('gzip'))).text();
    const script = document.createElement('script'); script.textContent = code;
    document.head.appendChild(script);
    performance.mark('plotly-ready');
    const template = JSON.parse(document.getElementById('plotly-template').textContent);
    let queue = Promise.resolve();
    const draw = div => { queue = queue.then(async () => {
      const spec = document.querySelector(`script.chart-spec[data-target="${div.id}"]`);
      const fig = JSON.parse(spec.textContent);
      fig.layout.template = template;
      await Plotly.newPlot(div, fig.data, fig.layout, {responsive: true});
      div.dataset.drawn = '1';
    }).catch(err => { console.error(err); div.textContent = 'Chart failed: ' + err; }); };
    const seen = new IntersectionObserver(entries => entries.forEach(e => {
      if (e.isIntersecting) { seen.unobserve(e.target); draw(e.target); } }), {rootMargin: '400px'});
    document.querySelectorAll('div.chart').forEach(div => seen.observe(div));
    status.textContent = '';
    document.body.dataset.charts = 'ready';
  } catch (err) {
    console.error(err);
    status.textContent = 'Charts need a browser with DecompressionStream '
      + '(Chrome 80+, Firefox 113+, Safari 16.4+): ' + err;
    document.body.dataset.charts = 'failed';
  }
}
// plotly (4.8 MB of JavaScript to parse) loads only when the charts come near: the answer and
// the table are on screen at once.
const near = new IntersectionObserver(entries => {
  if (entries.some(e => e.isIntersecting)) { near.disconnect(); loadCharts(); } }, {rootMargin: '600px'});
near.observe(document.getElementById('charts'));
"""


def _cell(value: Any, klass: str = "", title: str = "") -> str:
    attrs = (f' class="{klass}"' if klass else "") + (f' title="{html.escape(title)}"' if title else "")
    return f"<td{attrs}>{html.escape(fmt(value, 4))}</td>"


def answer_html(frame: pd.DataFrame, host_labels: dict[str, str] | None = None) -> str:
    """The answer table (one per machine when the run holds several), with the 'did not run'
    counts linking to the list of reasons."""
    found = answers(frame)
    if not found:
        return "<p>No cells.</p>"
    groups = by_host(found)
    if len(groups) == 1:
        return _answer_table(found, "answer-table")
    return "".join(
        f'<h3 class="host">{html.escape(host_title(host, host_labels or {}))}</h3>'
        + _answer_table(group, f"answer-table-{k}")
        for k, (host, group) in enumerate(groups, 1)
    )


def _answer_table(found: list[Any], table_id: str) -> str:
    columns = answer_columns(found)
    head = "".join(f'<th class="s">{html.escape(c)}</th>' for c in columns)
    body = []
    links = {"did not run": NOT_RUN_ANCHOR, "excluded": "left-out"}
    for row in answer_rows(found):
        cells = []
        for col in columns:
            text = html.escape(row[col])
            if col in links and text:
                text = f'<a href="#{links[col]}">{text}</a>'
            klass = "s win" if col == "fastest" else "s"
            cells.append(f'<td class="{klass}">{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _plain_table(rows: list[dict[str, Any]], cols: tuple[str, ...], table_id: str) -> str:
    head = "".join(f'<th class="s">{c}</th>' for c in cols)
    body = "".join(
        f'<tr class="status-{html.escape(str(r["status"]))}">'
        + "".join(_cell(r.get(c), "s") for c in cols)
        + "</tr>"
        for r in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def not_run_html(frame: pd.DataFrame) -> str:
    """Cells without numbers, then measured cells the answer left out, each with the reason."""
    keys = (*axes_shown(frame.get("shape", ())), *((HOST,) if several_hosts(frame) else ()))
    records = frame.to_dict("records")
    failed = [r for r in records if r["status"] not in SHOWN_MEASURED]
    left_out = [
        {**r, "left out because": why}
        for r in records
        if r["status"] in SHOWN_MEASURED and (why := exclusion(r))
    ]
    parts = [
        _plain_table(failed, (*keys, "status", "reason"), NOT_RUN_ANCHOR)
        if failed
        else f'<p id="{NOT_RUN_ANCHOR}">Every cell ran.</p>'
    ]
    if left_out:
        parts.append("<h3>Measured but left out of the answer</h3>")
        parts.append(_plain_table(left_out, (*keys, "status", "left out because", "reason"), "left-out"))
    return "".join(parts)


def _filters(frame: pd.DataFrame) -> tuple[str, ...]:
    shape = ("shape",) if "shape" in axes_shown(frame.get("shape", ())) else ()
    return (*FILTERS, *shape, *((HOST,) if several_hosts(frame) else ()))


def _filters_html(frame: pd.DataFrame) -> str:
    selects = []
    for col in _filters(frame):
        values = sorted({str(v) for v in frame[col].dropna()}, key=str)
        options = '<option value="">all</option>' + "".join(
            f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values
        )
        selects.append(f'<label>{col}<select data-col="{col}" id="filter-{col}">{options}</select></label>')
    return f'<p class="filters">{"".join(selects)} <span id="shown">{len(frame)}</span> rows shown</p>'


def results_html(frame: pd.DataFrame) -> str:
    """Filters, then every cell in a sortable table whose header stays in view when scrolling."""
    filters = _filters(frame)
    extra: tuple[str, ...] = ("shape",) if "shape" in filters else ()
    extra += (HOST,) if HOST in filters else ()
    columns = (*TABLE_COLUMNS[:_LEADING_AXES], *extra, *TABLE_COLUMNS[_LEADING_AXES:])
    records = frame.to_dict("records")
    if any(is_serve(r) for r in records):  # serve rows: their peak and best policy after the status
        at = columns.index("status") + 1
        columns = (*columns[:at], *(c for c in TABLE_EXTRA if c not in columns), *columns[at:])
        records = [{**r, POLICY: best_policy_text(r) if is_serve(r) else ""} for r in records]
    head = "".join(f'<th class="{"s" if c in TEXT_COLUMNS else ""}">{html.escape(c)}</th>' for c in columns)
    rows = []
    for row in records:
        few = str(row.get("p99_reliable")) == "False"
        cells = "".join(
            _cell(row.get(c), "few", _FEW_SAMPLES)
            if c == "latency_p99_ms" and few
            else _cell(row.get(c), "s" if c in TEXT_COLUMNS else "")
            for c in columns
        )
        data = "".join(f' data-{c}="{html.escape(str(row.get(c)))}"' for c in filters)
        rows.append(f'<tr class="status-{html.escape(str(row["status"]))}"{data}>{cells}</tr>')
    table = (
        f'<table class="sortable" id="results"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return f'{_filters_html(frame)}<div class="scroll">{table}</div>'


def env_html(env: dict[str, Any]) -> str:
    cpu = env.get("cpu", {})
    system = env.get("system", {})
    items = {
        "CPU": cpu.get("model"),
        "logical CPUs": cpu.get("logical_cpus"),
        "affinity": cpu.get("affinity"),
        "native bf16": cpu.get("native_bf16"),
        "native int8 dot product": cpu.get("native_int8_dot"),
        "CPU frequency": system.get("cpu_freq"),
        "CPU config (governor, idle)": system.get("cpu_config"),
        "ASLR": system.get("aslr"),
        "load average": env.get("load_average"),
        "thread variables": {k: v for k, v in env.get("threads", {}).get("env", {}).items() if v},
        "python": env.get("python"),
        "packages": ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        "oneDNN (torch)": env.get("torch_build", {}).get("onednn"),
        "GPU": env.get("gpu", {}).get("name") if env.get("gpu") else None,
        "captured": env.get("captured_at"),
    }
    for threads, peaks in env.get("peaks", {}).items():
        items[f"ceilings, {threads} threads"] = ", ".join(
            f"{label} {peaks[key]:.0f}"
            for key, label in (
                ("fp32_gflops", "FP32 GFLOP/s"),
                ("bf16_gflops", "BF16 GFLOP/s"),
                ("int8_gops", "INT8 GOP/s"),
                ("memory_gbps", "memory GB/s"),
            )
            if peaks.get(key)
        )
    rows = "".join(
        f'<tr><th class="s">{html.escape(k)}</th><td class="s">{html.escape(str(v))}</td></tr>'
        for k, v in items.items()
        if v not in (None, "", {})  # an older env.json, or a fact this machine does not expose
    )
    return f"<table>{rows}</table>"
