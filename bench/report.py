"""Self-contained HTML report and Markdown summary of one run.

The HTML opens offline: plotly's JavaScript is inlined once, every user-provided string is
escaped (html.escape for the table, plotly's JSON encoding for charts).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferbench.env import noise_warnings
from inferbench.markdown import fmt as _fmt
from inferbench.markdown import markdown_table
from inferbench.status import OK
from inferbench.storage import load_run
from inferbench.util import atomic_write_text

REFERENCE = ("torch", "fp32")  # speed-ups are against eager FP32 at the same batch size
TABLE_COLUMNS = (
    "model",
    "backend",
    "precision",
    "batch_size",
    "threads",
    "mode",
    "status",
    "latency_p50_ms",
    "latency_p50_ci_low_ms",
    "latency_p50_ci_high_ms",
    "latency_p99_ms",
    "engine_p50_ms",
    "throughput_sps",
    "throughput_ci_low_sps",
    "throughput_ci_high_sps",
    "streams",
    "speedup_vs_eager_fp32",
    "achieved_gflops",
    "pct_of_peak",
    "process_p50_spread_pct",
    "prepare_s",
    "first_inference_ms",
    "peak_rss_mb",
    "max_abs_err",
    "cosine",
    "engine_precision",
    "reason",
)


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `speedup_vs_eager_fp32` against eager FP32 at the same model, batch, threads and mode:
    reference p50 / this p50 in latency mode, this throughput / reference's in throughput mode."""
    keys = ["model", "batch_size", "threads", "mode"]
    ok = frame[frame["status"] == OK]
    ref = ok[(ok["backend"] == REFERENCE[0]) & (ok["precision"] == REFERENCE[1])]
    ref = ref[[*keys, "latency_p50_ms", "throughput_sps"]].rename(
        columns={"latency_p50_ms": "_ref_p50", "throughput_sps": "_ref_sps"}
    )
    merged = frame.drop(columns="speedup_vs_eager_fp32", errors="ignore").merge(ref, on=keys, how="left")
    merged["speedup_vs_eager_fp32"] = np.where(
        merged["mode"] == "throughput",
        merged["throughput_sps"] / merged["_ref_sps"],
        merged["_ref_p50"] / merged["latency_p50_ms"],
    )
    return merged.drop(columns=["_ref_p50", "_ref_sps"])


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


# ---------------------------------------------------------------- Markdown


def summary_markdown(frame: pd.DataFrame, env: dict[str, Any], run_id: str) -> str:
    frame = with_speedup(frame)
    cpu = env.get("cpu", {})
    parts = [f"# InferBench run `{run_id}`", ""]
    if cpu:
        parts.append(
            f"CPU: {cpu.get('model')} ({cpu.get('logical_cpus')} logical CPUs); "
            f"native bf16: {cpu.get('native_bf16')}; int8 dot product: {cpu.get('native_int8_dot')}"
        )
        parts.append("")
    for warning in noise_warnings(env, frame.to_dict("records")):
        parts += [f"> **Noise warning:** {warning}", ""]
    counts = frame["status"].value_counts().to_dict()
    parts.append("Cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    cols = [
        "backend",
        "precision",
        "batch_size",
        "threads",
        "mode",
        "status",
        "latency_p50_ms",
        "latency_p50_ci_low_ms",
        "latency_p50_ci_high_ms",
        "latency_p99_ms",
        "throughput_sps",
        "speedup_vs_eager_fp32",
        "pct_of_peak",
        "max_abs_err",
    ]
    for model, group in frame.groupby("model", sort=False):
        parts += ["", f"## {model}", "", markdown_table(group, cols)]
    problems = frame[frame["status"] != OK]
    if len(problems):
        parts += [
            "",
            "## Cells that did not run",
            "",
            markdown_table(problems, ["model", "backend", "precision", "batch_size", "status", "reason"]),
        ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML


def _figures(frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    import plotly.express as px
    import plotly.graph_objects as go

    figs: list[tuple[str, Any]] = []
    ok = with_speedup(frame[frame["status"] == OK]).copy()
    if ok.empty:
        return figs
    ok["engine"] = (
        ok["backend"] + " " + ok["precision"] + ok["mode"].map({"throughput": " (tput)"}).fillna("")
    )
    for model, group in ok.groupby("model", sort=False):
        group = group.sort_values("batch_size")
        for metric, title, log in (
            ("latency_p50_ms", "p50 latency (ms)", True),
            ("throughput_sps", "throughput (samples/s)", False),
        ):
            fig = px.line(
                group,
                x="batch_size",
                y=metric,
                color="engine",
                markers=True,
                log_y=log,
                title=f"{model}: {title} vs batch size",
            )
            fig.update_xaxes(type="category")
            figs.append((f"{model}-{metric}", fig))
        heat = group.pivot_table(index="engine", columns="batch_size", values="speedup_vs_eager_fp32")
        if heat.notna().any().any():
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
                title=f"{model}: speed-up over eager FP32 (same batch)", xaxis_title="batch size"
            )
            figs.append((f"{model}-heatmap", fig))
        figs.append((f"{model}-pareto", _pareto_figure(model, group)))
    figs.append(("distributions", _distribution_figure(records)))
    return figs


def _pareto_figure(model: str, group: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    err = group["rel_l2_err"].fillna(0.0).clip(lower=1e-12)
    points = list(zip(group["throughput_sps"], err, strict=True))
    front = set(pareto_front(points))
    labels = (group["engine"] + " b" + group["batch_size"].astype(str)).tolist()
    fig = go.Figure()
    for on_front in (False, True):
        idx = [i for i in range(len(points)) if (i in front) == on_front]
        fig.add_trace(
            go.Scatter(
                x=[points[i][0] for i in idx],
                y=[points[i][1] for i in idx],
                text=[labels[i] for i in idx],
                mode="markers",
                name="Pareto front" if on_front else "dominated",
                marker={"size": 11 if on_front else 7, "symbol": "star" if on_front else "circle"},
            )
        )
    fig.update_layout(
        title=f"{model}: accuracy vs speed (relative L2 error vs eager FP32)",
        xaxis_title="throughput (samples/s)",
        yaxis_title="relative L2 error",
        yaxis_type="log",
    )
    return fig


def _distribution_figure(records: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in records:
        if r.get("status") == OK and r.get("latencies_ns"):
            ms = np.asarray(r["latencies_ns"]) / 1e6
            name = f"{r['model']} {r['backend']} {r['precision']} b{r['batch_size']}"
            fig.add_trace(go.Box(x=ms / np.median(ms), name=name, boxpoints=False, orientation="h"))
    fig.update_layout(
        title="Latency distributions (each cell relative to its own median)",
        xaxis_title="latency / median",
        height=max(400, 18 * len(fig.data)),
        showlegend=False,
    )
    return fig


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = tr => {
    const t = tr.cells[col].textContent; const n = Number(t);
    return t === '' ? null : isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // blanks always last
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right} th{background:#f0f0f0;cursor:pointer}
td.s,th.s{text-align:left} tr.status-error td,tr.status-timeout td{background:#fde2e2}
tr.status-unsupported td,tr.status-unavailable td{background:#f4f4f4;color:#666} .warn{color:#a00}
td.few{color:#999;font-style:italic} .noise{background:#fff4d6;border:1px solid #e0b000;padding:6px 10px}
"""
_FEW_SAMPLES = "fewer samples than measure.tail_samples: p99 rests on too few observations"


def _table_html(frame: pd.DataFrame) -> str:
    text_cols = {"model", "backend", "precision", "mode", "status", "engine_precision", "reason"}
    head = "".join(
        f'<th class="{"s" if c in text_cols else ""}">{html.escape(c)}</th>' for c in TABLE_COLUMNS
    )
    rows = []
    frame = with_speedup(frame)
    for _, row in frame.iterrows():
        few = str(row.get("p99_reliable")) == "False"
        cells = "".join(
            f'<td class="few" title="{_FEW_SAMPLES}">{html.escape(_fmt(row[c], 4))}</td>'
            if c == "latency_p99_ms" and few
            else f'<td class="{"s" if c in text_cols else ""}">{html.escape(_fmt(row[c], 4))}</td>'
            for c in TABLE_COLUMNS
        )
        rows.append(f'<tr class="status-{html.escape(str(row["status"]))}">{cells}</tr>')
    body = "".join(rows)
    return f'<table class="sortable" id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _env_html(env: dict[str, Any]) -> str:
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


def render_html(frame: pd.DataFrame, records: list[dict[str, Any]], env: dict[str, Any], run_id: str) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    charts = "".join(
        f'<div class="chart" id="chart-{html.escape(name)}">'
        f"{pio.to_html(fig, include_plotlyjs=False, full_html=False)}</div>"
        for name, fig in _figures(frame, records)
    )
    title = html.escape(f"InferBench report: {run_id}")
    warnings = "".join(
        f'<p class="noise">Noise warning: {html.escape(w)}</p>' for w in noise_warnings(env, records)
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{title}</h1>{warnings}<h2>Environment</h2>{_env_html(env)}"
        f"<h2>Results</h2><p>Click a header to sort.</p>{_table_html(frame)}"
        f"<h2>Charts</h2>{charts}<script>{_SORT_JS}</script></body></html>"
    )


def write_report(run_dir: Path, reports_dir: Path) -> tuple[Path, Path]:
    """Write `reports/<run-id>.html` and `<run_dir>/summary.md`; returns both paths."""
    frame, records, env = load_run(run_dir)
    run_id = run_dir.name
    html_path = reports_dir / f"{run_id}.html"
    atomic_write_text(html_path, render_html(frame, records, env, run_id))
    md_path = run_dir / "summary.md"
    atomic_write_text(md_path, summary_markdown(frame, env, run_id))
    return html_path, md_path
