"""The plain functions behind `inferbench history`, `history import` and `export`, and the
one call the runner makes after a sweep (`record_run`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inferbench.errors import InternalError, UserError, first_line
from inferbench.history.changepoints import CHECK_PENALTY_FACTOR, METRICS, Metric
from inferbench.history.db import connect, normalize_url, safe_url
from inferbench.history.fingerprint import project_commit
from inferbench.history.newest import broken_cells, missing_from_run
from inferbench.history.series import Series, build_series
from inferbench.history.store import Filters, append_run, import_runs, load_points

log = logging.getLogger(__name__)
console = Console(stderr=True)

ENV_VAR = "INFERBENCH_HISTORY"
DEFAULT_FILE = "history.sqlite"
SHOW_POINTS = 3  # a selection of at most this many series prints every point


def resolve_url(given: str | None, results_dir: Path = Path("results")) -> str:
    """`--history` if given, else $INFERBENCH_HISTORY, else <results-dir>/history.sqlite."""
    return given or os.environ.get(ENV_VAR) or str(results_dir / DEFAULT_FILE)


def record_run(run_dir: Path, url: str) -> int | None:
    """Append a finished sweep to the history; a failure costs one warning, never the run.
    Where a gate depends on the history (the nightly), `history append` fails instead."""
    try:
        added = _append(url, run_dir)
    except Exception as exc:  # the run's results are on disk already; history is a copy
        log.warning("history not recorded in %s: %s", safe_url(url), first_line(exc))
        return None
    console.print(f"history: {added} cell(s) appended to {safe_url(url)}")
    return added


def append_command(url: str, run_dirs: list[Path]) -> int:
    """`history append`: what `run` does after a sweep, failing closed: a run folder that is
    not one is exit 2, a database that refuses the rows exit 4, never a warning."""
    for run_dir in run_dirs:
        if not (run_dir / "cells").is_dir():
            raise UserError(f"{run_dir} is not a run folder (a run folder has cells/ inside)")
    for run_dir in run_dirs:
        try:
            added = _append(url, run_dir)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise InternalError(f"history not recorded in {safe_url(url)}: {first_line(exc)}") from exc
        console.print(f"history: {added} cell(s) of {run_dir} appended to {safe_url(url)}")
    return 0


def _append(url: str, run_dir: Path) -> int:
    engine = connect(url)
    try:
        return append_run(engine, run_dir, commit=project_commit())
    finally:
        engine.dispose()


def _require_existing(url: str) -> None:
    target = normalize_url(url)
    if target.startswith("sqlite:///") and target != "sqlite:///:memory:":
        path = Path(target.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserError(
                f"no history at {path}: run a sweep first, or `inferbench history import results/*`"
            )


def history_command(
    url: str,
    filters: Filters | None = None,
    *,
    metric: str = "p50",
    html_path: Path | None = Path("reports/history.html"),
    check: bool = False,
    min_change: float = 0.01,
    penalty: float = CHECK_PENALTY_FACTOR,
    expect_run: str | None = None,
) -> int:
    """Print the series, write the HTML page; with `check`, exit 1 when the newest point of
    some series starts a step for the worse, or a cell that was ok is not (broken, or missing
    from `expect_run`), else 0. `expect_run` (tonight's run id) must hold the newest points:
    when it is not recorded, the check is a UserError rather than a verdict on older points."""
    if expect_run is not None and not check:
        raise UserError("--expect-run needs --check")
    if metric not in METRICS:
        raise UserError(f"--metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if min_change < 0:
        raise UserError(f"--min-change must be >= 0; got {min_change}")
    if penalty <= 0:
        raise UserError(f"--penalty must be > 0; got {penalty}")
    _require_existing(url)
    engine = connect(url)
    try:
        points = load_points(engine, filters or Filters())
    finally:
        engine.dispose()
    if points.empty:
        raise UserError(f"no recorded cells in {safe_url(url)} match the filters")
    missing = missing_from_run(points, expect_run, safe_url(url)) if expect_run is not None else []
    chosen = METRICS[metric]
    series = build_series(points, chosen, min_change=min_change, check_penalty=penalty)
    _print_series(series, chosen)
    if html_path is not None:
        from inferbench.history.html import render_history
        from inferbench.util import atomic_write_text

        note = f"{len(series)} series from {safe_url(url)}."
        atomic_write_text(html_path, render_history(series, chosen, _machines(points), note))
        console.print(f"history page: {html_path}")
    return _verdict(series, chosen, broken_cells(points) + missing) if check else 0


def _verdict(series: list[Series], metric: Metric, broken: list[str]) -> int:
    """--check's lines and exit code: 1 for a new step for the worse or a broken cell."""
    for line in broken:
        console.print(f"[bold red]BROKEN[/] {escape(line)}")
    flagged = [(s, s.regression) for s in series if s.regression is not None]
    for s, step in flagged:
        newest = escape(str(s.points.iloc[-1]["run_id"]))
        console.print(
            f"[bold red]REGRESSION[/] {escape(s.title)} on {s.fingerprint}: {metric.label} "
            f"{step.change:+.1%}, a step starting at point {step.index + 1} of {len(s.points)} "
            f"(newest run {newest})"
        )
    if not flagged and not broken:
        console.print(f"history check: no new step for the worse in {len(series)} series ({metric.name})")
    return 1 if flagged or broken else 0


def _machines(points: pd.DataFrame) -> pd.DataFrame:
    grouped = points.groupby("fingerprint", sort=False).agg(
        label=("machine", "first"), runs=("run_id", "nunique")
    )
    return grouped.reset_index()


def _print_series(series: list[Series], metric: Metric) -> None:
    table = Table(title=f"history: {metric.label}")
    for col in ("cell", "machine", "n", "latest", "vs first", "steps@point", "check"):
        # Numbers never wrap or shrink to an ellipsis; the cell name and the steps may wrap.
        table.add_column(col, no_wrap=col not in ("cell", "steps@point"), min_width=len(col))
    for s in series:
        values = s.points[metric.column].astype(float)
        table.add_row(
            s.title,
            s.fingerprint,
            str(len(values)),
            f"{values.iloc[-1]:.4g}",
            f"{values.iloc[-1] / values.iloc[0] - 1:+.1%}",
            ", ".join(f"{st.change:+.1%}@{st.index + 1}" for st in s.steps),
            "REGRESSION" if s.regression else "",
            style="bold red" if s.regression else None,
        )
    console.print(table)
    if len(series) > SHOW_POINTS:
        console.print(
            f"{len(series)} series; narrow the filters to {SHOW_POINTS} or fewer to list every point"
        )
        return
    for s in series:
        points = Table(title=f"{s.title} on {s.fingerprint} ({s.machine})")
        for col in ("#", "run time (UTC)", "run", "commit", metric.label, "95% interval", ""):
            points.add_column(col, no_wrap=True)
        starts = {st.index: st for st in s.steps}
        for i, row in s.points.iterrows():
            interval = ""
            if metric.ci_low and pd.notna(row[metric.ci_low]):
                interval = f"[{row[metric.ci_low]:.4g}, {row[metric.ci_high]:.4g}]"
            sha = row["git_commit"] if isinstance(row["git_commit"], str) else ""
            mark = starts.get(int(i))
            points.add_row(
                str(int(i) + 1),
                f"{row['run_time']:%Y-%m-%d %H:%M}",
                str(row["run_id"]),
                sha[:10] + ("*" if sha and row["git_dirty"] else ""),
                f"{row[metric.column]:.4g}",
                interval,
                f"step {mark.change:+.1%}" if mark else "",
            )
        console.print(points)


def import_command(url: str, paths: list[Path]) -> int:
    engine = connect(url)
    try:
        done = import_runs(engine, paths)
    finally:
        engine.dispose()
    for path, added in done:
        if added is None:
            console.print(f"skipped {path}: not a run folder")
        else:
            console.print(f"{path}: {added} cell(s) added" + ("" if added else " (already recorded)"))
    return 0
