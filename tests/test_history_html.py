"""reports/history.html: content and escaping, then real headless Chromium; and the default
append at the end of `inferbench run`."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

from inferbench.cli import main
from inferbench.config import Cell
from inferbench.history import db
from inferbench.history.fingerprint import Commit
from inferbench.history.store import append_run, load_points
from tests.history_runs import BASE_TIME, EVIL, MLP, env, make_run
from tests.test_report import _chromium

ARTIFACTS = Path(os.environ.get("INFERBENCH_TEST_ARTIFACTS", "test-artifacts"))
EVIL_CELL = Cell(EVIL, "openvino", "fp32", 1, 2)


@pytest.fixture
def history(tmp_path: Path) -> str:
    """Two machines, 20 nights; mlp gets 6% slower from night 12 on the fast machine only."""
    url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    rng = np.random.default_rng(0)
    engine = db.connect(url)
    try:
        for cpu, base in (("Fast CPU", 2.0), ("Slow <b>CPU</b>", 4.0)):
            for night in range(20):
                step = 1.06 if cpu == "Fast CPU" and night >= 12 else 1.0
                noise = 1 + 0.005 * rng.standard_normal(2)
                run = make_run(
                    tmp_path / cpu[:4],
                    f"night-{night:02d}",
                    {MLP: base * step * noise[0], EVIL_CELL: 3.0 * noise[1]},
                    environment=env(cpu=cpu, when=BASE_TIME + dt.timedelta(days=night)),
                )
                append_run(engine, run, commit=Commit(f"{night:040x}", night % 5 == 0))
    finally:
        engine.dispose()
    return url


def test_history_page_content_and_escaping(history: str, tmp_path: Path) -> None:
    out = tmp_path / "history.html"
    assert main(["history", "--history", history, "--out", str(out)]) == 0
    text = out.read_text()
    assert EVIL not in text and "<b>CPU</b>" not in text  # table and chart JSON both escaped
    assert "&lt;script&gt;" in text
    assert 'src="http' not in text  # plotly inlined: the page opens offline
    assert text.count("REGRESSION") == 0  # the step is 8 nights old: charted, not "new"
    assert "change-points" in text and "+6." in text


@pytest.mark.slow
def test_history_page_in_headless_chromium(history: str, tmp_path: Path) -> None:
    executable = _chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    out = tmp_path / "history.html"
    assert main(["history", "--history", history, "--out", str(out), "--no-html"]) == 0
    assert not out.exists()
    assert main(["history", "--history", history, "--out", str(out)]) == 0
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: errors.append(f"dialog opened: {d.message}"))
        page.goto(out.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        charts = page.locator(".js-plotly-plot").count()
        rows = page.locator("table#series tbody tr").count()
        machines = page.locator("table#machines tbody tr").count()
        # One data line per machine per chart (plus its change-point and segment traces).
        legend = page.locator("#cell-0 .legendtext").all_text_contents()
        page.click("table#series th:nth-child(3)")  # sort by points: still every row
        sorted_rows = page.locator("table#series tbody tr").count()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "history.png"), full_page=True)
        browser.close()
    assert errors == []  # no console errors, and the <script> model name never ran
    assert charts == 2 and rows == 4 and sorted_rows == 4 and machines == 2
    data_lines = [t for t in legend if "segment" not in t and "change-points" not in t]
    assert len(data_lines) == 2 and any("Fast CPU" in t for t in data_lines)
    assert any("change-points" in t for t in legend)


@pytest.mark.slow
def test_run_appends_to_the_history_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERBENCH_HISTORY", raising=False)
    results = tmp_path / "results"
    common = ["run", "--profile", "smoke", "-m", "tests.fakes:numpy_model", "-b", "tests.fakes:FakeBackend"]
    common += [
        "--batch-size",
        "1",
        "--mode",
        "latency",
        "--results-dir",
        str(results),
        "--no-report",
        "--no-progress",
    ]
    assert main([*common, "--run-id", "a", "--no-history"]) == 0
    assert not (results / "history.sqlite").exists()
    assert main([*common, "--run-id", "b"]) == 0
    engine = db.connect(str(results / "history.sqlite"))
    try:
        points = load_points(engine)
    finally:
        engine.dispose()
    assert list(points["run_id"]) == ["b"] and points["status"].iloc[0] == "ok"
    assert points["profile"].iloc[0] == "smoke"
    assert points["git_commit"].iloc[0] is None or len(points["git_commit"].iloc[0]) == 40
