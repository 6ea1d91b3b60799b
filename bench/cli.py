"""Command line: `inferbench run|list`. Each subcommand parses its arguments and calls a
plain function; `main` is the one place errors become a single line and an exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from inferbench.commands import COMMANDS
from inferbench.commands.base import EXIT_CODES
from inferbench.errors import (
    EXIT_INTERNAL,
    EXIT_USAGE,
    InternalError,
    UserError,
    first_line,
)
from inferbench.redact import configure_logging, redact
from inferbench.sweep.procs import add_user_path
from inferbench.sweep.shutdown import Terminated, stop_on_signals


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the same shape as every other user error.
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="inferbench",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.setup_arguments(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    add_user_path()  # user factories and plugin modules resolve from the current folder
    try:
        args: Any = build_parser().parse_args(argv)
        with stop_on_signals():  # SIGTERM/SIGHUP: kill the worker, keep the cells, exit 143/129
            return int(args.func(args))
    except UserError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        _say(f"interrupted; {_kept(exc)}")
        return 130
    except Terminated as exc:
        _say(f"stopped by {exc}; {_kept(exc)}")
        return exc.exit_code
    except InternalError as exc:
        return _internal_error(exc, exc.log_dir)
    except Exception as exc:  # MemoryError too: never exit 1, which means "regression"
        return _internal_error(exc, None)


def _say(line: str) -> None:
    print(f"inferbench: {redact(line)}", file=sys.stderr)


def _kept(exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", None)
    return notes[-1] if notes else "finished cells are saved (rerun with --resume)"


def _internal_error(exc: BaseException, log_dir: Path | None) -> int:
    """One line for the terminal, the whole traceback in a log file it names."""
    text = "".join(traceback.format_exception(exc))
    where = _write_log(text, log_dir)
    message = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {first_line(exc)}"
    _say(f"internal error: {message.splitlines()[0] if message else type(exc).__name__} ({where})")
    return EXIT_INTERNAL


def _write_log(text: str, log_dir: Path | None) -> str:
    # The command line and the traceback may hold a --history URL's password, a token.
    stamped = redact(f"--- {dt.datetime.now().isoformat()} inferbench {' '.join(sys.argv[1:])}\n{text}")
    try:
        if log_dir is not None:
            path = log_dir / "runner.log"
            existed = path.exists()
            try:
                log_dir.mkdir(parents=True, exist_ok=True)
                with path.open("a") as handle:
                    handle.write(stamped)
                return f"traceback in {path}"
            except OSError:  # the run's disk may be the full one: try the temporary folder
                if not existed:
                    path.unlink(missing_ok=True)  # no empty log pointing nowhere
        with tempfile.NamedTemporaryFile("w", prefix="inferbench-", suffix=".log", delete=False) as tmp:
            tmp.write(stamped)
        return f"traceback in {tmp.name}"
    except OSError as exc:
        return f"no log written: {exc.strerror or exc}"
