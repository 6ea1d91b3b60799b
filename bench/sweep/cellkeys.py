"""Cell keys where they enter: recomputed from a record's axes, never taken from a file, and
unique within a sweep.

A key names a file (`cells/<key>.json`, `work/`, `logs/`) and joins rows across runs, so a
key that disagrees with its axes, or two cells that share one, would put one measurement in
another's place. `inferbench.config.Cell.key` is the one definition; this module only checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from inferbench.config import CELL_AXES, Cell, SweepConfig, cell_of
from inferbench.errors import UserError
from inferbench.util import one_component

#: The axes that are counts; the others are text. Anything else in a record is refused.
_INT_AXES = frozenset({"batch_size", "threads"})
#: Axes a record from before they existed may lack (`cell_axes` gives their defaults).
_LATER_AXES = frozenset({"mode", "shape"})


def record_key(record: Mapping[str, Any], source: object) -> str:
    """The key of the cell `record` is about, from its axes. A record whose `cell_key` says
    otherwise is refused, naming `source` (the file or agent it came from): a key that was
    edited, or a file copied under another cell, is a record we cannot place, and re-keying it
    would hide that."""
    for axis in CELL_AXES:
        value = record.get(axis)
        wanted = int if axis in _INT_AXES else str
        if value is None and axis in _LATER_AXES:
            continue
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise UserError(f"{source}: not a cell record ({axis} is {value!r})")
    key = cell_of(record).key
    if record.get("cell_key") != key:
        raise UserError(f"{source}: cell_key {record.get('cell_key')!r} does not match its axes ({key!r})")
    return one_component(key, f"{source}: cell key")  # axes can hold a '/' the key keeps


def sweep_cells(config: SweepConfig) -> list[Cell]:
    """The sweep's cells, refused when two of them share a key, naming the values that made
    them: two model references whose names are one key (`exp/model.onnx` and
    `exp_model.onnx`), or thread counts that resolve alike on this machine (0 and 2 on two
    cores)."""
    cells = config.cells()
    given = _given_axes(config)
    seen: dict[str, tuple[Any, ...]] = {}
    for cell, values in zip(cells, given, strict=True):
        first = seen.setdefault(cell.key, values)
        if first is not values:
            raise UserError(f"{_difference(first, values)} would share the cell key {cell.key!r}; drop one")
    return cells


def _given_axes(config: SweepConfig) -> list[tuple[Any, ...]]:
    """Each cell's values as the sweep gave them, in `SweepConfig.cells` order."""
    return list(
        itertools.product(
            config.modes,
            config.models,
            config.backends,
            config.precisions,
            config.batch_sizes,
            config.threads,
            config.shapes,
        )
    )


_GIVEN_NAMES = ("mode", "model", "backend", "precision", "batch size", "threads", "shape")


def _difference(first: tuple[Any, ...], second: tuple[Any, ...]) -> str:
    differ = [
        f"{name} {a!r} and {b!r}" for name, a, b in zip(_GIVEN_NAMES, first, second, strict=True) if a != b
    ]
    return ", ".join(differ) or "two cells"
