"""`--shard I/N`: each of N jobs runs its own share of a sweep, with no coordination.

A cell belongs to shard `hash mod N`, where the hash is SHA-256 of the cell's model, backend
and precision: the cells a shared worker serves (inferbench.launch) stay in one shard, so a
shard pays a worker's start-up, model build and reference once per group, as an unsharded
sweep does (hashing every batch size and mode apart spread a group over all the shards). Not
its thread count either, which `0 = all cores` resolves differently on each machine. So every
job computes its share from the sweep alone, and with the same N, adding a model or a backend
moves no existing cell to another shard. Shards are numbered from 1 (as Slurm array tasks and
humans count) to N.

`--shard auto` reads the scheduler's own variables: Slurm job arrays
(`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`) and Kubernetes
Indexed Jobs (`JOB_COMPLETION_INDEX`, with the count in `INFERBENCH_SHARD_COUNT` since the
Job's `completions` is not exposed to the pod); GitHub Actions matrices pass `--shard I/N`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from inferbench.config import Cell
from inferbench.errors import UserError

COUNT_ENV = "INFERBENCH_SHARD_COUNT"


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __post_init__(self) -> None:
        if not (1 <= self.count and 1 <= self.index <= self.count):
            raise UserError(f"shard must be I/N with 1 <= I <= N; got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, cell: Cell) -> bool:
        return shard_of(cell, self.count) == self.index

    def select(self, cells: list[Cell]) -> list[Cell]:
        return [c for c in cells if self.holds(c)]


def shard_of(cell: Cell, count: int) -> int:
    """The 1-based shard of a cell among `count`: stable across machines and sweeps, and the
    same for every batch size and mode of a (model, backend, precision)."""
    identity = "\x1f".join((cell.model, cell.backend, cell.precision))
    digest = hashlib.sha256(identity.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """'I/N', or 'auto' to read the scheduler's variables."""
    if text.strip().lower() == "auto":
        return _from_scheduler(os.environ if environ is None else environ)
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return Shard(int(index), int(count))
    except ValueError:
        raise UserError(f"shard must look like 2/4 or auto; got {text!r}") from None


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise UserError(f"{name} must be an integer; got {environ[name]!r}") from None


def _from_scheduler(environ: Mapping[str, str]) -> Shard:
    if "SLURM_ARRAY_TASK_ID" in environ:
        if "SLURM_ARRAY_TASK_COUNT" not in environ:
            raise UserError("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
        first = _int(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
        task = _int(environ, "SLURM_ARRAY_TASK_ID")
        return Shard(task - first + 1, _int(environ, "SLURM_ARRAY_TASK_COUNT"))
    if "JOB_COMPLETION_INDEX" in environ:
        if COUNT_ENV not in environ:
            raise UserError(
                f"--shard auto: JOB_COMPLETION_INDEX is set; set {COUNT_ENV} to the Job's completions"
            )
        return Shard(_int(environ, "JOB_COMPLETION_INDEX") + 1, _int(environ, COUNT_ENV))
    raise UserError(
        "--shard auto found no scheduler: set SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, "
        f"JOB_COMPLETION_INDEX with {COUNT_ENV}, or pass --shard I/N"
    )
