"""What a worker is told about its cell: `WorkerSpec`, written by the runner
(inferbench.sweep.launch) as `work/<key>.spec.json` and read back by the worker
(inferbench.cell.worker).

The file is the spec's `to_dict()` as JSON (`write`), and `from_dict` reads it back (`read`).
All but the cell, its model, how to measure it and the cache folder may be left out (a spec
written by hand, or by an older runner) and take their defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferbench.config import AccuracyConfig, Cell, MeasureConfig, ServeConfig
from inferbench.models import ModelRef
from inferbench.util import atomic_write_json


@dataclass(frozen=True)
class WorkerSpec:
    """One cell's job for a worker process."""

    cell: Cell
    model_ref: ModelRef
    measure: MeasureConfig
    cache_dir: Path
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    options: dict[str, Any] = field(default_factory=dict)  # the backend's options (--backend-option)
    pin_cpus: tuple[int, ...] | None = None  # the cores to pin the worker to, or None
    allow_emulated: bool = False
    # The worker's own deadline (s), for when the runner cannot enforce its own; None: none.
    deadline_s: float | None = None
    # Serve mode's SLO, arrivals and batching policies (read by serve cells only).
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict[str, Any]:
        """The spec as the JSON object the worker reads (`serve` only for a serve cell)."""
        extra = {"serve": asdict(self.serve)} if self.cell.mode == "serve" else {}
        return {
            "cell": asdict(self.cell),
            "model_ref": asdict(self.model_ref),
            "measure": asdict(self.measure),
            "accuracy": asdict(self.accuracy),
            "options": self.options,
            "cache_dir": str(self.cache_dir),
            "pin_cpus": None if self.pin_cpus is None else list(self.pin_cpus),
            "allow_emulated": self.allow_emulated,
            "deadline_s": self.deadline_s,
            **extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerSpec:
        pins = data.get("pin_cpus")
        return cls(
            cell=Cell(**data["cell"]),
            model_ref=ModelRef(**data["model_ref"]),
            measure=MeasureConfig(**data["measure"]),
            cache_dir=Path(data["cache_dir"]),
            accuracy=AccuracyConfig(**data.get("accuracy", {})),
            options=data.get("options", {}),
            pin_cpus=tuple(pins) if pins else None,
            allow_emulated=bool(data.get("allow_emulated")),
            deadline_s=data.get("deadline_s"),
            serve=ServeConfig(**data.get("serve", {})),
        )

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> WorkerSpec:
        return cls.from_dict(json.loads(path.read_text()))
