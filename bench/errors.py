"""The error types the CLI knows how to report, and the exit codes it reports them with."""

from __future__ import annotations

from pathlib import Path

# The process's exit codes (the CLI's help lists them). 1 and 3 are the gate's verdicts, so a
# crash is never either of them.
EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_UNDECIDED = 3  # ab/compare: no regression found, but some gating result inconclusive
EXIT_INTERNAL = 4


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (engines put pages of detail after it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2, no traceback."""


class BackendError(Exception):
    """An engine failed while preparing or running a cell; the cell records it as `error`."""


class UnsupportedError(Exception):
    """A backend cannot run this model/precision combination; the cell records why."""


class InternalError(Exception):
    """The harness or its environment failed (disk full, a corrupt result file): exit code 4,
    one line naming the log that holds the traceback. Never 1 ("regression") or 3 ("could not
    decide"), which a CI gate may treat as a warning.
    `log_dir`: where the traceback goes (a run's `logs/`), or None for a temporary file."""

    def __init__(self, message: str, log_dir: Path | None = None) -> None:
        super().__init__(message)
        self.log_dir = log_dir
