"""What a comparison prints and writes: compare.md, compare.csv and the terminal table,
shared by `inferbench compare` and `inferbench ab`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from inferbench.compare.core import SERVE_MODE
from inferbench.compare.format import formatted, headline, legend
from inferbench.compare.html import render_compare_html
from inferbench.config import axes_shown
from inferbench.markdown import fmt, markdown_table
from inferbench.util import atomic_write_text

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

    from inferbench.compare.core import CompareOptions
    from inferbench.compare.env import RunView

VERDICT_COLUMNS = ["metric", "verdict", "ratio (CI)", "MDE", "q_value", "note"]


def compare_markdown(
    frame: pd.DataFrame,
    unmatched: pd.DataFrame,
    options: CompareOptions,
    base_name: str,
    new_name: str,
    notes: list[str] | None = None,
) -> str:
    parts = [
        f"## InferBench comparison: `{base_name}` → `{new_name}`",
        "",
        headline(frame),
        "",
        legend(options, frame),
    ]
    for note in notes or []:
        parts += ["", note]
    if frame.empty:
        parts += ["", "No cells in common."]
    else:
        shown = formatted(frame)
        columns = [*axes_shown(shown.get("shape", ())), *VERDICT_COLUMNS]
        sections = [
            ("Regressions", shown["regression"] & ~shown["broken"]),
            ("Broken or missing cells", shown["broken"]),
            ("Inconclusive", shown["inconclusive"]),
        ]
        for title, mask in sections:
            if mask.any():
                parts += ["", f"### {title}", "", markdown_table(shown[mask], columns)]
        parts += ["", "### All compared cells", "", markdown_table(shown, columns)]
    if not unmatched.empty:
        keys = axes_shown(unmatched.get("shape", ()))
        parts += ["", "### Unmatched cells", "", markdown_table(unmatched, [*keys, "only_in"])]
    return "\n".join(parts) + "\n"


def write_outputs(
    frame: pd.DataFrame,
    unmatched: pd.DataFrame,
    options: CompareOptions,
    out_dir: Path,
    base_name: str,
    new_name: str,
    notes: list[str] | None = None,
    views: tuple[RunView, RunView] | None = None,
) -> Path:
    """compare.csv and compare.md into out_dir, and compare.html when both runs are given as
    read (`views`); returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "compare.csv", frame.to_csv(index=False, float_format="%.6g"))
    md = out_dir / "compare.md"
    atomic_write_text(md, compare_markdown(frame, unmatched, options, base_name, new_name, notes))
    if views is not None:
        page = render_compare_html(frame, unmatched, options, *views, notes or ())
        atomic_write_text(out_dir / "compare.html", page)
    return md


STYLE = {"regression": "bold red", "improvement": "green", "inconclusive": "yellow"}
TABLE_COLUMNS = ("cell", "metric", "verdict", "ratio [CI]", "MDE", "note")


def terminal_table(frame: pd.DataFrame, title: str) -> VerdictTable:
    """The verdict table for a rich console (a terminal's table, or a CI log's plain lines)."""
    return VerdictTable(frame, title)


class VerdictTable:
    """On a terminal, a rich table; anywhere else (a CI log, a pipe) plain fixed-width lines.
    Off a terminal rich fits a table to 80 columns and cuts the verdict to `i…` and the ratio to
    `0.901 [0…`: the plain lines are as wide as their longest cell and never cut one. Print it
    with a console that does not crop (`soft_wrap=True`, as the CLI's is)."""

    def __init__(self, frame: pd.DataFrame, title: str) -> None:
        self.frame, self.title = frame, title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        if console.is_terminal:
            yield self.rich_table()
            return
        for line in plain_table(self.frame, self.title).splitlines():
            yield Segment(line + "\n")

    def rich_table(self) -> Table:
        from rich.table import Table

        table = Table(title=self.title)
        for col in TABLE_COLUMNS:
            table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=40 if col == "note" else None)
        for cells, style in _table_rows(self.frame):
            table.add_row(*cells, style=style)
        return table


def plain_table(frame: pd.DataFrame, title: str) -> str:
    """The verdict table as fixed-width text: every column as wide as its widest cell, the note
    last and unpadded; nothing is cut."""
    rows = [list(TABLE_COLUMNS), *(cells for cells, _ in _table_rows(frame))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS) - 1)]
    lines = [title]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def _table_rows(frame: pd.DataFrame) -> list[tuple[list[str], str | None]]:
    """Each verdict row's cells (TABLE_COLUMNS) and its rich style."""
    if frame.empty:
        return []
    rows = []
    for row in formatted(frame).to_dict("records"):
        cell = f"{row['model']} {row['backend']} {row['precision']} b{row['batch_size']} t{row['threads']}"
        if row.get("mode") == "throughput":
            cell += " thr"
        elif row.get("mode") == SERVE_MODE:
            cell += " serve"
        if row.get("shape"):
            cell += f" {row['shape']}"
        style = "bold red" if row["broken"] else STYLE.get(str(row["verdict"]))
        if not row["gating"] and row["metric"] != "status":
            style = "dim"
        cells = [
            cell,
            str(row["metric"]),
            str(row["verdict"]),
            row["ratio (CI)"],
            row["MDE"],
            fmt(row["note"]),
        ]
        rows.append((cells, style))
    return rows


def failing_cells(frame: pd.DataFrame) -> list[str]:
    """Cells that fail the comparison, one name each."""
    if frame.empty:
        return []
    failed = frame[frame["regression"]]
    return sorted(
        {f"{r.model}/{r.backend}/{r.precision}/b{r.batch_size}/{r.mode}" for r in failed.itertuples()}
    )
