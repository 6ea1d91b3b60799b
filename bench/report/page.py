"""Self-contained HTML report and Markdown summary of one run.

The page opens on the answer (inferbench.report.answer), then every cell in a filterable table,
then charts per model (inferbench.report.charts), then the environment. It opens offline:
plotly's JavaScript is inlined once, gzipped; chart specs travel as JSON with `<` escaped,
and every user-provided string in the HTML goes through html.escape. A run merged from several
machines is answered, charted and described host by host (inferbench.machine.hosts).
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from inferbench.machine.env import noise_warnings
from inferbench.machine.hosts import envs_by_host, host_labels, host_title, hosts_in
from inferbench.report.answer import REFERENCE, answer_frame, answers, with_speedup
from inferbench.report.answer_text import rule_text
from inferbench.report.charts import figures, pareto_front
from inferbench.report.html import (
    CHARTS_JS,
    CSS,
    TABLE_COLUMNS,
    TABLE_JS,
    answer_html,
    env_html,
    not_run_html,
    results_html,
)
from inferbench.report.summary import summary_markdown
from inferbench.store.runfolder import load_host_envs, load_run
from inferbench.util import atomic_write_text

__all__ = [
    "REFERENCE",
    "TABLE_COLUMNS",
    "charts_html",
    "load_run",
    "pareto_front",
    "plotly_gz",
    "render_html",
    "script_json",
    "summary_markdown",
    "with_speedup",
    "write_report",
]


@functools.cache
def plotly_gz() -> str:
    from plotly.offline import get_plotlyjs

    # mtime=0: the same plotly gives the same bytes, so reports of one run compare equal.
    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), 9, mtime=0)).decode("ascii")


def script_json(value: Any) -> str:
    """JSON safe inside <script>: no '<' can close the element or open a comment."""
    from plotly.io.json import to_json_plotly

    return str(to_json_plotly(value)).replace("<", "\\u003c")


def charts_html(named_figures: Iterable[tuple[str, Any]]) -> str:
    """Chart placeholders with their plotly specs (drawn by CHARTS_JS as they scroll into
    view; the k-th figure's div is `chart-k`), and the one template they share."""
    import plotly.io as pio

    parts = []
    for k, (name, fig) in enumerate(named_figures):
        spec = fig.to_plotly_json()
        spec["layout"].pop("template", None)  # one shared template for every chart, below
        target = f"chart-{k}"
        parts.append(
            f'<div class="chart" id="{target}" data-name="{html.escape(name)}"></div>'
            f'<script type="application/json" class="chart-spec" data-target="{target}">'
            f"{script_json({'data': spec['data'], 'layout': spec['layout']})}</script>"
        )
    template = pio.templates["plotly_white"].to_plotly_json()
    return (
        '<p id="charts-status">Drawing charts...</p>'
        + "".join(parts)
        + f'<script type="application/json" id="plotly-template">{script_json(template)}</script>'
    )


def _environment_html(env: dict[str, Any], host_envs: list[dict[str, Any]], hosts: list[str]) -> str:
    """One environment table, or one per machine of a run merged from several."""
    if len(hosts) < 2:
        return env_html(env)
    by_fp, labels = envs_by_host(host_envs), host_labels(host_envs)
    return "".join(
        f'<h3 class="host">{html.escape(host_title(h, labels))}</h3>'
        + (env_html(by_fp[h]) if h in by_fp else "<p>No environment recorded for this host.</p>")
        for h in hosts
    )


def render_html(
    frame: pd.DataFrame,
    records: list[dict[str, Any]],
    env: dict[str, Any],
    run_id: str,
    host_envs: list[dict[str, Any]] | None = None,
) -> str:
    """The page; `host_envs` are the environments of every machine of a merged run."""
    frame = with_speedup(frame)
    hosts, labels = hosts_in(frame), host_labels(host_envs or [])
    environment = _environment_html(env, host_envs or [], hosts)
    title = html.escape(f"InferBench report: {run_id}")
    warnings = "".join(
        f'<p class="noise">Noise warning: {html.escape(w)}</p>' for w in noise_warnings(env, records)
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head><body><h1>{title}</h1>"
        f'<section id="answer"><h2>Answer</h2>{warnings}<p>{html.escape(rule_text(answers(frame)))}</p>'
        f"{answer_html(frame, labels)}</section>"
        f'<section id="results-section"><h2>Results</h2>'
        f"<p>Every cell (also in results.csv). Click a header to sort; filter with the lists.</p>"
        f"{results_html(frame)}</section>"
        f'<section id="not-run"><h2>Cells that did not run</h2>{not_run_html(frame)}</section>'
        f'<section id="charts"><h2>Charts</h2>{charts_html(figures(frame, records))}</section>'
        f'<section id="environment"><h2>Environment</h2>{environment}</section>'
        f'<script type="text/plain" id="plotly-gz">{plotly_gz()}</script>'
        f"<script>{TABLE_JS}</script><script>{CHARTS_JS}</script></body></html>"
    )


def write_report(run_dir: Path, reports_dir: Path) -> tuple[Path, Path]:
    """Write `reports/<run-id>.html` and `<run_dir>/summary.md`; returns both paths."""
    _, records, env = load_run(run_dir)
    host_envs = load_host_envs(run_dir)
    hosts = hosts_in(records)
    if len(hosts) == 1:  # the measuring machine's facts (a Ray node's, not the driver's)
        env = envs_by_host(host_envs).get(hosts[0], env)
    frame = answer_frame(records)  # results.csv's columns plus flags the CSV may lack
    run_id = run_dir.name
    html_path = reports_dir / f"{run_id}.html"
    atomic_write_text(html_path, render_html(frame, records, env, run_id, host_envs))
    md_path = run_dir / "summary.md"
    atomic_write_text(md_path, summary_markdown(frame, env, run_id, host_labels(host_envs)))
    return html_path, md_path
