"""`torch.compile` with the inductor backend; compilation happens (and is timed) in prepare.

BF16 compiles under autocast. INT8 is static post-training quantization through PT2E with
torchao's X86InductorQuantizer (int8 activations and per-channel int8 weights, calibrated on
the model's own inputs), lowered by inductor to oneDNN int8 kernels. Every pattern the
quantizer knows is quantized; nothing is excluded. Two upstream limits are worked around,
and the row's details say which way the graph was exported (`export`, `dead_nodes_removed`):
a module instance called at several places (pytorch/ao#4478) is exported strictly, and dead
nodes are dropped before quantization.

Inductor's on-disk cache (kernels it dlopens, graphs it unpickles) is under a manifest like
every artifact: files it does not vouch for are removed before a compile reads the cache, and
what the compile wrote is listed after (`inferbench.store.engine_caches.guarded_folder`).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from inferbench.backends.base import PrepareInfo
from inferbench.backends.lowp import pt2e_share, torch_dispatch_share
from inferbench.backends.torch_eager import TorchBackend
from inferbench.errors import BackendError, UnsupportedError, first_line
from inferbench.store.engine_caches import guarded_folder

if TYPE_CHECKING:
    from inferbench.models import ModelDef


class TorchCompileBackend(TorchBackend):
    name = "torch-compile"
    precision_notes: ClassVar[dict[str, str]] = {
        "bf16": "autocast, compiled",
        "int8": "PT2E static quantization (torchao X86InductorQuantizer), compiled",
    }
    eager_module: Any = None  # what was compiled (the PT2E-converted graph for int8)
    quantized_graph: Any = None
    dynamic_int8 = False  # PT2E static int8 quantizes convolutions too
    variable_batch = False  # compiled with dynamic=False: another batch size recompiles

    def _prepare_module(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        import torch
        import torch._inductor.config as inductor_config

        # Freezing folds weights into constants and lets inductor pre-pack them for oneDNN:
        # the setting PyTorch recommends for CPU inference.
        inductor_config.freezing = True
        details: dict[str, Any] = {"mode": "inductor, freezing, dynamic=False"}
        module = model.module
        if precision == "bf16":
            self.autocast = True
            details["mode"] += ", autocast bf16"
        elif precision == "int8":
            module, how = self._pt2e_int8(model, batch_size)
            self.quantized_graph = module
            details["mode"] += ", PT2E static int8 (X86InductorQuantizer)"
            details["calibration_samples"] = self.calibration_samples
            details.update(how)
        self.eager_module = module
        if self.mode == "throughput":
            # Inductor specialises the graph on the intra-op thread count and Dynamo guards on
            # it: compiled at the cell's threads and called from streams running one share of
            # them each, every stream thread recompiled (and after 8 recompiles Dynamo falls
            # back to eager without a word). So a throughput cell compiles, checks accuracy and
            # runs at the streams' thread count.
            torch.set_num_threads(self.threads_per_stream())
            details["compiled_threads"] = self.threads_per_stream()
        self.module = torch.compile(module, backend="inductor", dynamic=False)
        # torch.compile is lazy: run once so the compile lands in prepare time, not in the
        # first-inference latency. The example must be made like the timed inputs (outside
        # inference_mode): an inference tensor here fails a dispatch-key guard later and
        # recompiles on the first timed call.
        with _inductor_cache(self.cache_dir) as removed:
            before = _cache_events()
            self.run(self.to_native(model.make_inputs(batch_size, model.seed)))
            details["compile_cache"] = _cache_events(since=before)
        if removed:
            details["inductor_cache_removed"] = len(removed)
        return PrepareInfo(engine_precision=precision, details=details)

    def _pt2e_int8(self, model: ModelDef, batch_size: int) -> tuple[Any, dict[str, Any]]:
        if importlib.util.find_spec("torchao") is None:
            raise UnsupportedError("int8 needs torchao's PT2E quantizer: pip install 'inferbench[torchao]'")
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        example = self.to_native(model.make_inputs(batch_size, model.seed))
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        try:
            prepared, how = _prepare(model.module, example, quantizer, strict=False)
        except QuantizerPatternError as first:
            # Non-strict export (torch's default) puts every call site of one module instance in
            # one source partition; the quantizer's conv/linear fusion matcher then sees a
            # partition with several outputs and gives up (pytorch/ao#4478, fixed for Linear
            # only in pytorch/ao#4480). ResNet's blocks call one ReLU module three times.
            # Strict export gives each call site its own partition.
            try:
                prepared, how = _prepare(model.module, example, quantizer, strict=True)
            except QuantizerPatternError as exc:
                raise BackendError(f"{first}; strict export: {exc}") from exc
        # The exported graph is specialised to the cell's batch size: calibrate in batches of it.
        with torch.no_grad():
            for batch in self.calibration_batches(model, batch_size):
                prepared(*self.to_native(batch))
        return convert_pt2e(prepared), how

    def observed_lowp(self, inputs: Any, precision: str) -> tuple[float | None, dict[str, Any]]:
        """int8: the FLOP share of the compute nodes of the PT2E graph handed to inductor whose
        operands come through dequantize nodes (inductor lowers those to oneDNN int8 kernels).
        bf16: the FLOP share of the eager module's compute under the same autocast that
        dynamo traces (the compiled code itself is not inspected)."""
        if precision == "int8":
            share, gflops = pt2e_share(self.quantized_graph)
            return share, {"basis": "FLOPs of PT2E compute nodes with dequantized operands", "gflops": gflops}
        import torch

        def eager() -> None:
            with torch.inference_mode(), self._context():
                self.eager_module(*inputs)

        share, gflops = torch_dispatch_share(eager, precision)
        return share, {
            "basis": "FLOPs of the eager module's compute under the same autocast",
            "gflops": gflops,
        }


@contextlib.contextmanager
def _inductor_cache(cache_dir: Path) -> Iterator[list[str]]:
    """The compile under `guarded_folder` when inductor's cache is inferbench's own (the worker
    points TORCHINDUCTOR_CACHE_DIR at <cache>/inductor); a cache elsewhere (a user's shared
    /tmp/torchinductor_<user>) is not ours to prune, and is left alone."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_dir

    folder = Path(inductor_dir())
    if folder.resolve() != (Path(cache_dir) / "inductor").resolve():
        yield []
        return
    with guarded_folder(folder) as removed:
        yield removed


def _cache_events(since: dict[str, int] | None = None) -> dict[str, int]:
    """inductor's FX-graph cache and AOTAutograd's cache: hits, misses and bypasses (counted
    since `since`). With freezing on CPU, torch 2.13 bypasses both ("Cannot cache a graph with
    freezing enabled"; "mkldnn tensors unpickleable" once weights are pre-packed for oneDNN),
    so every cell compiles from scratch, warm cache or not; the row says so."""
    from torch._dynamo.utils import counters

    now = {
        f"{name}_{event}": counters[group][f"{prefix}_{event}"]
        for group, prefix, name in (
            ("inductor", "fxgraph_cache", "fx_graph"),
            ("aot_autograd", "autograd_cache", "aot_autograd"),
        )
        for event in ("hit", "miss", "bypass")
    }
    since = since or {}
    counted = {k: v - since.get(k, 0) for k, v in now.items()}
    return {k: v for k, v in counted.items() if v}


class QuantizerPatternError(Exception):
    """torchao's X86InductorQuantizer rejected the exported graph."""


def _prepare(module: Any, example: Any, quantizer: Any, *, strict: bool) -> tuple[Any, dict[str, Any]]:
    """Export `module`, drop dead nodes and insert observers; returns the prepared graph and what
    was done (recorded in the row's details)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    kind = "strict" if strict else "non-strict"
    try:
        graph = torch.export.export(module, example, strict=strict).module()
    except Exception as exc:
        raise UnsupportedError(
            f"torch.export ({kind}) failed, so PT2E cannot quantize: {first_line(exc)}"
        ) from exc
    before = len(graph.graph.nodes)
    # Export keeps computations whose results nobody uses (Hugging Face's BertModel computes a
    # pooler, Linear + Tanh, that minilm's mean-pooled embedding ignores). The quantizer's
    # fusion matcher takes every matched partition to have an output node and fails with an
    # IndexError on such a dead Tanh; dropping dead nodes changes no output.
    graph.graph.eliminate_dead_code()
    graph.recompile()
    how = {"export": kind, "dead_nodes_removed": before - len(graph.graph.nodes)}
    try:
        return prepare_pt2e(graph, quantizer), how
    except (ValueError, IndexError) as exc:
        raise QuantizerPatternError(
            f"torchao X86InductorQuantizer failed on the {kind} export: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
