"""Arguments of `inferbench history [import]` and `inferbench export`, and the run flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inferbench.argtypes import finite_float, fraction, int_items, items
from inferbench.history.changepoints import CHECK_PENALTY_FACTOR, METRICS

_URL_HELP = (
    "history database: a path or URL (sqlite:///file, postgresql://...); "
    "default $INFERBENCH_HISTORY, else results/history.sqlite"
)


def add_run_flags(run: argparse.ArgumentParser) -> None:
    run.add_argument("--history", metavar="URL", help=_URL_HELP.replace("results/", "<results-dir>/"))
    run.add_argument("--no-history", action="store_true", help="do not append this sweep to the history")


def add_parsers(sub: Any) -> None:
    """`history`, `history import` and `export` on the main parser's subcommands."""
    history = sub.add_parser(
        "history",
        help="series of a metric across recorded runs, reports/history.html, --check for new regressions",
    )
    history.add_argument("--history", metavar="URL", help=_URL_HELP)
    history.add_argument("--model", "-m", action="append")
    history.add_argument("--backend", "-b", action="append")
    history.add_argument("--precision", "-p", action="append")
    history.add_argument("--batch-size", action="append")
    history.add_argument("--threads", action="append")
    history.add_argument("--mode", action="append")
    history.add_argument("--profile", action="append", help="only runs of these profiles (e.g. gate-cpu)")
    history.add_argument("--machine", default="", help="fingerprint prefix or part of the CPU/GPU name")
    history.add_argument("--metric", default="p50", choices=tuple(METRICS))
    history.add_argument("--out", type=Path, default=Path("reports/history.html"))
    history.add_argument("--no-html", action="store_true", help="print only; do not write the page")
    history.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the newest point of a series starts a step for the worse (0 otherwise)",
    )
    history.add_argument(
        "--expect-run",
        metavar="RUN_ID",
        help="--check: tonight's run, which must hold the newest points (exit 2 when it is not recorded)",
    )
    history.add_argument("--min-change", default="1%", help="smallest step --check reports (default 1%%)")
    history.add_argument(
        "--penalty",
        type=finite_float,
        default=CHECK_PENALTY_FACTOR,
        help=f"--check's penalty factor: higher = fewer, larger steps (default {CHECK_PENALTY_FACTOR})",
    )
    history.set_defaults(func=cmd_history)
    nested = history.add_subparsers(dest="history_command", parser_class=type(history))
    imp = nested.add_parser("import", help="append existing run folders (e.g. results/*)")
    imp.add_argument("paths", nargs="+", type=Path)
    # SUPPRESS: given after `import` it counts, and it never erases one given before it.
    imp.add_argument("--history", metavar="URL", default=argparse.SUPPRESS, help=_URL_HELP)
    imp.set_defaults(func=cmd_import)
    append = nested.add_parser(
        "append", help="append finished run folders as `run` does, failing (exit 4) when the database does"
    )
    append.add_argument("run_dirs", nargs="+", type=Path)
    append.add_argument("--history", metavar="URL", default=argparse.SUPPRESS, help=_URL_HELP)
    append.set_defaults(func=cmd_append)

    export = sub.add_parser("export", help="a run as Bencher Metric Format JSON or MLflow runs")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", required=True, choices=("bmf", "mlflow"))
    export.add_argument("--out", type=Path, help="bmf: output file (default RUN/bmf.json; - for stdout)")
    export.add_argument("--tracking-uri", help="mlflow: tracking URI (default ./mlruns, a file store)")
    export.add_argument("--experiment", default="inferbench", help="mlflow: experiment name")
    export.add_argument("--report", type=Path, help="mlflow: report to attach (default reports/RUN.html)")
    export.set_defaults(func=cmd_export)


def cmd_history(args: argparse.Namespace) -> int:
    from inferbench.history.commands import history_command, resolve_url
    from inferbench.history.store import Filters

    filters = Filters(
        models=tuple(items(args.model)),
        backends=tuple(items(args.backend)),
        precisions=tuple(items(args.precision)),
        batch_sizes=tuple(int_items(args.batch_size, "batch sizes")),
        threads=tuple(int_items(args.threads, "threads")),
        modes=tuple(items(args.mode)),
        profiles=tuple(items(args.profile)),
        machine=args.machine.strip(),
    )
    return history_command(
        resolve_url(args.history),
        filters,
        metric=args.metric,
        html_path=None if args.no_html else args.out,
        check=args.check,
        min_change=fraction(args.min_change, example_pct=1),
        penalty=args.penalty,
        expect_run=args.expect_run,
    )


def cmd_import(args: argparse.Namespace) -> int:
    from inferbench.history.commands import import_command, resolve_url

    return import_command(resolve_url(args.history), args.paths)


def cmd_append(args: argparse.Namespace) -> int:
    from inferbench.history.commands import append_command, resolve_url

    return append_command(resolve_url(args.history), args.run_dirs)


def cmd_export(args: argparse.Namespace) -> int:
    from inferbench.history.commands import console

    if args.format == "bmf":
        from inferbench.history.export import write_bmf

        path, text = write_bmf(args.run_dir, args.out)
        if path is None:
            print(text, end="")
        else:
            console.print(f"Bencher Metric Format: {path}")
        return 0
    from inferbench.history.mlflow_export import export_mlflow

    report = args.report or Path("reports") / f"{args.run_dir.name}.html"
    uri, run_id, cells = export_mlflow(args.run_dir, args.tracking_uri, args.experiment, report)
    console.print(f"MLflow: {cells} cell run(s) under run {run_id} at {uri}")
    return 0


def resolve_run_url(given: str | None, results_dir: Path) -> str:
    """Where `run` appends: --history, else $INFERBENCH_HISTORY, else <results-dir>/history.sqlite."""
    from inferbench.history.commands import resolve_url

    return resolve_url(given, results_dir)
