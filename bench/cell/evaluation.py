"""The accuracy check of a cell: a fixed evaluation set against an FP32 reference.

Every cell is checked on the same `eval_samples` samples, whatever its batch size: the set is
drawn once (from the model's evaluation pool, with its own seed) and run in chunks of the
cell's batch size, the last chunk topped up by wrapping around and its extra outputs dropped.
So at batch 1 the check rests on N samples, not on one, and `top1_agreement` is a fraction.

The reference is FP32 eager PyTorch for torch models and ONNX Runtime FP32 on the CPU for
ONNX-file models; where neither exists the cell is `accuracy_checked = False`. The reference
outputs are computed once per model fingerprint, evaluation set and chunking, and cached on
disk (`inferbench.cell.refcache`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from inferbench.models import ModelDef

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1000  # evaluation inputs differ from the timed ones

Chunk = dict[str, np.ndarray]


def evaluation_chunks(model: ModelDef, samples: int, batch_size: int, seed: int) -> list[Chunk]:
    """The evaluation set of `samples` samples in chunks of `batch_size` (last one wrapped),
    each input cut along its own batch axis; an input without one (a scalar, the user's
    constant) goes whole into every chunk. A model with no batch axis at all gets `samples`
    separate input sets instead."""
    axes = {spec.name: spec.batch_axis for spec in model.inputs}
    if model.inputs and all(axis is None for axis in axes.values()):
        offset = seed + EVAL_SEED_OFFSET
        return [model.make_inputs(batch_size, offset + k, purpose="evaluation") for k in range(samples)]
    full = model.make_inputs(samples, seed + EVAL_SEED_OFFSET, purpose="evaluation")
    count = -(-samples // batch_size)
    order = np.arange(count * batch_size) % samples

    def cut(name: str, array: np.ndarray, k: int) -> np.ndarray:
        axis = axes.get(name, 0)
        if axis is None:
            return array
        return np.take(array, order[k * batch_size : (k + 1) * batch_size], axis=axis)

    return [{name: cut(name, array, k) for name, array in full.items()} for k in range(count)]


def gather(per_chunk: list[list[np.ndarray]], samples: int, batch_size: int) -> list[np.ndarray]:
    """Chunk outputs joined per output, the wrap-around padding dropped. Outputs without a
    leading batch dimension are compared whole (padding included on both sides alike)."""
    joined = []
    for index in range(len(per_chunk[0])):
        parts = [np.asarray(chunk[index], dtype=np.float32) for chunk in per_chunk]
        if all(p.ndim and p.shape[0] == batch_size for p in parts):
            joined.append(np.concatenate(parts)[:samples])
        else:
            joined.append(np.concatenate([p.ravel() for p in parts]))
    return joined


def run_chunks(
    infer: Callable[[Chunk], list[np.ndarray]], chunks: list[Chunk], samples: int, batch_size: int
) -> list[np.ndarray]:
    return gather([infer(chunk) for chunk in chunks], samples, batch_size)


def reference_infer(model: ModelDef, threads: int) -> Callable[[Chunk], list[np.ndarray]] | None:
    """FP32 reference for one chunk: eager torch, or ONNX Runtime FP32 CPU for an ONNX file;
    None when neither is available (the cell is then not accuracy-checked)."""
    if model.module is not None:
        import torch

        module = model.module

        def eager(chunk: Chunk) -> list[np.ndarray]:
            with torch.inference_mode():
                out = module(*(torch.from_numpy(chunk[n]) for n in model.input_names))
            outs = out if isinstance(out, list | tuple) else [out]
            return [o.float().numpy().copy() for o in outs]

        return eager
    # A model that arrives quantized is checked against the user's FP32 model, never itself.
    reference = model.reference_path if model.graph_precision else model.onnx_path
    if reference is not None and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        from inferbench.backends.onnxruntime import session_options

        session = ort.InferenceSession(
            str(reference), session_options(threads), providers=["CPUExecutionProvider"]
        )

        def onnx_reference(chunk: Chunk) -> list[np.ndarray]:
            return [np.asarray(o) for o in session.run(None, chunk)]

        return onnx_reference
    log.warning("no FP32 reference for %s: accuracy is not checked", model.name)
    return None


def engine_infer(backend: Any) -> Callable[[Chunk], list[np.ndarray]]:
    def infer(chunk: Chunk) -> list[np.ndarray]:
        outputs = backend.run(backend.to_native(chunk))
        backend.synchronize()
        return list(backend.to_numpy(outputs))

    return infer
