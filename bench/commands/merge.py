"""`inferbench merge`: one run folder from the shards of one sweep (`run --shard I/N`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from inferbench.commands.base import Command, Subparsers, console
from inferbench.commands.report import report_command


class Merge(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers, "merge", help="one run folder (CSV, cells, report) from the shards of one sweep"
        )
        parser.add_argument("run_dirs", type=Path, nargs="+", help="the shards' run directories")
        parser.add_argument("--out", type=Path, required=True, help="the merged run directory to write")
        parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
        parser.add_argument("--no-report", action="store_true", help="skip the HTML report and summary.md")

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        return merge_command(args.run_dirs, args.out, None if args.no_report else args.reports_dir)


def merge_command(run_dirs: list[Path], out_dir: Path, reports_dir: Path | None) -> int:
    """Merge shards; exit 0 even with missing cells, which are listed (and in merge.json)."""
    from inferbench.sweep.merge import merge_runs

    merged = merge_runs(run_dirs, out_dir)
    console.print(f"merged {merged.cells} cells from shards {', '.join(merged.shards)} into {out_dir}")
    for name in merged.missing:
        console.print(f"missing: {name}")
    if merged.missing:
        console.print(f"[bold yellow]{len(merged.missing)} cell(s) of the sweep are in no shard[/]")
    if reports_dir is not None:
        report_command(out_dir, reports_dir)
    return 0
