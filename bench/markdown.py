"""Plain-text formatting shared by the summary, the comparison and the terminal."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd


def fmt(value: Any, digits: int = 3) -> str:
    """A number as a person reads it: `digits` significant digits, whole numbers from there up
    with thousands grouped (5,431, never 5.43e+03), blank for NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


#: Line breaks and other control characters: any of them would end the table row.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
#: Characters that open Markdown markup anywhere in a line (code spans, emphasis,
#: strikethrough, a table cell's end, the escape itself): backslash-escaped.
_MARKUP = re.compile(r"[\\`*~|]")
#: `_` opens emphasis only at a word's edge (CommonMark): `rel_l2_err` stays as it is.
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def markdown_text(value: Any) -> str:
    """A value as literal text in one Markdown table cell. Names come from folders, files and
    cells that anyone can write; in a PR comment raw HTML, a link or a code span from one of
    them would render as the project's own words. Brackets stay (the ratio's `[lo, hi]`), but
    `](` never opens a link or an image."""
    text = _CONTROL.sub(" ", fmt(value))
    text = _MARKUP.sub(lambda m: "\\" + m.group(0), text)
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("](", "]\\(")


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(markdown_text(v) for v in row) + " |"
        for row in frame[columns].itertuples(index=False)
    ]
    return "\n".join(lines)
