"""HTML report and Markdown summary: content, escaping, and a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.config import Cell
from inferbench.report import TABLE_COLUMNS, pareto_front, summary_markdown, with_speedup, write_report
from inferbench.storage import SCHEMA_VERSION, save_cell, to_frame, write_csv

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
    assert "cdn" not in text.lower().split("<script>", 1)[0]  # no external script in <head>
    assert 'src="http' not in text
    md = md_path.read_text()
    assert "## resnet50" in md and "| onnxruntime | fp32 | 1 |" in md
    assert "## Cells that did not run" in md and "torch-compile" in md


def test_summary_markdown_lists_speedups(run_dir: Path) -> None:
    from inferbench.report import load_run

    frame, _, env = load_run(run_dir)
    md = summary_markdown(frame, env, "run-1")
    assert md.startswith("# InferBench run `run-1`")
    assert "Test CPU" in md and "speedup_vs_eager_fp32" in md


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on this machine (make test installs Debian's chromium when it can)")


def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    executable = _chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    html_path, _ = write_report(run_dir, tmp_path / "reports")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: errors.append(f"dialog opened: {d.message}"))
        page.goto(html_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        charts = page.locator(".js-plotly-plot").count()
        rows = page.locator("table#results tbody tr").count()
        # Sorting by p50 puts the fastest cell first.
        column = TABLE_COLUMNS.index("latency_p50_ms") + 1
        page.click(f"table#results th:nth-child({column})")
        first_cell = page.locator(f"table#results tbody tr td:nth-child({column})").first
        first = float(first_cell.text_content() or "nan")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []  # no console errors, and the <script> model name never ran
    # per model: latency, throughput, heatmap, pareto (2 models) + one distribution chart
    assert charts == 2 * 4 + 1
    assert rows == 13
    assert first == pytest.approx(5.0, rel=0.1)
