"""Plain-text formatting shared by the summary, the comparison and the terminal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def fmt(value: Any, digits: int = 3) -> str:
    """A number as a person reads it: 3 significant digits, thousands grouped, blank for NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    def cell(value: Any) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame[columns].itertuples(index=False)
    ]
    return "\n".join(lines)
