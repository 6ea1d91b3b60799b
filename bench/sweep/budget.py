"""`--budget 15m`: plan a sweep to fit a time budget, and say what did not fit.

Each cell's wall time is estimated from history: the median `wall_s` of the same cell in
earlier runs under the results folder (and this run), else of the same model and backend (any
precision, batch, mode), else of the same model, else of the same backend, else of any cell,
else a fixed guess. Cells are then taken in an order
that answers the most with the least: every model's batch-1 latency cells first, larger
batches next, throughput mode last, eager FP32 first within each group (it is what speed-ups
are measured against). The cells that fit run first; the rest follow in that order, each
estimated again from this run's own timings (a fresh clone has no history, and the fixed guess
is far off), and run while they fit. With no history at all and nothing planned, the first cell
runs anyway, as the probe the estimates start from. A cell is skipped when its estimate would carry the sweep
past the budget, so the total stays close to it. Cells that do not fit are not dropped: they
become rows with status `skipped` and the estimate that kept them out.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferbench.config import Cell
from inferbench.errors import UserError
from inferbench.status import MEASURED, SKIPPED
from inferbench.store import runfolder

#: Seconds assumed for a cell that nothing in history resembles.
DEFAULT_CELL_SECONDS = 30.0
#: A planned cell still starts if its estimate ends within this factor of the budget.
BUDGET_SLACK = 1.05
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
#: All the planner needs of a past run: the results.csv columns it reads.
_HISTORY_COLUMNS = ("cell_key", "model", "backend", "wall_s")

logger = logging.getLogger(__name__)


def parse_budget(text: str) -> float:
    """'15m', '90s', '1h30m' or a number of seconds -> seconds."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise UserError(f"budget must look like 15m, 90s or 1h30m; got {text!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"budget must be positive; got {text!r}")
    return seconds


@dataclass
class History:
    """Median wall time per cell key, per (model, backend), per model, per backend, and over
    every cell."""

    by_key: dict[str, float] = field(default_factory=dict)
    by_model_backend: dict[tuple[str, str], float] = field(default_factory=dict)
    by_model: dict[str, float] = field(default_factory=dict)
    by_backend: dict[str, float] = field(default_factory=dict)
    any_cell: float | None = None

    @classmethod
    def from_records(cls, records: Iterable[dict[str, object]]) -> History:
        groups: dict[str, dict[Any, list[float]]] = {
            name: defaultdict(list) for name in ("key", "pair", "model", "backend")
        }
        walls: list[float] = []
        for record in records:
            wall = record.get("wall_s")
            # NaN is what an empty wall_s cell of results.csv reads as.
            if not isinstance(wall, int | float) or not math.isfinite(wall) or wall <= 0:
                continue
            model, backend = str(record.get("model")), str(record.get("backend"))
            groups["key"][str(record.get("cell_key"))].append(float(wall))
            groups["pair"][(model, backend)].append(float(wall))
            groups["model"][model].append(float(wall))
            groups["backend"][backend].append(float(wall))
            walls.append(float(wall))
        medians = {name: {k: statistics.median(v) for k, v in g.items()} for name, g in groups.items()}
        return cls(
            medians["key"],
            medians["pair"],
            medians["model"],
            medians["backend"],
            statistics.median(walls) if walls else None,
        )

    @classmethod
    def from_results_dir(cls, results_dir: Path) -> History:
        return cls.from_records(cls.records_in(results_dir))

    @staticmethod
    def records_in(results_dir: Path) -> list[dict[str, object]]:
        """The `results.csv` of every run folder under `results_dir`: four columns of one
        small table per run, where the cell files would be read whole (raw latencies and
        all). A folder whose table cannot be read is skipped: a plan is an estimate, never
        a reason for a sweep to fail."""
        records: list[dict[str, object]] = []
        for run_dir in runfolder.run_dirs(results_dir):
            try:
                table = runfolder.read_csv(run_dir, columns=_HISTORY_COLUMNS)
            except (UserError, OSError, ValueError) as exc:  # pandas' parse errors are ValueErrors
                logger.debug("budget history: skipping %s: %s", run_dir, exc)
                continue
            records.extend(table.to_dict("records"))
        return records

    def estimate(self, cell: Cell) -> tuple[float, str]:
        """Seconds for the cell, and where the figure came from."""
        if cell.key in self.by_key:
            return self.by_key[cell.key], "this cell"
        if (cell.model, cell.backend) in self.by_model_backend:
            return self.by_model_backend[(cell.model, cell.backend)], "same model and backend"
        if cell.model in self.by_model:  # a model's size moves a cell's time more than its engine
            return self.by_model[cell.model], "same model"
        if cell.backend in self.by_backend:
            return self.by_backend[cell.backend], "same backend"
        if self.any_cell is not None:
            return self.any_cell, "any cell"
        return DEFAULT_CELL_SECONDS, "no history"


@dataclass(frozen=True)
class Plan:
    selected: list[Cell]
    skipped: list[Cell]
    estimates: dict[str, float]
    budget_s: float

    @property
    def planned_s(self) -> float:
        return sum(self.estimates[c.key] for c in self.selected)


def _priority(cell: Cell) -> tuple[int, int, int]:
    eager_fp32 = cell.backend == "torch" and cell.precision == "fp32"
    return (cell.mode != "latency", cell.batch_size, not eager_fp32)


def plan_sweep(cells: list[Cell], history: History, budget_s: float) -> Plan:
    """Cells that fit in `budget_s` by their estimates (in the sweep's own order), and the rest."""
    estimates = {c.key: history.estimate(c)[0] for c in cells}
    chosen: set[str] = set()
    spent = 0.0
    for cell in sorted(cells, key=_priority):
        if spent + estimates[cell.key] <= budget_s:
            chosen.add(cell.key)
            spent += estimates[cell.key]
    selected = [c for c in cells if c.key in chosen]
    skipped = [c for c in cells if c.key not in chosen]
    return Plan(selected, skipped, estimates, budget_s)


def skipped_reason(estimate_s: float, budget_s: float, source: str) -> str:
    return (
        f"does not fit the {budget_s / 60:g} min budget with the time left "
        f"(estimated {estimate_s:.0f} s, from {source})"
    )


class BudgetClock:
    """The runner's side of `--budget`: the plan, then the clock, learning as it goes.

    The planned cells run first. A planned cell is skipped when its estimate no longer fits
    in the time left (earlier cells ran long). The cells the plan left out are not given up:
    they come after the planned ones, in the plan's order of priority, each estimated again
    from what this run has measured so far (with no history, every first estimate is the
    fixed guess, usually far too high or too low), and run while they fit. What still does
    not fit becomes a `skipped` row with its estimate."""

    def __init__(
        self,
        cells: list[Cell],
        results_dir: Path,
        budget_s: float,
        clock: Any = None,
        started: float | None = None,
    ) -> None:
        self.clock = clock or time.monotonic
        self.started = self.clock() if started is None else started
        self.budget_s = budget_s
        self._past = History.records_in(results_dir)
        self._measured: list[dict[str, object]] = []
        self.history = History.from_records(self._past)
        self.plan = plan_sweep(cells, self.history, budget_s)
        self._left_out = {c.key for c in self.plan.skipped}

    def split(self, cells: list[Cell]) -> tuple[list[Cell], list[Cell]]:
        """`cells` (the runner's order) as the planned ones, in that order, and the plan's
        left-out ones in priority order, to run after them: by the time they come up, this
        run's own timings estimate them."""
        later = sorted((c for c in cells if c.key in self._left_out), key=_priority)
        return [c for c in cells if c.key not in self._left_out], later

    def learn(self, cell: Cell, record: dict[str, Any]) -> None:
        """A measured cell's wall time, for the estimates of the cells still to come. A failed
        cell's time (a timeout's is the timeout) says nothing about the next cell's."""
        if record.get("status") not in MEASURED:
            return
        self._measured.append(
            {
                "cell_key": cell.key,
                "model": cell.model,
                "backend": cell.backend,
                "wall_s": record.get("wall_s"),
            }
        )
        self.history = History.from_records([*self._past, *self._measured])

    def verdict(self, cell: Cell) -> dict[str, Any] | None:
        """None: run the cell; else its `skipped` row."""
        estimate, source = self.history.estimate(cell)
        spent = self.clock() - self.started
        if spent + estimate <= self.budget_s * BUDGET_SLACK:
            return None
        if source == "no history" and not self._measured and spent < self.budget_s:
            return None  # the probe: nothing to go on but the fixed guess, so measure one cell
        return {"status": SKIPPED, "reason": skipped_reason(estimate, self.budget_s, source)}
