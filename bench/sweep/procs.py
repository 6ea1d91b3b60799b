"""Child processes: their environment, where user code resolves from, killing them whole, and
the guards that end a child whose runner is gone or whose deadline has passed.

Workers run `python -P -m inferbench.cell.worker`: `-P` keeps the worker's current folder off the
front of sys.path, so a user's folder can never shadow an `inferbench` module. The user's own
code (a `models.mynet:build` factory, a plugin module) resolves from the folder the sweep was
started in, added to sys.path only once `inferbench` is imported (see `add_user_path`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Where the sweep was started; workers resolve user code from here.
USER_PATH_ENV = "INFERBENCH_USER_PATH"
#: The process that started the child (set by `worker_env`); the child ends when it is gone.
RUNNER_PID_ENV = "INFERBENCH_RUNNER_PID"
#: How often a child's watchdog looks at its parent and its deadline.
WATCH_INTERVAL_S = 0.5
#: After the soft deadline the kernel ends the child anyway (SIGALRM's default action), even
#: if the interpreter is stuck in native code holding the GIL.
HARD_DEADLINE_MARGIN_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def python_command(module: str, *args: str) -> list[str]:
    """A fresh interpreter running one of our modules, with no folder put ahead of ours."""
    return [sys.executable, "-P", "-m", module, *args]


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a child process: thread counts set, the user's folder recorded."""
    environ = dict(os.environ)
    for var in THREAD_ENV:
        environ[var] = str(threads)
    environ.setdefault(USER_PATH_ENV, os.getcwd())
    environ[RUNNER_PID_ENV] = str(os.getpid())
    environ.setdefault("HF_HUB_OFFLINE", "1")
    environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return environ


def add_user_path(folder: str | None = None) -> None:
    """Let user code (`pkg.module:factory`, plugin modules) import from the user's folder.

    Called after `inferbench` is imported, so the user's packages (`models`, `backends`, ...)
    resolve as theirs, and ours stay reachable only as `inferbench.*`."""
    path = str(Path(folder or os.environ.get(USER_PATH_ENV) or os.getcwd()).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def kill_session(pid: int) -> None:
    """SIGKILL a child that leads its own session and everything it started; the child itself
    too, should it not have left this process's group yet. The caller reaps it."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Kill a child started with `start_new_session=True` and everything it started."""
    kill_session(proc.pid)
    proc.wait()


def run_child(
    command: list[str], *, env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run a child in its own process group and wait at most `timeout_s`; on the timeout, or
    on anything that interrupts the wait (Ctrl-C, SIGTERM), the whole group is killed.
    Raises subprocess.TimeoutExpired after killing it."""
    with subprocess.Popen(  # the context closes the pipes, however the wait ends
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except BaseException:
            kill_group(proc)
            raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def guard_child(deadline_s: float | None = None) -> None:
    """Called first thing in a child: end it when its runner dies, and at `deadline_s`.

    Three layers, because any one can miss: the kernel's parent-death signal (Linux prctl),
    a watchdog thread polling the parent id (it also ends the child's own process group, so
    helpers the engine started go too), and an alarm the kernel acts on after the deadline."""
    expected = int(os.environ.get(RUNNER_PID_ENV) or 0) or os.getppid()
    _set_parent_death_signal()
    if os.getppid() != expected:  # the runner died before the signal was armed
        _end_group("runner already gone")
    reset_deadline(deadline_s)
    watcher = threading.Thread(target=_watch, args=(expected,), daemon=True)
    watcher.start()


#: The child's deadline (monotonic time, and its length for the message); None = none.
_deadline: list[tuple[float, float] | None] = [None]


def reset_deadline(deadline_s: float | None) -> None:
    """Start the child's deadline again from now: a shared worker gives every cell its own."""
    if not deadline_s:
        _deadline[0] = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    _deadline[0] = (time.monotonic() + deadline_s, deadline_s)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, deadline_s + HARD_DEADLINE_MARGIN_S)


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return  # the watchdog covers other systems
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):
        log.warning("prctl unavailable; relying on the parent watchdog")


def _watch(parent: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent:
            _end_group("runner gone")
        deadline = _deadline[0]
        if deadline is not None and time.monotonic() > deadline[0]:
            _end_group(f"own deadline of {deadline[1]:g} s passed")


def _end_group(why: str) -> None:
    """Exit now, taking the process group along when this process leads it (a worker does;
    a child started by hand from a shell does not, and must not kill the shell)."""
    print(f"inferbench child {os.getpid()}: {why}; exiting", file=sys.stderr, flush=True)
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(125)
