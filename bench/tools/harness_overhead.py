"""Harness overhead (`crosscheck --overhead`): on `mlp` (microseconds per call), our timed loop
through each backend against the bare engine call in a tight loop, and our loop around a no-op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from inferbench.cell.measure import backend_iteration, measure
from inferbench.config import MeasureConfig
from inferbench.sweep.runner import default_cache_dir
from inferbench.tools.ort_loop import bare_loop


def harness_overhead(seconds: float) -> list[dict[str, Any]]:
    """Per-call cost our loop and backend wrappers add on `mlp` (batch 1, one thread)."""
    from inferbench.backends import load_backend
    from inferbench.models import build_model, resolve_model

    config = MeasureConfig(min_seconds=seconds, max_seconds=seconds * 2, tail_samples=1000)
    model = build_model(resolve_model("mlp"), seed=0)
    noop = measure(lambda i: None, config)
    rows: list[dict[str, Any]] = [
        {"backend": "(no-op)", "harness_p50_us": float(np.median(noop.latencies_ns)) / 1e3}
    ]
    for name in ("torch", "onnxruntime", "openvino"):
        if load_backend(name).availability().ok:
            rows.append(_overhead(name, model, config, seconds))
    return rows


def _overhead(name: str, model: Any, config: MeasureConfig, seconds: float) -> dict[str, Any]:
    import torch

    from inferbench.backends import load_backend

    backend = load_backend(name)(1, default_cache_dir())
    backend.prepare(model, "fp32", 1)
    natives = [backend.to_native(model.make_inputs(1, k)) for k in range(4)]

    # The sweep's own iteration and engine-time reading, so the overhead is the sweep's.
    ours = measure(
        backend_iteration(backend, natives), config, engine_time=backend.engine_time_ns
    ).latencies_ns
    with torch.inference_mode():
        bare = bare_loop(_bare_engine_call(name, backend, model), seconds)
    backend.close()
    ours_us, bare_us = float(np.median(ours)) / 1e3, float(np.median(bare)) / 1e3
    return {
        "backend": name,
        "harness_p50_us": ours_us,
        "bare_p50_us": bare_us,
        "overhead_us": ours_us - bare_us,
    }


def _bare_engine_call(name: str, backend: Any, model: Any) -> Callable[[int], Any]:
    """The engine called directly, inputs prepared once: what a hand-written loop would do."""
    inputs = [model.make_inputs(1, k) for k in range(4)]
    if name == "torch":
        import torch

        tensors = [tuple(torch.from_numpy(x[n]) for n in model.input_names) for x in inputs]
        return lambda i: backend.module(*tensors[i % 4])  # inference mode entered once, outside
    if name == "onnxruntime":
        return lambda i: backend.session.run(None, inputs[i % 4])
    request = backend.request  # openvino: tensors set once, as benchmark_app's inference-only loop
    request.set_input_tensor(0, backend.to_native(inputs[0])[0])
    return lambda i: request.infer()
