"""One run per run folder: `run.lock` in the folder, held with `flock` for the whole sweep.

Two runs given one `--run-id` would share `work/` (each deleting the other's result files) and
`config.json`, and the last one's `results.csv` would drop the other's rows. The second run is
refused, exit 2, naming the holder the lock file records (pid, host, start time). The kernel
drops the lock when its holder dies, however it dies, so a crashed run never leaves its folder
locked; the file stays (removing it would let a third run lock a new file while the second
still holds the old one).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inferbench.errors import UserError

LOCK_NAME = "run.lock"


@contextmanager
def run_lock(run_dir: Path, fresh: bool = False) -> Iterator[None]:
    """Hold `run_dir`'s lock while the block runs (the folder is created if need be).
    `fresh`: the run must start a new folder; one that holds cells is refused, looked at
    again under the lock since another run may have finished there since it was checked."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{run_dir} is in use by another run ({_holder(path)}); wait for it or pass another --run-id"
            ) from None
        if fresh and any((run_dir / "cells").glob("*.json")):
            raise UserError(f"{run_dir} already holds results; pass --resume or another --run-id")
        _record_holder(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


def _record_holder(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": dt.datetime.now().isoformat()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it; the holder may not have written it yet."""
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not yet recorded"
