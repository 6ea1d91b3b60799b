"""Workers forked from a process that has already imported the engines (`ab --fork-workers`).

A fresh worker spends most of its life before the timed window: on a 2-vCPU VM a gate-profile
worker lives 3.3-4.3 s, of which `import torch` alone is 1.7-2.3 s and the timed window 0.1-1 s.
A process that has imported torch, ONNX Runtime and OpenVINO once (`preload`) and forks a
child per cell pays that once. The child is still a process of its own, with the isolation a
fresh worker has: its own session (killed whole on a timeout), its own log on stdout and
stderr, its own deadline and runner guard, its own memory for everything the cell builds.

What the children share is the parent's pages: whatever the parent's memory landed on, all
its children inherit. On these VMs where a process lands is the largest noise there is (a
process is fast or slow for its whole life: docs/measurements/2026-12-02-gate-variance-avx2.md),
so a parent that lived through a whole A/B run would make its side's landing one draw for the
run: a bias no number of rounds removes. `ab` therefore starts each side's forking parent
again every round (`inferbench.ab.core.Agent`), and forks on both sides or on neither.

The engines must not have started threads before the fork: they are imported, never run, in
the parent, and the thread variables are set for the one thread count all cells share before
the imports (`preload`).
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

from inferbench.sweep.procs import THREAD_ENV, kill_session, worker_env

#: Imported by the parent before it forks, where installed: what a worker would import anyway.
ENGINES = ("numpy", "torch", "onnxruntime", "openvino")
#: The exit status of a child that raised out of the worker (the worker itself never does).
CHILD_FAILED = 70

_enabled: list[bool] = [False]


def preload(threads: int) -> list[str]:
    """Make this process the forking parent of its workers: thread variables for `threads`,
    then the engines imported (not run). Returns the modules imported."""
    for var in THREAD_ENV:
        os.environ[var] = str(threads)
    loaded = []
    for name in ENGINES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        loaded.append(name)
    _enabled[0] = True
    return loaded


def enabled() -> bool:
    """Whether this process forks its workers (after `preload`)."""
    return _enabled[0]


def run_forked(spec_path: Path, out_path: Path, log_path: Path, threads: int, timeout_s: float) -> int | None:
    """Run one cell in a forked child and wait at most `timeout_s`: the child's exit status as
    `os.waitstatus_to_exitcode` gives it (negative: the signal), or None after the timeout (the
    child's session killed). Ctrl-C or SIGTERM while waiting kills the child too."""
    environ = worker_env(threads)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(spec_path, out_path, log_path, environ)
    try:
        status = _wait(pid, timeout_s)
    except BaseException:
        _kill(pid)
        raise
    if status is None:
        _kill(pid)
    return status


def _child(spec_path: Path, out_path: Path, log_path: Path, environ: dict[str, str]) -> None:
    code = CHILD_FAILED
    try:
        os.setsid()  # its own group: killed whole, with anything the engine starts
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(environ)
        _redirect(log_path)
        from inferbench.cell import worker

        code = worker.main([str(spec_path), str(out_path)])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _redirect(log_path: Path) -> None:
    """stdin from nothing (the parent's requests are not the child's), stdout and stderr into
    the cell's log."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _wait(pid: int, timeout_s: float) -> int | None:
    """The child's exit code, or None when it is still running after `timeout_s`. Sleeps on a
    pidfd (no polling while the child measures) where the kernel has them."""
    deadline = time.monotonic() + timeout_s
    pidfd = _pidfd(pid)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.05))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill(pid: int) -> None:
    kill_session(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
