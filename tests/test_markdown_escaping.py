"""Markdown tables built from names anyone can write (folders, model files, cells) render those
names as literal text: no HTML, link, image, code span, emphasis or broken row."""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest

from inferbench.markdown import fmt, markdown_table

HOSTILE = [
    "<b>bold</b>",
    '<span style="color:red">red</span>',
    '<img src="x" onerror="alert(1)">',
    "[click](https://evil.example/)",
    "![pixel](https://evil.example/p.png)",
    "`code span`",
    "*star* **strong** _under_ ~~struck~~",
    "a|b",
    "back\\slash\\|pipe",
    "carriage\rreturn",
    "new\nline",
    "&lt;entity&gt; &amp;",
    "rel_l2_err 0.4 > 0.25",
    "4 ms [3.92, 4.08]",
]


def _rendered_cells(table: str) -> list[str]:
    """The text of each body cell as GitHub-flavoured Markdown renders it (markdown-it-py,
    which rich brings, with tables and strikethrough as GFM has them)."""
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py not installed")
    page = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(table)
    body = page.split("<tbody>", 1)[1]
    cells = re.findall(r"<td>(.*?)</td>", body, flags=re.S)
    for cell in cells:
        assert "<" not in cell, f"markup rendered from a name: {cell}"
    return [html.unescape(c) for c in cells]


def test_names_render_as_written() -> None:
    frame = pd.DataFrame({"model": HOSTILE, "value": range(len(HOSTILE))})
    table = markdown_table(frame, ["model", "value"])
    assert len(table.splitlines()) == 2 + len(HOSTILE)  # one line per row, whatever the name
    cells = _rendered_cells(table)
    expected = [name.replace("\r", " ").replace("\n", " ") for name in HOSTILE]
    assert cells[0::2] == expected
    assert cells[1::2] == [str(i) for i in range(len(HOSTILE))]


def test_plain_names_and_numbers_stay_readable_in_the_file() -> None:
    """compare.md and summary.md are read as text too: nothing to escape, nothing escaped."""
    frame = pd.DataFrame(
        {"model": ["tiny-cnn", "rel_l2_err 0.4 > 0.25"], "ratio": ["1.200 [1.178, 1.222]", 12345.6]}
    )
    assert markdown_table(frame, ["model", "ratio"]).splitlines()[2:] == [
        "| tiny-cnn | 1.200 [1.178, 1.222] |",
        "| rel_l2_err 0.4 > 0.25 | 12,346 |",
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(5431.4, "5,431"), (999.4, "999"), (12502.0, "12,502"), (0.0109, "0.0109"), (2.38e-07, "2.38e-07")],
)
def test_a_number_reads_as_a_person_writes_it(value: float, text: str) -> None:
    """Summary tables mix serve peaks of 5,431 and 12,502 requests/s in one column: both grouped."""
    assert fmt(value) == text
    assert fmt(float("nan")) == "" and fmt(None) == ""
