"""Command line: `inferbench run|list`. Each subcommand parses its arguments and calls a
plain function; `main` is the one place user errors become a single line and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the same shape as every other user error.
        raise UserError(message)


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _ints(values: Sequence[str] | None, what: str) -> list[int] | None:
    items = _split(values)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise UserError(f"{what} must be integers; got {', '.join(items)}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="inferbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a sweep and write results/<run-id>/")
    run.add_argument("--profile", default="cpu", help="built-in profile name or a .toml path")
    run.add_argument("--model", "-m", action="append", help="model(s), repeat or comma-separate")
    run.add_argument("--backend", "-b", action="append", help="backend(s)")
    run.add_argument("--precision", "-p", action="append", help="fp32, bf16, int8")
    run.add_argument("--batch-size", action="append", help="batch size(s)")
    run.add_argument("--threads", action="append", help="intra-op threads (0 = all cores)")
    run.add_argument("--run-id", help="name of the run directory (default: timestamp-profile)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep finished cells of --run-id (or the latest run of the profile)",
    )
    run.add_argument("--results-dir", type=Path, default=Path("results"))
    run.add_argument("--cache-dir", type=Path, help="artifact cache (default .cache/inferbench)")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="backends (with availability), models and profiles")
    lst.set_defaults(func=cmd_list)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from bench.commands import run_command

    return run_command(
        profile=args.profile,
        models=_split(args.model),
        backends=_split(args.backend),
        precisions=_split(args.precision),
        batch_sizes=_ints(args.batch_size, "batch sizes"),
        threads=_ints(args.threads, "threads"),
        run_id=args.run_id,
        resume=args.resume,
        results_dir=args.results_dir,
        cache_dir=args.cache_dir,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def cmd_list(args: argparse.Namespace) -> int:
    from bench.commands import list_command

    return list_command()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args: Any = build_parser().parse_args(argv)
        return int(args.func(args))
    except UserError as exc:
        print(f"inferbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "inferbench: interrupted; finished cells are saved (rerun with --resume)",
            file=sys.stderr,
        )
        return 130
