"""How the runner starts workers: a fresh process per cell (`run_in_worker`), or a shared
worker (`python -m inferbench.cell.worker --serve`, `SharedWorkers`).

A shared worker measures the cells of one (model, backend, precision, threads) one after
another, so interpreter start-up, imports, the model build and the FP32 reference are paid
once per group instead of once per cell. The isolation promise still holds: the runner sends
one cell at a time and waits for its answer with that cell's timeout; a crash or a hang costs
the cell that was running (its row says why), the worker is killed whole, and the next cell
starts in a new one. `repeats > 1` never comes here: every repeat is a fresh process.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from inferbench.cell.spec import WorkerSpec
from inferbench.config import Cell, SweepConfig
from inferbench.models import ModelRef
from inferbench.status import ERROR, TIMEOUT
from inferbench.sweep import forked
from inferbench.sweep.procs import kill_group, python_command, worker_env

log = logging.getLogger(__name__)

WORKER_DEADLINE_MARGIN_S = 60.0


def group_key(cell: Cell) -> tuple[str, str, str, int]:
    """Cells that may share a worker: same model, engine, precision and thread count."""
    return (cell.model, cell.backend, cell.precision, cell.threads)


class ServedWorker:
    """One live shared worker; `run` one cell at a time, `close` when the group ends."""

    def __init__(self, key: tuple[str, str, str, int], threads: int, log_path: Path) -> None:
        self.key = key
        reply_read, reply_write = os.pipe()
        self._reply = os.fdopen(reply_read, "r")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as start_log:  # until the first cell points it at its own log
            self.proc: subprocess.Popen[str] = subprocess.Popen(
                python_command("inferbench.cell.worker", "--serve", str(reply_write)),
                stdin=subprocess.PIPE,
                stdout=start_log,
                stderr=subprocess.STDOUT,
                env=worker_env(threads),
                pass_fds=(reply_write,),
                start_new_session=True,  # own group: kill it whole
                text=True,
            )
        os.close(reply_write)  # only the worker holds the write end: EOF means it is gone
        self.alive = True

    def run(self, spec_path: Path, out_path: Path, log_path: Path, timeout_s: float) -> dict[str, Any]:
        """Send one cell and wait for it; never raises for engine failures. A timeout or a
        death ends this worker (`alive` turns False) and is the cell's row."""
        started = time.perf_counter()
        command = {"spec": str(spec_path), "out": str(out_path), "log": str(log_path)}
        try:
            stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
            stdin.write(json.dumps(command) + "\n")
            stdin.flush()
            answered = _wait_line(self._reply, timeout_s)
        except BrokenPipeError:
            answered = ""
        except BaseException:  # Ctrl-C, SIGTERM: no orphan worker
            self.close(polite=False)
            raise
        wall = time.perf_counter() - started
        if answered is None:
            self.close(polite=False)
            return timed_out(timeout_s, wall)
        if answered.strip() == "done" and out_path.is_file():
            return collect(spec_path, out_path, wall)
        self.close()
        return {"status": ERROR, "reason": death_reason(self.proc.returncode, log_path), "wall_s": wall}

    def close(self, polite: bool = True) -> None:
        """End the worker: when `polite`, let an idle one leave (stdin closed) for a moment;
        then kill its whole group, anything it started included."""
        if not self.alive:
            return
        self.alive = False
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            if polite:
                self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        kill_group(self.proc)
        self._reply.close()


def _wait_line(stream: IO[str], timeout_s: float) -> str | None:
    """The next line from the worker ('' when it died), or None after `timeout_s`."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    if not ready:
        return None
    return stream.readline()


def timed_out(timeout_s: float, wall: float) -> dict[str, Any]:
    """The row of a cell whose worker gave no result in time (and was killed)."""
    return {"status": TIMEOUT, "reason": f"no result after {timeout_s:g} s (worker killed)", "wall_s": wall}


def collect(spec_path: Path, out_path: Path, wall: float) -> dict[str, Any]:
    """A finished cell's record, its spec and result files cleared away."""
    record = json.loads(out_path.read_text())
    out_path.unlink()
    spec_path.unlink(missing_ok=True)
    return {**record, "wall_s": wall}


def death_reason(returncode: int | None, log_path: Path) -> str:
    """What ended a worker that gave no result, with the last line of its log."""
    if returncode is None:
        what = "worker ended without a result"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        what = f"worker killed by {name}"
        if name == "SIGKILL":
            what += " (out of memory?)"
    else:
        what = f"worker exited with code {returncode} without a result"
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    return f"{what}: {lines[-1][:300]}" if lines else what


def pin_cpus(threads: int) -> list[int]:
    """The first `threads` cores this process may use: where a pinned worker runs."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[: max(1, threads)]


def run_in_worker(
    cell: Cell, ref: ModelRef, config: SweepConfig, run_dir: Path, cache_dir: Path
) -> dict[str, Any]:
    """Run one cell in a fresh process with a timeout; never raises for engine failures."""
    spec_path, out_path, log_path = _write_spec(cell, ref, config, run_dir, cache_dir)
    timeout = config.measure.timeout_seconds
    started = time.perf_counter()
    if forked.enabled():  # `ab --fork-workers`: this process has the engines imported
        returncode = forked.run_forked(spec_path, out_path, log_path, cell.threads, timeout)
        if returncode is None:
            return timed_out(timeout, time.perf_counter() - started)
        return _finished(spec_path, out_path, log_path, returncode, time.perf_counter() - started)
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            python_command("inferbench.cell.worker", str(spec_path), str(out_path)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=worker_env(cell.threads),
            start_new_session=True,  # own group: kill it whole
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return timed_out(timeout, time.perf_counter() - started)
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: do not leave an orphan worker behind
            kill_group(proc)
            raise
    return _finished(spec_path, out_path, log_path, returncode, time.perf_counter() - started)


def _finished(
    spec_path: Path, out_path: Path, log_path: Path, returncode: int, wall: float
) -> dict[str, Any]:
    """The record of a worker that ended (fresh or forked): its result, or why it gave none."""
    if out_path.is_file():
        return collect(spec_path, out_path, wall)
    return {"status": ERROR, "reason": death_reason(returncode, log_path), "wall_s": wall}


class SharedWorkers:
    """Runs cells in shared workers (inferbench.sweep.launch): the live worker serves consecutive
    cells of its group; a cell of another group, or a worker that died or hung, starts a new
    one. `close` ends the last. Not `enabled`: every cell in a fresh process."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.current: ServedWorker | None = None

    def run(
        self, cell: Cell, ref: ModelRef, config: SweepConfig, run_dir: Path, cache_dir: Path
    ) -> dict[str, Any]:
        if not self.enabled:
            return run_in_worker(cell, ref, config, run_dir, cache_dir)
        key = group_key(cell)
        if self.current is not None and (self.current.key != key or not self.current.alive):
            self.close()  # before the next spec is written: one worker at a time
        spec_path, out_path, log_path = _write_spec(cell, ref, config, run_dir, cache_dir)
        if self.current is None:
            self.current = ServedWorker(key, cell.threads, log_path)
        return self.current.run(spec_path, out_path, log_path, config.measure.timeout_seconds)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


def _write_spec(
    cell: Cell, ref: ModelRef, config: SweepConfig, run_dir: Path, cache_dir: Path
) -> tuple[Path, Path, Path]:
    """The cell's spec file, where its record will be written, and its log file."""
    work = run_dir / "work"
    work.mkdir(exist_ok=True)
    spec_path, out_path = work / f"{cell.key}.spec.json", work / f"{cell.key}.out.json"
    out_path.unlink(missing_ok=True)
    WorkerSpec(
        cell=cell,
        model_ref=ref,
        measure=config.measure,
        cache_dir=cache_dir,
        accuracy=config.accuracy,
        options=config.backend_options.get(cell.backend, {}),
        pin_cpus=tuple(pin_cpus(cell.threads)) if config.pin else None,
        allow_emulated=config.allow_emulated,
        # The worker's own deadline, for when this runner cannot enforce its own (stopped,
        # frozen): past the runner's timeout, so the runner's verdict normally comes first.
        deadline_s=config.measure.timeout_seconds + WORKER_DEADLINE_MARGIN_S,
        serve=config.serve,
    ).write(spec_path)
    log_path = run_dir / "logs" / f"{cell.key}.log"
    log_path.parent.mkdir(exist_ok=True)
    return spec_path, out_path, log_path
