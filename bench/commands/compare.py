"""`inferbench compare`: two run folders, cell by cell, and the verdict as an exit code;
`print_verdict` is the terminal's view of a comparison, shared with `ab`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inferbench.argtypes import finite_float, fraction, threshold_pairs
from inferbench.commands.base import Command, Subparsers, console


class Compare(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers,
            "compare",
            help="compare two runs; exit 0 = no regression, 1 = regression, 2 = usage, 3 = undecided, "
            "4 = internal error",
        )
        parser.add_argument("base", type=Path, help="baseline run directory (or its results.csv)")
        parser.add_argument("new", type=Path, help="new run directory (or its results.csv)")
        parser.add_argument("--max-regression", default="5%", help="allowed slowdown, e.g. 5%% or 0.05")
        parser.add_argument(
            "--threshold",
            action="append",
            default=[],
            metavar="METRIC=PCT",
            help="per-metric override, e.g. p99=10%% (metrics: p50, p99, throughput)",
        )
        parser.add_argument("--alpha", type=finite_float, default=0.05, help="family-wise error rate (Holm)")
        parser.add_argument("--out", type=Path, help="where compare.md/.csv/.html go (default: NEW)")
        parser.add_argument(
            "--allow-mismatch",
            action="store_true",
            help="compare runs from different CPUs, engine versions, thread or measurement settings",
        )

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        thresholds = {metric: fraction(text) for metric, text in threshold_pairs(args.threshold)}
        return compare_command(
            args.base,
            args.new,
            max_regression=fraction(args.max_regression),
            thresholds=thresholds,
            alpha=args.alpha,
            out_dir=args.out,
            allow_mismatch=args.allow_mismatch,
        )


def compare_command(
    base: Path,
    new: Path,
    *,
    max_regression: float = 0.05,
    thresholds: dict[str, float] | None = None,
    alpha: float = 0.05,
    out_dir: Path | None = None,
    allow_mismatch: bool = False,
) -> int:
    """Exit code 0 = no regression, 1 = regression or broken cell, 3 = could not decide
    (usage errors and refused mismatches raise UserError -> 2)."""
    from inferbench.compare.core import CompareOptions
    from inferbench.compare.runs import compare_runs

    options = CompareOptions(max_regression=max_regression, thresholds=thresholds or {}, alpha=alpha)
    frame, unmatched, md_path = compare_runs(base, new, options, out_dir, allow_mismatch=allow_mismatch)
    return print_verdict(frame, unmatched, md_path, f"{base.name} -> {new.name} (ratio NEW/BASE, 95% CI)")


def print_verdict(frame: Any, unmatched: Any, md_path: Path, title: str) -> int:
    """The comparison's table and verdict on the terminal; returns the exit code."""
    from inferbench.compare.core import exit_code
    from inferbench.compare.report import failing_cells, terminal_table

    console.print(terminal_table(frame, title))
    for item in unmatched.to_dict("records"):
        console.print(
            f"unmatched (only in {item['only_in']}): {item['model']} {item['backend']} "
            f"{item['precision']} b{item['batch_size']} t{item['threads']}"
        )
    code = exit_code(frame)
    if code == 1:
        names = failing_cells(frame)
        console.print(f"[bold red]REGRESSION[/] in {len(names)} cell(s): {', '.join(names)}")
    elif frame.empty:
        console.print("[yellow]UNDECIDED[/]: nothing was compared (no cell on both sides)")
    elif code == 3:
        undecided = frame[frame["inconclusive"]]
        names = sorted(
            {f"{r.model}/{r.backend}/{r.precision}/b{r.batch_size}" for r in undecided.itertuples()}
        )
        console.print(f"[yellow]UNDECIDED[/]: {len(names)} inconclusive cell(s): {', '.join(names)}")
    else:
        console.print("no regression")
    page = md_path.with_name("compare.html")
    console.print(f"summary: {md_path}" + (f"  page: {page}" if page.is_file() else ""))
    return code
