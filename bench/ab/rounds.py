"""Which rounds `inferbench ab` runs: over every open cell, one worker per side (or
`--processes N`, the sides alternating process by process), until each cell is decided, has run
the most rounds or the budget has no room for another round.

A cell is looked at after the rounds of its sequential design (`inferbench.compare.sequential`) and
judged there as the final table judges it (`inferbench.ab.core.paired_rows`), with every cell in the
family, so the loop never stops a cell on an answer the table would not give.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferbench.ab.calibration import CellNoise, cell_noise
from inferbench.ab.core import SIDES, AbOptions, Events, Launch, clean_pairs, round_order, verdict_rows
from inferbench.compare.core import judge
from inferbench.compare.sequential import Looks, add_look, look_due
from inferbench.compare.verdict import INCONCLUSIVE
from inferbench.status import MEASURED, OK
from inferbench.sweep.repeats import merge_repeats

#: The share of `--budget` no round may use: kept for the last look and the outputs (compare.md,
#: the HTML page, each side's run folder) and for a last round slower than the one before. Without
#: it a 10-minute gate on a 2-vCPU VM ended at 10.1-10.2 minutes.
BUDGET_RESERVE = 0.02

#: Why a cell stopped (`Rounds.stopped`).
DECIDED, NOT_OK, MOST_ROUNDS, BUDGET = "decided", "a side not ok", "most rounds", "budget"


@dataclass
class Rounds:
    """The rounds of a run: every record per cell and side, each cell's sequential looks
    (clean rounds, spending time), and why each cell stopped."""

    results: dict[str, dict[str, list[dict[str, Any]]]]
    looks: dict[str, Looks]
    stopped: dict[str, str] = field(default_factory=dict)

    def clean_rounds(self, key: str) -> int:
        return len(clean_pairs(self.results[key]))


def interleave(
    cell_keys: list[str], rounds: int, launch: Launch, on_result: Events | None = None
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Run every cell K rounds, nothing judged on the way (a fixed design; `run_rounds` stops
    the cells it has decided)."""
    return run_rounds(cell_keys, AbOptions(rounds=rounds), launch, on_result).results


def run_rounds(
    cell_keys: list[str],
    options: AbOptions,
    launch: Launch,
    on_result: Events | None = None,
    *,
    cells: dict[str, dict[str, Any]] | None = None,
    on_stop: Callable[[str, int, str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
) -> Rounds:
    """Rounds over the open cells, one fresh worker per side per cell, until none is open, the
    most rounds are run or the next round would not fit the budget less BUDGET_RESERVE
    (counted from `started`, default now). A cell stops once either side is not ok
    (unavailable, unsupported, error, accuracy-fail, ...: its verdict is the status change)
    and, when `cells` are given, once `paired_rows` decides its gating metrics at its latest
    look. A cell still open at the end gets a last look that spends what is left of alpha."""
    start = clock() if started is None else started
    deadline = start + options.budget_s * (1 - BUDGET_RESERVE) if options.budget_s else math.inf
    run = Rounds({k: {s: [] for s in SIDES} for k in cell_keys}, {k: () for k in cell_keys})
    open_keys, pair_s = list(cell_keys), dict.fromkeys(cell_keys, 0.0)

    def stop(keys: list[str], why: str, done: int) -> None:
        for key in keys:
            run.stopped[key] = why
            if on_stop is not None:
                on_stop(key, done, why)

    for r in range(options.rounds):
        for key in open_keys:
            before = clock()
            _run_pair(run.results[key], key, r, launch, on_result, options.processes)
            pair_s[key] = clock() - before
        broken = [k for k in open_keys if any(run.results[k][s][-1]["status"] != OK for s in SIDES)]
        stop(broken, NOT_OK, r + 1)
        open_keys = [k for k in open_keys if k not in broken]
        if cells is None:
            continue
        # Spending time: rounds run, or time used, whichever is further; neither is the cell's data.
        used = (clock() - start) / options.budget_s if options.budget_s else 0.0
        _look(run, open_keys, max((r + 1) / options.rounds, used))
        decided = _decided(run, open_keys, cells, options)
        stop(decided, DECIDED, r + 1)
        open_keys = [k for k in open_keys if k not in decided]
        last = r + 1 == options.rounds
        if open_keys and (last or clock() + sum(pair_s[k] for k in open_keys) > deadline):
            _look(run, open_keys, 1.0, final=True)
            stop(open_keys, MOST_ROUNDS if last else BUDGET, r + 1)
            break
    return run


def _run_pair(
    by_side: dict[str, list[dict[str, Any]]],
    key: str,
    r: int,
    launch: Launch,
    on_result: Events | None,
    processes: int = 1,
) -> None:
    pooled = pair_processes(key, r, launch, processes)
    for side in round_order(r):
        by_side[side].append(pooled[side])
        if on_result is not None:
            on_result(side, key, r, pooled[side])


def pair_processes(key: str, r: int, launch: Launch, processes: int = 1) -> dict[str, dict[str, Any]]:
    """One round of a cell: `processes` workers per side, the sides alternating process by
    process (the round's order, then the other: AB BA AB ...), each side's pooled into one record
    (`merge_repeats`: the fastest call of all, the median of all calls). Alternating puts a slow
    stretch of the machine, seconds long, on both sides: run back to back, one side's three
    processes could share it whole (a round's fastest call 50% off on one side, seen on a 2-vCPU
    VM). A side whose process did not measure runs no more processes that round."""
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    for p in range(processes):
        for side in round_order(r + p):
            done = records[side]
            if not done or done[-1]["status"] in MEASURED:
                done.append(launch(side, key, r))
    return {side: merge_repeats(done, int(done[0].get("batch_size") or 1)) for side, done in records.items()}


def _look(run: Rounds, keys: list[str], tau: float, final: bool = False) -> None:
    """A look at each cell that is due one (`look_due`), or at every cell for the last one."""
    for key in keys:
        rounds = run.clean_rounds(key)
        if final or look_due(run.looks[key], rounds):
            run.looks[key] = add_look(run.looks[key], rounds, tau)


def _decided(run: Rounds, keys: list[str], cells: dict[str, dict[str, Any]], options: AbOptions) -> list[str]:
    """The open cells whose every gating metric is decided at its latest look (judged with all
    cells, so that the family, and with it each test's share of alpha, stays the same)."""
    table = verdict_rows(run.results, cells, options, (), run.looks)
    frame = judge(table.rows, table.estimates, options.compare, table.looks)
    if frame.empty:
        return []
    gating = frame["gating"].to_numpy()
    undecided = (frame["verdict"] == INCONCLUSIVE).to_numpy()
    owners = np.asarray(table.owners, dtype=object)
    return [k for k in keys if (owners[gating] == k).any() and not (undecided & gating & (owners == k)).any()]


def aa_rounds(
    cell_keys: list[str],
    rounds: int,
    launch: Launch,
    on_result: Events | None = None,
    clock: Callable[[], float] = time.monotonic,
    processes: int = 1,
) -> dict[str, CellNoise]:
    """The A/A pre-run (`ab --calibrate`): every cell `rounds` times, each round a pair of the
    base side against itself as the A/B rounds run it (`processes` workers a side, alternating),
    then each cell's noise (`inferbench.ab.calibration.cell_noise`) from the rounds neither side
    was disturbed in. Rounds go over all cells, as the A/B rounds do. They are numbered from 1,
    so no process repeats round 0's full accuracy check."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {k: {s: [] for s in SIDES} for k in cell_keys}
    seconds = dict.fromkeys(cell_keys, 0.0)

    def base_only(_label: str, key: str, r: int) -> dict[str, Any]:  # both "sides" are the base
        return launch("base", key, r)

    for r in range(1, rounds + 1):
        for key in cell_keys:
            before = clock()
            pooled = pair_processes(key, r, base_only, processes)
            for side in SIDES:
                results[key][side].append(pooled[side])
                if on_result is not None:
                    on_result(f"A/A {side}", key, r - 1, pooled[side])
            seconds[key] += clock() - before
    return {k: cell_noise(clean_pairs(results[k]), seconds[k] / rounds) for k in cell_keys}
