"""SIGTERM and SIGHUP as a clean stop: what CI cancellation, `timeout`, `docker stop`,
Kubernetes and a closed terminal send.

While a sweep runs, either signal raises `Terminated` in the runner's main thread, the way
Ctrl-C raises KeyboardInterrupt: the code waiting on a worker kills the worker's process
group on the way out, finished cells stay saved, and the CLI exits 128 + the signal number
(143 for SIGTERM, 129 for SIGHUP). Saving a cell holds the signals back (`signals_held`), so a
stop never lands between a cell's file and the CSV rebuilt from it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """The runner was told to stop by a signal. A BaseException, like KeyboardInterrupt, so
    no `except Exception` on the way up turns it into a cell error."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    held = 0  # depth of `signals_held` blocks
    pending: int | None = None  # a stop signal that arrived while held


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # Python runs signal handlers in the main thread, whichever thread the kernel chose.
    if _State.held:
        _State.pending = signum
        return
    raise Terminated(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into `Terminated` for the duration (main thread only; elsewhere,
    as in a test calling the runner from a thread, the signals keep their handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _State.pending = None


@contextmanager
def signals_held() -> Iterator[None]:
    """Delay a stop until the block ends: it lands before or after, never inside. (A flag,
    not a signal mask: a mask holds only this thread, and the kernel may pick another.)"""
    _State.held += 1
    try:
        yield
    finally:
        _State.held -= 1
    if not _State.held and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Terminated(signum)
