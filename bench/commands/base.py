"""The command object every subcommand is: its arguments, and the plain function they call."""

from __future__ import annotations

import abc
import argparse
from typing import Any, TypeAlias

from rich.console import Console

# soft_wrap: a long path is printed whole (a terminal may wrap it), never folded mid-name.
console = Console(stderr=True, soft_wrap=True)

EXIT_CODES = """\
exit codes:
  0    success (compare/ab: no regression)
  1    regression found (compare/ab only; never used for a crash)
  2    usage error: bad flag, profile, model or option, or a broken model factory
  3    compare/ab only: could not decide (no regression found, but some gating results
       inconclusive, or no cell timed on both sides)
  4    internal error or environment failure (disk full, corrupt result file, out of
       memory, a bug): one line naming the log that holds the traceback; never 1 or 3,
       so a crashed gate cannot pass as "undecided"; run: also when no cell produced a
       number (every cell errored, timed out or could not run here), results still written
  129  stopped by SIGHUP, 130 by Ctrl-C, 143 by SIGTERM: the running worker is killed,
       finished cells are kept (go on with --resume)
"""

#: The main parser's subcommands, as `add_subparsers` returns them.
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"


class Command(abc.ABC):
    """One subcommand. `setup_arguments` adds its parser to the main parser's subcommands;
    `run_from_args` turns the parsed flags into one call of the plain function behind it, which
    tests call directly. A command module imports the rooms it drives inside that function,
    so that `inferbench --help`, or a mistyped flag, does not load every room."""

    @classmethod
    @abc.abstractmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        """Add this command's parser (`add_parser` below) and its flags."""

    @classmethod
    @abc.abstractmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        """Run the command on its parsed flags; returns the exit code."""

    @classmethod
    def add_parser(cls, subparsers: Subparsers, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """The subcommand's parser, dispatching to `run_from_args` (`main` calls `args.func`)."""
        parser: argparse.ArgumentParser = subparsers.add_parser(name, **kwargs)
        parser.set_defaults(func=cls.run_from_args)
        return parser
