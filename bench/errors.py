"""The error types the CLI knows how to report."""


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
