"""Set-up a cell would otherwise repeat: the FP32 reference outputs of the evaluation set and
the model's FLOP count, cached on disk as content-addressed artifacts.

Both are keyed by what determines them, never by a name: the model's fingerprint (weights,
code, input specs, seed; `inferbench.store.artifacts.model_fingerprint`), the evaluation set's
bytes, the chunking (the cell's batch size: outputs without a batch dimension depend on it)
and the versions of the libraries that computed them. A changed model, seed, evaluation set
or torch version is a different key, so a stale entry is never served; a torn one is rebuilt
(`inferbench.store.artifacts.obtain`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferbench.cell.evaluation import Chunk, run_chunks
from inferbench.store.artifacts import arrays_digest, library_versions, model_fingerprint, obtain

if TYPE_CHECKING:
    from inferbench.models import ModelDef

log = logging.getLogger(__name__)

REFERENCE_FORMAT = 1
OUTPUTS = "outputs.npz"
FLOPS = "flops.json"


def cached_reference(
    model: ModelDef,
    infer: Callable[[Chunk], list[np.ndarray]],
    chunks: list[Chunk],
    samples: int,
    batch_size: int,
    cache_dir: Path,
) -> tuple[list[np.ndarray], bool]:
    """The reference outputs of `chunks` (joined per output), computed by `infer` once per
    key; returns (outputs, from_cache)."""
    parts = {
        "what": "reference-outputs",
        "format": REFERENCE_FORMAT,
        "model": model_fingerprint(model),
        "eval_set": arrays_digest(chunks),
        "samples": samples,
        "batch_size": batch_size,
        "versions": library_versions("torch", "onnxruntime", "numpy"),
    }

    def build(folder: Path) -> None:
        outputs = run_chunks(infer, chunks, samples, batch_size)
        with (folder / OUTPUTS).open("wb") as handle:
            np.savez(handle, *outputs)

    folder, hit = obtain(cache_dir / "references", model.name, parts, build)
    with np.load(folder / OUTPUTS) as stored:
        outputs = [stored[f"arr_{k}"] for k in range(len(stored.files))]
    return outputs, hit


def cached_flops(model: ModelDef, count: Callable[[ModelDef], float | None], cache_dir: Path) -> float | None:
    """FLOPs per sample, counted once per model fingerprint (None is cached too: a model the
    counter cannot trace is not traced again)."""
    parts = {
        "what": "flops",
        "model": model_fingerprint(model),
        "versions": library_versions("torch"),
    }

    def build(folder: Path) -> None:
        (folder / FLOPS).write_text(json.dumps({"flops_per_sample": count(model)}))

    folder, _ = obtain(cache_dir / "flops", model.name, parts, build)
    value: Any = json.loads((folder / FLOPS).read_text())["flops_per_sample"]
    return None if value is None else float(value)
