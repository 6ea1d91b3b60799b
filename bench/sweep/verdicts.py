"""Rows decided without starting a worker: the engine is missing, the combination is not
supported, the CPU does not compute the precision natively (inferbench.machine.capability), or
the budget has no time left for the cell."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferbench.config import Cell
from inferbench.machine import capability
from inferbench.machine.peak import emulation_cost
from inferbench.models import ModelRef
from inferbench.status import UNAVAILABLE, UNSUPPORTED

if TYPE_CHECKING:
    from inferbench.sweep.budget import BudgetClock


@dataclass(frozen=True)
class PrecisionCheck:
    """Refuses, before any worker, a precision this CPU does not compute natively for a cell's
    engine (inferbench.machine.capability); an emulated one is measured only when allowed, and its
    reason quotes the slowdown the peak probe measured."""

    cpu: capability.Cpu
    allow_emulated: bool = False
    peaks: dict[int, dict[str, Any] | None] | None = None

    def verdict(self, cell: Cell, backend_cls: Any) -> dict[str, Any] | None:
        found = backend_cls.cpu_support(self.cpu, cell.precision)
        reason = capability.refusal(found, self.allow_emulated, self._cost(cell))
        return {"status": UNSUPPORTED, "reason": reason} if reason else None

    def flag(self, cell: Cell, backend_cls: Any) -> dict[str, Any]:
        """`emulated` for a measured row: True, False, or absent where the model says nothing."""
        found = backend_cls.cpu_support(self.cpu, cell.precision)
        return {} if found is None else {"emulated": found.level == capability.EMULATED}

    def _cost(self, cell: Cell) -> str:
        return emulation_cost((self.peaks or {}).get(cell.threads), cell.precision)


def cpu_for(classes: Iterable[Any]) -> capability.Cpu:
    """This CPU, with the word of each CPU engine in the sweep that reports on itself."""
    engines = tuple({cls.cpu_engine for cls in classes if cls.cpu_engine and cls.device == "cpu"})
    return capability.with_engine_reports(capability.this_cpu(), engines)


def static_verdict(
    cell: Cell,
    ref: ModelRef,
    backend_cls: Any,
    precision_check: PrecisionCheck | None = None,
    budget: BudgetClock | None = None,
) -> dict[str, Any] | None:
    """Rows decided without starting a worker: engine missing, combination not supported, a
    precision this CPU does not compute natively, or no time left in the budget."""
    available = backend_cls.availability()
    if not available.ok:
        return {"status": UNAVAILABLE, "reason": available.reason}
    reason = (
        backend_cls.unsupported_reason(ref, cell.precision)
        or ref.precision_problem(cell.precision)
        or ref.batch_problem(cell.batch_size)
        or ref.shape_problem(cell.shape)
    )
    if reason:
        return {"status": UNSUPPORTED, "reason": reason}
    refused = precision_check.verdict(cell, backend_cls) if precision_check else None
    if refused:
        return refused
    return budget.verdict(cell) if budget else None
