"""torch-compile in throughput mode: the streams run the graph compiled for them.

Inductor specialises on the intra-op thread count and Dynamo guards on it, so a graph compiled
at the cell's threads and called from stream threads that each run one share of them was
recompiled in every new stream thread (after 8 recompiles Dynamo falls back to eager)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferbench.backends.torch_compile import TorchCompileBackend
from inferbench.models import build_model, resolve_model

pytestmark = pytest.mark.slow


def test_stream_threads_do_not_recompile(tmp_path: Path) -> None:
    import torch
    from torch._dynamo.utils import counters

    threads = torch.get_num_threads()
    torch._dynamo.reset()
    counters.clear()
    model = build_model(resolve_model("mlp"), seed=0)
    backend = TorchCompileBackend(2, tmp_path, mode="throughput", streams=2)
    try:
        info = backend.prepare(model, "fp32", 4)
        assert info.details["compiled_threads"] == 1
        compiled = counters["stats"]["unique_graphs"]
        inputs = [backend.to_native(model.make_inputs(4, k)) for k in range(2)]
        for _ in range(3):  # new stream threads every time, as warm-up slices make them
            run = backend.run_throughput(inputs, 4, 0.05, 4)
            assert run.streams == 2 and len(run.ends_ns) >= 4
        assert counters["stats"]["unique_graphs"] == compiled  # nothing compiled again
    finally:
        backend.close()
        torch.set_num_threads(threads)
        torch._dynamo.reset()


def test_the_row_says_whether_inductor_cache_was_used(tmp_path: Path) -> None:
    """With freezing on CPU torch 2.13 bypasses inductor's caches: a warm cache does not make a
    torch-compile cell cheaper, and its details say which way each graph went."""
    import torch

    torch._dynamo.reset()
    model = build_model(resolve_model("tiny-cnn"), seed=0)
    backend = TorchCompileBackend(1, tmp_path)
    try:
        events = backend.prepare(model, "fp32", 1).details["compile_cache"]
    finally:
        backend.close()
        torch._dynamo.reset()
    assert set(events) <= {
        f"{c}_{e}" for c in ("fx_graph", "aot_autograd") for e in ("hit", "miss", "bypass")
    }
    assert sum(v for k, v in events.items() if k.startswith("fx_graph")) >= 1  # one graph, counted once
