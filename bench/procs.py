"""Child processes: their environment, where user code resolves from, and killing them whole.

Workers run `python -P -m inferbench.worker`: `-P` keeps the worker's current folder off the
front of sys.path, so a user's folder can never shadow an `inferbench` module. The user's own
code (a `models.mynet:build` factory, a plugin module) resolves from the folder the sweep was
started in, added to sys.path only once `inferbench` is imported (see `add_user_path`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Where the sweep was started; workers resolve user code from here.
USER_PATH_ENV = "INFERBENCH_USER_PATH"


def python_command(module: str, *args: str) -> list[str]:
    """A fresh interpreter running one of our modules, with no folder put ahead of ours."""
    return [sys.executable, "-P", "-m", module, *args]


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a child process: thread counts set, the user's folder recorded."""
    environ = dict(os.environ)
    for var in THREAD_ENV:
        environ[var] = str(threads)
    environ.setdefault(USER_PATH_ENV, os.getcwd())
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


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Kill a child started with `start_new_session=True` and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
