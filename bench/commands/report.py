"""`inferbench report`: a run's HTML report and summary.md, and its comparison page with another run."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from inferbench.commands.base import Command, Subparsers, console


class Report(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers, "report", help="write reports/<run-id>.html and summary.md for a run"
        )
        parser.add_argument("run_dir", type=Path)
        parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
        parser.add_argument(
            "--compare-with",
            type=Path,
            metavar="OTHER_RUN",
            help="also write reports/<run>-vs-<other>.html: OTHER_RUN as base, RUN as new",
        )

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        return report_command(args.run_dir, args.reports_dir, args.compare_with)


def report_command(run_dir: Path, reports_dir: Path, compare_with: Path | None = None) -> int:
    """The run's report; with `compare_with`, also the comparison page of the two runs (base =
    `compare_with`, new = `run_dir`): `reports/<run>-vs-<other>.html`. A report only shows, so
    runs from different machines or settings are compared anyway, the page naming the mismatch,
    and the exit code is 0 whatever the verdicts."""
    from inferbench.compare.core import CompareOptions
    from inferbench.compare.html import render_compare_html
    from inferbench.compare.report import headline
    from inferbench.compare.runs import compare_dirs
    from inferbench.report.page import write_report
    from inferbench.util import atomic_write_text

    options = CompareOptions()
    # Compared first: a bad OTHER_RUN stops here, before anything is written.
    c = compare_dirs(compare_with, run_dir, options, allow_mismatch=True) if compare_with else None
    html_path, md_path = write_report(run_dir, reports_dir)
    console.print(f"report: {html_path}  summary: {md_path}")
    if c is not None:
        name = re.sub(r"[^\w.-]", "_", f"{c.new.name}-vs-{c.base.name}")  # run names are free text
        page = reports_dir / f"{name}.html"
        atomic_write_text(page, render_compare_html(c.frame, c.unmatched, options, c.base, c.new, c.notes))
        console.print(f"comparison: {page}  ({headline(c.frame).replace('**', '')})", highlight=False)
    return 0
