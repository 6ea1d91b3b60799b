"""ONNX Runtime's fastest Python loop, alone in a fresh process: the crosscheck's ORT reference.

`python -m inferbench.tools.ort_loop MODEL ONNX_FILE BATCH THREADS SECONDS INPUT_SETS` prints one JSON
line: the per-call median (ms), samples/s and the number of calls of a bare
`run_with_iobinding` loop, with the session options our backend uses and our input sets.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def bare_loop(call: Callable[[int], Any], seconds: float, warmup: int = 20) -> list[int]:
    """Per-call times of `call` in the tightest loop Python allows (after a short warm-up)."""
    for i in range(warmup):
        call(i)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + seconds * 1e9
    i = 0
    while True:
        t0 = clock()
        call(i)
        t1 = clock()
        latencies.append(t1 - t0)
        i += 1
        if t1 > end:
            return latencies


def iobinding_loop(
    model_name: str, onnx_path: str, batch: int, threads: int, seconds: float, sets: int
) -> dict[str, float]:
    import onnxruntime as ort

    from inferbench.backends.onnxruntime import session_options
    from inferbench.models import build_model, resolve_model

    model = build_model(resolve_model(model_name), seed=0)
    session = ort.InferenceSession(onnx_path, session_options(threads), providers=["CPUExecutionProvider"])
    bindings = []
    for k in range(sets):  # the worker's timed input seeds
        binding = session.io_binding()
        for name, array in model.make_inputs(batch, k).items():
            binding.bind_cpu_input(name, array)
        for output in session.get_outputs():
            binding.bind_output(output.name)
        bindings.append(binding)
    latencies = bare_loop(lambda i: session.run_with_iobinding(bindings[i % sets]), seconds)
    return {
        "p50_ms": float(np.median(latencies)) / 1e6,
        "sps": batch * len(latencies) / (sum(latencies) / 1e9),
        "calls": len(latencies),
    }


def main(argv: Sequence[str]) -> int:
    model, path, batch, threads, seconds, sets = argv
    print(json.dumps(iobinding_loop(model, path, int(batch), int(threads), float(seconds), int(sets))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
