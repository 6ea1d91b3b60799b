"""`inferbench history [import|append]`: the series of recorded runs, and appending to them.
The work is the history room's (`inferbench.history.commands`); this is its command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from inferbench.argtypes import finite_float, fraction, int_items, items
from inferbench.commands.base import Command, Subparsers
from inferbench.history.changepoints import CHECK_PENALTY_FACTOR, METRICS

URL_HELP = (
    "history database: a path or URL (sqlite:///file, postgresql://...); "
    "default $INFERBENCH_HISTORY, else results/history.sqlite"
)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """`run`'s --history and --no-history: where the sweep is appended when it ends."""
    parser.add_argument("--history", metavar="URL", help=URL_HELP.replace("results/", "<results-dir>/"))
    parser.add_argument("--no-history", action="store_true", help="do not append this sweep to the history")


class History(Command):
    """`history` prints and draws the series; `history import` and `history append` add run
    folders (append failing closed, as the nightly needs)."""

    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers,
            "history",
            help="series of a metric across recorded runs, reports/history.html, --check for new regressions",
        )
        parser.add_argument("--history", metavar="URL", help=URL_HELP)
        parser.add_argument("--model", "-m", action="append")
        parser.add_argument("--backend", "-b", action="append")
        parser.add_argument("--precision", "-p", action="append")
        parser.add_argument("--batch-size", action="append")
        parser.add_argument("--threads", action="append")
        parser.add_argument("--mode", action="append")
        parser.add_argument("--profile", action="append", help="only runs of these profiles (e.g. gate-cpu)")
        parser.add_argument("--machine", default="", help="fingerprint prefix or part of the CPU/GPU name")
        parser.add_argument("--metric", default="p50", choices=tuple(METRICS))
        parser.add_argument("--out", type=Path, default=Path("reports/history.html"))
        parser.add_argument("--no-html", action="store_true", help="print only; do not write the page")
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit 1 when the newest point of a series starts a step for the worse (0 otherwise)",
        )
        parser.add_argument(
            "--expect-run",
            metavar="RUN_ID",
            help="--check: tonight's run, which must hold the newest points (exit 2 when it is not recorded)",
        )
        parser.add_argument("--min-change", default="1%", help="smallest step --check reports (default 1%%)")
        parser.add_argument(
            "--penalty",
            type=finite_float,
            default=CHECK_PENALTY_FACTOR,
            help=f"--check's penalty factor: higher = fewer, larger steps (default {CHECK_PENALTY_FACTOR})",
        )
        cls._add_nested(parser)

    @classmethod
    def _add_nested(cls, parser: argparse.ArgumentParser) -> None:
        nested = parser.add_subparsers(dest="history_command", parser_class=type(parser))
        imp = nested.add_parser("import", help="append existing run folders (e.g. results/*)")
        imp.add_argument("paths", nargs="+", type=Path)
        # SUPPRESS: given after `import` it counts, and it never erases one given before it.
        imp.add_argument("--history", metavar="URL", default=argparse.SUPPRESS, help=URL_HELP)
        append = nested.add_parser(
            "append",
            help="append finished run folders as `run` does, failing (exit 4) when the database does",
        )
        append.add_argument("run_dirs", nargs="+", type=Path)
        append.add_argument("--history", metavar="URL", default=argparse.SUPPRESS, help=URL_HELP)

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        from inferbench.history.commands import (
            append_command,
            history_command,
            import_command,
            resolve_url,
        )
        from inferbench.history.store import Filters

        if args.history_command == "import":
            return import_command(resolve_url(args.history), args.paths)
        if args.history_command == "append":
            return append_command(resolve_url(args.history), args.run_dirs)
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
