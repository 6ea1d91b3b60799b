"""`inferbench export`: a run folder as Bencher Metric Format JSON or as MLflow runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from inferbench.commands.base import Command, Subparsers


class Export(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers, "export", help="a run as Bencher Metric Format JSON or MLflow runs"
        )
        parser.add_argument("run_dir", type=Path)
        parser.add_argument("--format", required=True, choices=("bmf", "mlflow"))
        parser.add_argument("--out", type=Path, help="bmf: output file (default RUN/bmf.json; - for stdout)")
        parser.add_argument("--tracking-uri", help="mlflow: tracking URI (default ./mlruns, a file store)")
        parser.add_argument("--experiment", default="inferbench", help="mlflow: experiment name")
        parser.add_argument("--report", type=Path, help="mlflow: report to attach (default reports/RUN.html)")

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        if args.format == "bmf":
            return export_bmf(args.run_dir, args.out)
        report = args.report or Path("reports") / f"{args.run_dir.name}.html"
        return export_mlflow(args.run_dir, args.tracking_uri, args.experiment, report)


def export_bmf(run_dir: Path, out: Path | None) -> int:
    """The run as Bencher Metric Format: to `out` (default RUN/bmf.json), or stdout for `-`."""
    from inferbench.history.commands import console
    from inferbench.history.export import write_bmf

    path, text = write_bmf(run_dir, out)
    if path is None:
        print(text, end="")
    else:
        console.print(f"Bencher Metric Format: {path}")
    return 0


def export_mlflow(run_dir: Path, tracking_uri: str | None, experiment: str, report: Path) -> int:
    """The run as MLflow runs (one per cell, under one parent run), with its report attached."""
    from inferbench.history import mlflow_export
    from inferbench.history.commands import console

    uri, run_id, cells = mlflow_export.export_mlflow(run_dir, tracking_uri, experiment, report)
    console.print(f"MLflow: {cells} cell run(s) under run {run_id} at {uri}")
    return 0
