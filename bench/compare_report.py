"""What a comparison prints and writes: compare.md, compare.csv and the terminal table,
shared by `inferbench compare` and `inferbench ab`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from inferbench.config import CELL_AXES, axes_shown
from inferbench.markdown import fmt, markdown_table
from inferbench.util import atomic_write_text

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

    from inferbench.compare import CompareOptions
    from inferbench.compare_env import RunView

KEY = list(CELL_AXES)
VERDICT_COLUMNS = ["metric", "verdict", "ratio (CI)", "MDE", "q_value", "note"]


def nothing_timed(frame: pd.DataFrame) -> bool:
    """No result at all: no cell timed on both sides and none fixed, e.g. every engine
    missing on this runner ("still unavailable"), or no cell in common."""
    if frame.empty:
        return True
    timed = frame["gating"] & (frame["metric"] != "status")
    return not (timed | (frame["new_status"] == "ok")).any()


def headline(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "**UNDECIDED**: nothing was compared (no cell on both sides)"

    def cells(mask: pd.Series) -> int:
        return len(frame[mask].drop_duplicates(subset=KEY))

    regressions = cells(frame["regression"] & ~frame["broken"])
    broken = cells(frame["broken"])
    undecided = cells(frame["inconclusive"])
    if regressions or broken:
        what = [f"{regressions} cell(s) regressed"] if regressions else []
        what += [f"{broken} cell(s) broken or missing"] if broken else []
        return "**FAIL**: " + ", ".join(what)
    if undecided:
        return f"**UNDECIDED**: no regression found, but {undecided} cell(s) are inconclusive"
    if nothing_timed(frame):
        return "**UNDECIDED**: no cell was timed on both sides, and none was fixed"
    # Faster cells are reported, never in the way of a pass.
    faster = cells(frame["gating"] & (frame["verdict"] == "improvement"))
    return "**PASS**: no regression" + (f" ({faster} cell(s) faster)" if faster else "")


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    for column in ("ratio", "ci_low", "ci_high", "mde_pct", "q_value", "note", "verdict"):
        if column not in shown:
            shown[column] = np.nan if column not in ("note", "verdict") else ""
    covers = shown["interval"] if "interval" in shown else [""] * len(shown)
    shown["ratio (CI)"] = [
        (f"{r:.3f} [{lo:.3f}, {hi:.3f}]" + (f" {what}" if what == WITHIN_PROCESS else ""))
        if pd.notna(r)
        else ""
        for r, lo, hi, what in zip(shown["ratio"], shown["ci_low"], shown["ci_high"], covers, strict=True)
    ]
    shown["MDE"] = [f"{m:.1f}%" if pd.notna(m) else "" for m in shown["mde_pct"]]
    shown["note"] = shown["note"].fillna("")
    shown["metric"] = [
        m if g or m == "status" else f"{m} (advisory)"
        for m, g in zip(shown["metric"], shown["gating"], strict=True)
    ]
    return shown


#: What an interval covers (`compare.csv` column `interval`): the noise inside one process per
#: side only, or also the spread from process to process (fresh processes, or `ab`'s rounds).
WITHIN_PROCESS = "within-process"
BETWEEN_PROCESSES = "between-process"
INTERVAL_COVERS = {"iteration": WITHIN_PROCESS, "process": BETWEEN_PROCESSES, "round": BETWEEN_PROCESSES}

GATE_WORDS = {"p50": "p50", "min": "each process's fastest call (min)"}


def legend(options: CompareOptions) -> str:
    """What the verdicts mean under these options (Markdown; the HTML page shows it too)."""
    thresholds = f"{options.max_regression:.0%}" + "".join(
        f", {m} {t:.0%}" for m, t in options.thresholds.items()
    )
    return (
        f"Threshold {thresholds}; {GATE_WORDS[options.gate_on]} gates, and throughput in throughput-mode "
        "cells; the other metrics (a latency-mode cell's throughput is 1/mean of the same calls) are "
        "advisory. The question is one-sided: is NEW worse than BASE by more than the threshold? "
        "**regression** (fails): worse than the threshold, significant at alpha="
        f"{options.alpha} over all gating tests (Holm; `ab`: at each cell's sequential boundary); "
        f"**no change** (passes): the {options.confidence:.0%} interval's worse end lies within the "
        "threshold (the cell may be faster); **improvement** (passes): better than the threshold, "
        "significant; **inconclusive**: neither (too noisy to decide, or disturbed; for a status row, "
        "a side that failed in some rounds only). Ratios are NEW/BASE; an interval marked "
        f"{WITHIN_PROCESS} covers the noise inside one process per side only; "
        "**MDE**: the slowdown this cell would catch 80% of the time at its measured noise."
    )


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
        legend(options),
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
        from inferbench.compare_html import render_compare_html

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
