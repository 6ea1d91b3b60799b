"""HTML report and Markdown summary: content, escaping, and a real headless browser."""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.config import Cell
from inferbench.report.page import TABLE_COLUMNS, pareto_front, summary_markdown, with_speedup, write_report
from inferbench.store.runfolder import SCHEMA_VERSION, save_cell, to_frame, write_csv
from inferbench.tools.report_render import RenderedPage, chromium_path, draw_every_chart

EVIL = "<script>alert('x')</script>"
ARTIFACTS = Path(os.environ.get("INFERBENCH_TEST_ARTIFACTS", "test-artifacts"))


def _record(model: str, backend: str, batch: int, p50: float, status: str = "ok") -> dict[str, Any]:
    rng = np.random.default_rng(batch)
    ms = p50 * rng.lognormal(0, 0.03, 60)
    ok = status == "ok"
    return {
        "model": model,
        "backend": backend,
        "precision": "fp32",
        "batch_size": batch,
        "threads": 2,
        "status": status,
        "reason": "" if ok else f"engine said {EVIL}",
        "latencies_ns": [int(x * 1e6) for x in ms] if ok else None,
        "latency_p50_ms": float(np.median(ms)) if ok else None,
        "latency_p99_ms": float(np.percentile(ms, 99)) if ok else None,
        "throughput_sps": batch * 1e3 / float(ms.mean()) if ok else None,
        "rel_l2_err": 0.0 if backend == "torch" else 1e-6 * batch,
        "max_abs_err": 1e-6,
        "cell_key": Cell(model, backend, "fp32", batch, 2).key,
        "schema_version": SCHEMA_VERSION,
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "results" / "run-1"
    records = [
        _record(model, backend, batch, p50 * batch**0.8)
        for model in ("resnet50", EVIL)
        for backend, p50 in (("torch", 10.0), ("onnxruntime", 6.0), ("openvino", 5.0))
        for batch in (1, 8)
    ]
    records.append(_record("resnet50", "torch-compile", 1, 0, status="error"))
    for r in records:
        save_cell(run, {**r, "run_id": run.name})
    write_csv(run, records)
    (run / "env.json").write_text(
        json.dumps({"cpu": {"model": "Test CPU", "logical_cpus": 2, "native_bf16": True}, "packages": {}})
    )
    return run


def test_speedup_against_eager_fp32() -> None:
    frame = with_speedup(to_frame([_record("m", "torch", 1, 10.0), _record("m", "openvino", 1, 5.0)]))
    speedups = dict(zip(frame["backend"], frame["speedup_vs_eager_fp32"], strict=True))
    assert speedups["torch"] == pytest.approx(1.0)
    assert speedups["openvino"] == pytest.approx(2.0, rel=0.1)


def test_pareto_front() -> None:
    # (speed, error): the fastest and the most accurate are on the front, a dominated one is not.
    points = [(100.0, 1e-3), (50.0, 1e-6), (40.0, 1e-3), (80.0, 1e-4)]
    assert pareto_front(points) == [0, 1, 3]


def test_report_escapes_user_strings(run_dir: Path, tmp_path: Path) -> None:
    html_path, md_path = write_report(run_dir, tmp_path / "reports")
    text = html_path.read_text()
    assert EVIL not in text  # neither in the table nor inside chart JSON
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<script src" not in text and 'src="http' not in text  # nothing fetched from anywhere
    # The answer counts the error cell and links to the list of reasons.
    assert '<a href="#cells-that-did-not-run">1 error</a>' in text
    assert '<table id="cells-that-did-not-run">' in text
    md = md_path.read_text()
    assert md.index("## Answer") < md.index("## All cells")
    assert "### resnet50" in md and "| onnxruntime | fp32 | 1 |" in md
    assert "## Cells that did not run" in md and "torch-compile" in md


def test_summary_markdown_lists_speedups(run_dir: Path) -> None:
    from inferbench.report.page import load_run

    frame, _, env = load_run(run_dir)
    md = summary_markdown(frame, env, "run-1")
    assert md.startswith("# InferBench run `run-1`")
    assert "Test CPU" in md and "speedup_vs_eager_fp32" in md
    # openvino is the fastest at 5 ms (2x eager); the error cell is counted with a link.
    assert "| resnet50 | b1 latency | openvino fp32 |" in md
    assert "[1 error](#cells-that-did-not-run)" not in md  # counts are plain text in Markdown...
    assert '<a id="cells-that-did-not-run"></a>' in md  # ...the rule above the table links here


def test_distribution_charts_carry_quantiles_not_samples(run_dir: Path, tmp_path: Path) -> None:
    records = json.loads(next((run_dir / "cells").glob("resnet50__openvino*b8*.json")).read_text())
    html_path, _ = write_report(run_dir, tmp_path / "reports")
    text = html_path.read_text()
    assert str(records["latencies_ns"][0] / 1e6) not in text  # no raw sample in the page
    assert text.count('"lowerfence"') == 2  # one box trace per model, p1..p99 per cell


def _strings(node: Any) -> Iterator[str]:
    """Every string in a plotly figure's JSON: titles, trace names, text, hover text, labels."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, (list, tuple, np.ndarray)):
        for value in node:
            yield from _strings(value)


def test_chart_text_escapes_names_plotly_would_render_as_html() -> None:
    """Plotly draws <a href>, <b> and <span style> from its text: a model or backend name must
    show as it is written, never as a link or styled text, in every title, legend, label and
    hover text. The charts' own <br> and <extra> are all the markup left."""
    from inferbench.report.charts import figures

    link = '<a href="https://evil.example/">resnet50</a>'
    bold = "<b>fast</b>"
    styled = '<span style="color:red">ov</span>'
    records = [
        _record(model, backend, batch, p50 * batch)
        for model in (link, "mlp")
        for backend, p50 in (("torch", 10.0), (bold, 6.0), (styled, 5.0))
        for batch in (1, 8)
    ]
    named = list(figures(with_speedup(to_frame(records)), records))
    assert {"heatmap", "pareto", "distribution"} <= {name.rsplit("-", 1)[1] for name, _ in named}
    shown = [s for _, fig in named for s in _strings(fig.to_plotly_json())]
    left = {s for s in shown if "<" in s.replace("<br>", "").replace("<extra></extra>", "")}
    assert left == set()
    text = "\n".join(shown)
    for name in (link, bold, styled):
        assert html.escape(name, quote=False) in text
    assert "&quot;" not in text  # an entity plotly does not draw: it would show as written
    # The figure's name (the page escapes it once, in its attribute) stays as the model is named.
    assert f"{link}-pareto" in {name for name, _ in named}


def _chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on this machine (make test installs Debian's chromium when it can)")
    return path


class _Page(RenderedPage):
    """A report opened in headless Chromium (inferbench.tools.report_render); skips the test
    where playwright or chromium is missing."""

    def __init__(self, html_path: Path) -> None:
        pytest.importorskip("playwright.sync_api", reason="playwright not installed")
        super().__init__(html_path, _chromium())


def _draw_every_chart(page: Any) -> None:
    draw_every_chart(page)


def _visible_rows(page: Any) -> Any:
    return page.locator("table#results tbody tr:not([hidden])")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    html_path, _ = write_report(run_dir, tmp_path / "reports")
    with _Page(html_path) as session:
        page = session.page
        charts_drawn = page.get_attribute("body", "data-charts")
        before_scrolling = page.locator(".js-plotly-plot").count()
        _draw_every_chart(page)
        first_section = page.locator("section").first.get_attribute("id")
        first_answer = page.locator("#answer-table tbody tr").first.text_content() or ""
        charts = page.locator(".js-plotly-plot").count()
        labels = page.locator("[data-name$='-pareto'] .textpoint").all_text_contents()
        rows = page.locator("table#results tbody tr").count()
        # Sorting by p50 puts the fastest cell first.
        column = TABLE_COLUMNS.index("latency_p50_ms") + 1
        page.click(f"table#results th:nth-child({column})")
        fastest = float(
            page.locator(f"table#results tbody tr td:nth-child({column})").first.text_content() or "nan"
        )
        # Filters: only the rows of the chosen backend (and status) stay visible.
        page.select_option("#filter-backend", "onnxruntime")
        backends = set(_visible_rows(page).locator("td:nth-child(2)").all_text_contents())
        shown = _visible_rows(page).count()
        page.select_option("#filter-status", "error")
        none_left = _visible_rows(page).count()
        page.select_option("#filter-backend", "")
        errors_only = _visible_rows(page).locator("td:nth-child(2)").all_text_contents()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert session.errors == []  # no console errors, and the <script> model name never ran
    assert charts_drawn == "ready"
    assert before_scrolling < 10  # charts below the fold wait until someone scrolls to them
    assert first_section == "answer"
    assert "openvino fp32" in first_answer  # 5 ms against 6 and 10
    # per model: latency, throughput, heatmap, pareto, distribution (2 models)
    assert charts == 2 * 5
    assert "openvino fp32" in labels and "torch fp32" in labels  # the front's two ends, labelled
    assert rows == 13
    assert fastest == pytest.approx(5.0, rel=0.1)
    assert backends == {"onnxruntime"} and shown == 4
    assert none_left == 0
    assert errors_only == ["torch-compile"]


def _synthetic_run(run: Path, samples: int) -> list[dict[str, Any]]:
    """The default CPU sweep's shape: 4 models x 5 engines x 3 precisions x 3 batches x 2 modes
    = 360 cells, some unsupported, one error, one accuracy-fail, each with raw samples."""
    rng = np.random.default_rng(0)
    records = []
    for m, model in enumerate(("resnet50", "bert-base", "lstm", "minilm")):
        for b, backend in enumerate(("torch", "torchscript", "torch-compile", "onnxruntime", "openvino")):
            for precision in ("fp32", "bf16", "int8"):
                for batch in (1, 8, 32):
                    for mode in ("latency", "throughput"):
                        p50 = (5 + 3 * m) * batch**0.8 / (1 + 0.2 * b) / (1.5 if precision != "fp32" else 1)
                        status = "ok"
                        if precision == "int8" and backend in ("torch", "torchscript"):
                            status = "unsupported"
                        elif (model, backend, precision, batch) == ("minilm", "torch-compile", "int8", 32):
                            status = "error"
                        elif (model, backend, precision, batch) == ("lstm", "openvino", "int8", 8):
                            status = "accuracy-fail"
                        ms = p50 * rng.lognormal(0, 0.05, samples)
                        measured = status in ("ok", "accuracy-fail")
                        cell = Cell(model, backend, precision, batch, 2, mode)
                        records.append(
                            {
                                "model": model,
                                "backend": backend,
                                "precision": precision,
                                "batch_size": batch,
                                "threads": 2,
                                "mode": mode,
                                "status": status,
                                "reason": "" if status == "ok" else f"{status}: synthetic reason",
                                "latencies_ns": [int(x * 1e6) for x in ms] if measured else None,
                                "latency_p50_ms": float(np.median(ms)) if measured else None,
                                "latency_p50_ci_low_ms": float(np.median(ms)) * 0.99 if measured else None,
                                "latency_p50_ci_high_ms": float(np.median(ms)) * 1.01 if measured else None,
                                "latency_p99_ms": float(np.percentile(ms, 99)) if measured else None,
                                "throughput_sps": batch * 1e3 / float(ms.mean()) if measured else None,
                                "rel_l2_err": {"fp32": 1e-7, "bf16": 5e-3, "int8": 3e-2}[precision] * (1 + b),
                                "cosine": 0.999,
                                "engine_precision": precision,
                                "cell_key": cell.key,
                                "schema_version": SCHEMA_VERSION,
                                "run_id": run.name,
                            }
                        )
    for r in records:
        save_cell(run, r)
    write_csv(run, records)
    (run / "env.json").write_text(json.dumps({"cpu": {"model": "Synthetic CPU", "logical_cpus": 2}}))
    return records


@pytest.mark.slow
def test_360_cell_report_stays_small_and_renders(tmp_path: Path) -> None:
    run = tmp_path / "results" / "synthetic-360"
    records = _synthetic_run(run, samples=2000)
    assert len(records) == 360
    html_path, md_path = write_report(run, tmp_path / "reports")
    size = html_path.stat().st_size
    assert size <= 5_000_000, f"{size / 1e6:.2f} MB"
    with _Page(html_path) as session:
        page = session.page
        state = page.get_attribute("body", "data-charts")
        t0 = time.perf_counter()
        _draw_every_chart(page)
        draw_all_s = time.perf_counter() - t0
        first_section = page.locator("section").first.get_attribute("id")
        answer_rows = page.locator("#answer-table tbody tr").count()
        labels = page.locator("[data-name$='-pareto'] .textpoint").count()
        page.select_option("#filter-model", "lstm")
        page.select_option("#filter-mode", "throughput")
        lstm_tput = _visible_rows(page).count()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report-360.json").write_text(
        json.dumps(
            {
                "cells": 360,
                "bytes": size,
                "load_s": session.load_s,
                "plotly_ready_s": session.charts_s,
                "draw_all_s": draw_all_s,
            }
        )
    )
    assert session.errors == []
    assert session.charts_before_scrolling is None  # plotly waits until the charts come near
    assert state == "ready" and first_section == "answer"
    assert answer_rows == 4 * 3 * 2  # model x batch x mode
    assert labels >= 4  # every model's front is labelled
    assert lstm_tput == 45  # 5 engines x 3 precisions x 3 batches
    assert "## Answer" in md_path.read_text()
