"""compare.html: the page builder on synthetic runs (escaping, verdict classes, filter markup,
environments, thinned distributions), the commands that write it, and real headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.cli import main
from inferbench.compare.core import CompareOptions
from inferbench.compare.env import RunView, environment_rows
from inferbench.compare.html import inline_markdown, render_compare_html, verdict_class
from inferbench.compare.runs import compare_dirs, compare_runs
from inferbench.config import Cell
from tests.test_compare import _record, _samples, _write_run
from tests.test_report import ARTIFACTS, _draw_every_chart, _Page

EVIL = "<script>alert('x')</script>"
EVIL_RUN = "base <img src=x onerror=alert(2)>"  # a folder name: no slash
FAST = CompareOptions(n_resamples=500)


def _cell(model: str, samples: np.ndarray, **extra: Any) -> dict[str, Any]:
    record = _record(model, samples, **extra)
    record["cell_key"] = Cell(model, record["backend"], "fp32", record["batch_size"], 1).key
    return record


def _env(cpu: str = "Test CPU", host: str = "box-1", ort: str = "1.32.0") -> dict[str, Any]:
    return {
        "hostname": host,
        "cpu": {"model": cpu, "logical_cpus": 2, "isa": {"avx2": True, "avx512f": cpu == "Test CPU"}},
        "memory_gb": 23.5,
        "packages": {"onnxruntime": ort, "torch": "2.13.0"},
        "threads": {"inter_op": 1, "env": {"OMP_NUM_THREADS": None}},
    }


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    """Five cells: unchanged, 20% slower, disturbed in NEW (an evil name), broken in NEW, and
    one cell only in NEW."""
    rng = np.random.default_rng(7)
    quiet = {"cv": 0.005}
    base = [
        _cell("steady", _samples(rng, **quiet)),
        _cell("slower", _samples(rng, **quiet)),
        _cell(EVIL, _samples(rng, **quiet)),
        _cell("breaks", _samples(rng, **quiet)),
    ]
    new = [
        _cell("steady", _samples(rng, **quiet)),
        _cell("slower", _samples(rng, **quiet) * 1.2),
        {**_cell(EVIL, _samples(rng, **quiet)), "interfered": True},
        {**_cell("breaks", _samples(rng, **quiet), status="error"), "reason": f"crashed: {EVIL}"},
        _cell("added", _samples(rng, **quiet)),
    ]
    base_dir = _write_run(tmp_path / EVIL_RUN, base)
    new_dir = _write_run(tmp_path / "new", new)
    (base_dir / "env.json").write_text(json.dumps(_env()))
    (new_dir / "env.json").write_text(json.dumps(_env(host="box-2")))
    return base_dir, new_dir


def _rows(text: str) -> dict[str, str]:
    """Each cell row's opening tag, by model (as escaped in the page)."""
    body = text[text.index('<table class="sortable" id="cells">') :]
    body = body[: body.index("</table>")]
    found = {}
    for row in re.findall(r"<tr class=\"v-[^>]*>.*?</tr>", body):
        model = re.search(r'<td class="key">(.*?)</td>', row)
        assert model is not None
        found[model.group(1)] = row[: row.index(">") + 1]
    return found


def test_page_escapes_and_colours_by_verdict(runs: tuple[Path, Path]) -> None:
    c = compare_dirs(*runs, FAST)
    text = render_compare_html(c.frame, c.unmatched, FAST, c.base, c.new, c.notes)
    assert EVIL not in text and "<img" not in text  # model, reason and run name escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "base &lt;img src=x onerror=alert(2)&gt;" in text
    assert 'src="http' not in text and "<script src" not in text  # offline
    rows = _rows(text)
    assert set(rows) == {"steady", "slower", html_evil(), "breaks"}
    assert 'class="v-no-change"' in rows["steady"] and 'data-regression="0"' in rows["steady"]
    assert 'class="v-regression"' in rows["slower"] and 'data-regression="1"' in rows["slower"]
    assert 'class="v-inconclusive"' in rows[html_evil()] and 'data-inconclusive="1"' in rows[html_evil()]
    assert 'class="v-broken"' in rows["breaks"] and 'data-regression="1"' in rows["breaks"]
    assert "broken (error)" in text and "interfered (new)" in text
    # The filter, and the headline and caveat carried over from compare.md.
    assert '<select id="verdict-filter">' in text
    for value in ("all", "regression", "inconclusive"):
        assert f'<option value="{value}">' in text
    assert "<b>FAIL</b>: 1 cell(s) regressed, 1 cell(s) broken or missing" in text
    assert "<b>One process per side.</b>" in text
    assert '<table id="unmatched-table">' in text and "added" in text


def html_evil() -> str:
    return "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"


def test_distributions_are_quantiles_not_samples(runs: tuple[Path, Path]) -> None:
    c = compare_dirs(*runs, FAST)
    text = render_compare_html(c.frame, c.unmatched, FAST, c.base, c.new, c.notes)
    # A chart per cell measured on both sides (not the broken one), linked from its row.
    assert text.count('class="chart-spec"') == 3
    assert text.count('<a href="#chart-') == 3
    sample = c.base.records[0]["latencies_ns"][3] / 1e6
    assert repr(sample) not in text  # no raw sample travels in the page
    assert "plotly-gz" in text


def test_environments_side_by_side_highlight_what_the_check_counts(tmp_path: Path) -> None:
    base = RunView("a", _env(), {"measure": {"min_seconds": 1.0}})
    new = RunView("b", _env(cpu="Other CPU", host="box-2", ort="1.31.0"), {"measure": {"min_seconds": 2.0}})
    rows = {label: (b, n, klass) for label, b, n, klass in environment_rows(base, new)}
    assert rows["CPU model"] == ("Test CPU", "Other CPU", "mismatch")
    assert rows["ISA flags"][2] == "mismatch"  # avx512f on one side only
    assert rows["onnxruntime"][2] == "mismatch" and rows["measure.min_seconds"][2] == "mismatch"
    assert rows["host"] == ("box-1", "box-2", "differs")  # shown, not a refusal
    assert rows["torch"] == ("2.13.0", "2.13.0", "") and rows["run"][2] == ""
    assert "OMP_NUM_THREADS" not in rows  # recorded as unset on both sides: no row
    empty = render_compare_html(*_empty_frames(), FAST, base, new)
    assert "No cells in common." in empty and "<mark>avx512f</mark>" in empty
    assert "plotly-gz" not in empty  # nothing to draw, no plotly


def _empty_frames() -> tuple[Any, Any]:
    import pandas as pd

    return pd.DataFrame(), pd.DataFrame()


def test_verdict_classes_and_inline_markdown() -> None:
    assert verdict_class("no change") == "v-no-change"
    assert verdict_class("regression") == "v-regression"
    assert verdict_class("broken (error)") == "v-status"
    assert inline_markdown("**FAIL** in `<b>`") == "<b>FAIL</b> in <code>&lt;b&gt;</code>"


def test_compare_and_report_write_the_page(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, new = runs
    assert main(["compare", str(base), str(new)]) == 1
    assert (new / "compare.html").is_file() and (new / "compare.md").is_file()
    err = capsys.readouterr().err
    assert "page:" in err and "compare.html" in err
    # report --compare-with: base = the other run; shown even across machines, exit 0.
    (base / "env.json").write_text(json.dumps(_env(cpu="Other CPU")))
    assert main(["compare", str(base), str(new)]) == 2
    reports = tmp_path / "reports"
    assert main(["report", str(new), "--reports-dir", str(reports), "--compare-with", str(base)]) == 0
    page = reports / "new-vs-base__img_src_x_onerror_alert_2__.html"  # a file name from free text
    err = capsys.readouterr().err
    assert "FAIL" in err and "comparison:" in err
    text = page.read_text()
    assert "Compared despite a mismatch" in text and '<tr class="mismatch"><th class="s">CPU model' in text
    assert (reports / "new.html").is_file()  # the run's own report as before
    assert main(["report", str(new), "--compare-with", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_compare_page_in_headless_chromium(runs: tuple[Path, Path]) -> None:
    base, new = runs
    compare_runs(base, new, FAST)
    with _Page(new / "compare.html") as session:
        page = session.page
        _draw_every_chart(page)
        charts = page.locator(".js-plotly-plot").count()
        legends = page.locator("#chart-0 .legendtext").all_text_contents()
        rows = page.locator("table#cells tbody tr:not([hidden])")
        everything = rows.count()
        evil_shown = page.locator("table#cells td", has_text=EVIL).count()
        injected = page.evaluate("[...document.scripts].some(s => s.textContent.includes(\"alert('x')\"))")
        page.select_option("#verdict-filter", "regression")
        regressions = rows.locator("td:nth-child(1)").all_text_contents()
        hidden_charts = page.locator("div.chart[hidden]").count()
        shown = page.text_content("#shown")
        page.select_option("#verdict-filter", "inconclusive")
        inconclusive = rows.locator("td:nth-child(1)").all_text_contents()
        page.select_option("#verdict-filter", "all")
        page.click("table#cells thead tr:last-child th:nth-child(10)")  # p50 ratio, ascending
        by_ratio = rows.locator("td:nth-child(1)").all_text_contents()
        page.locator("#headline").scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    assert session.errors == []  # no console errors, no alert from the model name
    assert charts == 3 and any(t.startswith(f"base: {EVIL_RUN}") for t in legends)
    assert everything == 4 and evil_shown == 2 and not injected  # as text: a model, a reason
    assert sorted(regressions) == ["breaks", "slower"] and shown == "2"
    assert hidden_charts == 2  # the steady and the evil cell's charts hide with their rows
    assert inconclusive == [EVIL]
    # Ratios ascending, blanks (no estimate) last: steady ~1.0, slower ~1.2, then the others.
    assert by_ratio[:2] == ["steady", "slower"]
