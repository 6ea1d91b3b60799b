"""`--budget 15m`: plan a sweep to fit a time budget, and say what did not fit.

Each cell's wall time is estimated from history: the median `wall_s` of the same cell in
earlier runs under the results folder, else of the same model and backend (any precision,
batch, mode), else of the same backend, else a fixed guess. Cells are then taken in an order
that answers the most with the least: every model's batch-1 latency cells first, larger
batches next, throughput mode last, eager FP32 first within each group (it is what speed-ups
are measured against). Cells that do not fit are not dropped: they become rows with status
`skipped` and the estimate that kept them out. While the sweep runs, the runner also skips a
cell whose estimate would carry it past the budget, so the total stays close to it.
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

from inferbench import storage
from inferbench.config import Cell
from inferbench.errors import UserError
from inferbench.status import SKIPPED

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
    """Median wall time per cell key, per (model, backend) and per backend."""

    by_key: dict[str, float] = field(default_factory=dict)
    by_model_backend: dict[tuple[str, str], float] = field(default_factory=dict)
    by_backend: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, object]]) -> History:
        keys: dict[str, list[float]] = defaultdict(list)
        pairs: dict[tuple[str, str], list[float]] = defaultdict(list)
        backends: dict[str, list[float]] = defaultdict(list)
        for record in records:
            wall = record.get("wall_s")
            # NaN is what an empty wall_s cell of results.csv reads as.
            if not isinstance(wall, int | float) or not math.isfinite(wall) or wall <= 0:
                continue
            keys[str(record.get("cell_key"))].append(float(wall))
            pairs[(str(record.get("model")), str(record.get("backend")))].append(float(wall))
            backends[str(record.get("backend"))].append(float(wall))
        return cls(
            {k: statistics.median(v) for k, v in keys.items()},
            {k: statistics.median(v) for k, v in pairs.items()},
            {k: statistics.median(v) for k, v in backends.items()},
        )

    @classmethod
    def from_results_dir(cls, results_dir: Path) -> History:
        """The `results.csv` of every run folder under `results_dir`: four columns of one
        small table per run, where the cell files would be read whole (raw latencies and
        all). A folder whose table cannot be read is skipped: a plan is an estimate, never
        a reason for a sweep to fail."""
        records: list[dict[str, object]] = []
        for run_dir in storage.run_dirs(results_dir):
            try:
                table = storage.read_csv(run_dir, columns=_HISTORY_COLUMNS)
            except (UserError, OSError, ValueError) as exc:  # pandas' parse errors are ValueErrors
                logger.debug("budget history: skipping %s: %s", run_dir, exc)
                continue
            records.extend(table.to_dict("records"))
        return cls.from_records(records)

    def estimate(self, cell: Cell) -> tuple[float, str]:
        """Seconds for the cell, and where the figure came from."""
        if cell.key in self.by_key:
            return self.by_key[cell.key], "this cell"
        if (cell.model, cell.backend) in self.by_model_backend:
            return self.by_model_backend[(cell.model, cell.backend)], "same model and backend"
        if cell.backend in self.by_backend:
            return self.by_backend[cell.backend], "same backend"
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


def skipped_reason(estimate_s: float, budget_s: float, *, at_run_time: bool = False) -> str:
    when = "with the time left" if at_run_time else "in the plan"
    return f"does not fit the {budget_s / 60:g} min budget {when} (estimated {estimate_s:.0f} s)"


class BudgetClock:
    """The runner's side of `--budget`: the plan's verdicts, then the clock's.

    Cells the plan left out are `skipped` at once. A planned cell is skipped too when its
    estimate no longer fits in the time left (earlier cells ran long); a cell that ran shorter
    than estimated leaves its time to the next ones."""

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
        self.plan = plan_sweep(cells, History.from_results_dir(results_dir), budget_s)
        self._left_out = {c.key for c in self.plan.skipped}

    def verdict(self, cell: Cell) -> dict[str, Any] | None:
        estimate = self.plan.estimates[cell.key]
        if cell.key in self._left_out:
            return {"status": SKIPPED, "reason": skipped_reason(estimate, self.budget_s)}
        if self.clock() - self.started + estimate > self.budget_s * BUDGET_SLACK:
            return {"status": SKIPPED, "reason": skipped_reason(estimate, self.budget_s, at_run_time=True)}
        return None
