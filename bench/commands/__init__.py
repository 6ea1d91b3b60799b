"""The subcommands, one command object each (`base.Command`, in the manner of asv's commands):
`setup_arguments` adds the subcommand's parser, `run_from_args` calls the plain function behind
it. `inferbench.cli` builds its parser from `COMMANDS`, in the order `--help` lists them.

A new subcommand is a module here with a `Command` subclass, added to `COMMANDS`."""

from __future__ import annotations

from inferbench.commands.ab import Ab
from inferbench.commands.base import Command
from inferbench.commands.compare import Compare
from inferbench.commands.doctor import Doctor
from inferbench.commands.export import Export
from inferbench.commands.history import History
from inferbench.commands.listing import Listing
from inferbench.commands.merge import Merge
from inferbench.commands.peak import Peak
from inferbench.commands.report import Report
from inferbench.commands.run import Run

COMMANDS: tuple[type[Command], ...] = (
    Run,
    Report,
    Compare,
    Merge,
    Ab,
    Listing,
    Peak,
    Doctor,
    History,
    Export,
)

__all__ = ["COMMANDS", "Command"]
