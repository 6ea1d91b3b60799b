"""`--shard I/N`: each of N jobs runs its own share of a sweep, with no coordination.

Cells are shared out by group, (model, backend, precision): the cells a shared worker serves
(inferbench.sweep.launch) stay in one shard, so a shard pays a worker's start-up, model build and
reference once per group, as an unsharded sweep does. Not by thread count, which `0 = all
cores` resolves differently on each machine. Every job computes the whole split from the sweep
alone, so the jobs agree without talking to each other:

1. Each group starts on its hash shard, SHA-256 of (model, backend, precision) mod N, which
   depends on nothing else: adding a model or a backend moves no existing group by itself.
2. Then, while moving one group from one shard to another evens out the pair's estimated
   cost (the group costs less than the gap between them), the move that evens the most is
   made. So no shard is left empty while there are at least as many groups as shards (the
   busiest shard with two groups can always give one), and no two shards differ by more
   than the biggest group; a group leaves its hash shard only where that buys balance.

The estimated cost of a group is its number of cells plus one for its worker's start-up,
build and reference: it must come from the sweep alone, since each machine's timing history
is its own and would give each job another split. With fewer groups than shards some shards
hold no cell; such a job still writes its run folder (environment and config) and exits 0,
and `inferbench merge` takes it like any other. Shards are numbered from 1 (as Slurm array
tasks and humans count) to N.

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

    def select(self, cells: list[Cell]) -> list[Cell]:
        """This shard's share of the sweep's cells (all of them: the split depends on the whole)."""
        where = assign(cells, self.count)
        return [c for c in cells if where[group_of(c)] == self.index]


#: A shared worker's cells: (model, backend, precision).
Group = tuple[str, str, str]
#: A group's start-up (worker, build, reference) in the cost estimate, in cells.
GROUP_START_COST = 1


def group_of(cell: Cell) -> Group:
    return (cell.model, cell.backend, cell.precision)


def hash_shard(group: Group, count: int) -> int:
    """A group's 1-based starting shard among `count`: stable across machines and sweeps."""
    digest = hashlib.sha256("\x1f".join(group).encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def assign(cells: list[Cell], count: int) -> dict[Group, int]:
    """Every group of `cells` -> its 1-based shard among `count` (see the module docstring)."""
    cost: dict[Group, int] = {}
    for cell in cells:
        cost[group_of(cell)] = cost.get(group_of(cell), GROUP_START_COST) + 1
    where = {group: hash_shard(group, count) for group in sorted(cost)}
    load = [0] * (count + 1)  # by shard number; [0] unused
    for group, shard in where.items():
        load[shard] += cost[group]
    while (move := _best_move(where, cost, load)) is not None:
        group, to = move
        load[where[group]] -= cost[group]
        load[to] += cost[group]
        where[group] = to
    return where


def _best_move(where: dict[Group, int], cost: dict[Group, int], load: list[int]) -> tuple[Group, int] | None:
    """The move of one group that lowers the sum of squared loads the most, or None. Moving c
    from a shard of load a to one of load b lowers it by 2c(a - b - c): only while c < a - b,
    so every move strictly lowers it and the loop ends. Ties go to the first group by name
    and the lowest shard, so every job makes the same moves."""
    best, best_gain = None, 0
    for group, shard in where.items():
        for to in range(1, len(load)):
            gain = cost[group] * (load[shard] - load[to] - cost[group])
            if gain > best_gain:
                best, best_gain = (group, to), gain
    return best


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
