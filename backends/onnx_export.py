"""torch -> ONNX export shared by the ONNX-consuming backends, cached on disk.

The TorchScript-based exporter is used (dynamo=False), and Hugging Face encoders are exported
with their eager attention: that graph is the one ONNX Runtime's transformer optimizer fuses
into its Attention kernel (the SDPA graph is left unfused). The batch dimension is dynamic.

For engines whose networks are strongly typed (TensorRT), fp16/bf16 come from the graph itself:
the module is converted to that dtype and exported with float32 inputs and outputs (a Cast at
each end), so the engine is handed the same fp32 arrays at every precision.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferbench.errors import BackendError, UnsupportedError
from inferbench.store.artifacts import file_digest, library_versions, model_fingerprint, obtain

if TYPE_CHECKING:
    from inferbench.models import ModelDef

log = logging.getLogger(__name__)

OPSET = 17
LOW_PRECISION = ("fp16", "bf16")


@contextmanager
def eager_attention(module: Any) -> Iterator[None]:
    """Temporarily switch Hugging Face submodules to their eager attention implementation."""
    changed: list[tuple[Any, str]] = []
    for sub in module.modules():
        impl = getattr(getattr(sub, "config", None), "_attn_implementation", None)
        if hasattr(sub, "set_attn_implementation") and impl not in (None, "eager"):
            changed.append((sub, impl))
    try:
        for sub, _ in changed:
            sub.set_attn_implementation("eager")
        yield
    finally:
        for sub, previous in changed:
            sub.set_attn_implementation(previous)


def derived_dir(onnx_path: Path, cache_dir: Path) -> Path:
    """Where artifacts derived from an ONNX file go (optimized, quantized, IR, engines): a cache
    folder named by the hash of the file's bytes, so an edited model never meets the artifacts
    of its previous version (and the user's own folder is never written to)."""
    folder = cache_dir / "derived" / f"{_safe(onnx_path.stem)}-{file_digest(onnx_path)[:20]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def onnx_file(model: ModelDef, cache_dir: Path, precision: str = "fp32") -> tuple[Path, bool]:
    """The model as an ONNX file and whether it came from the cache. `precision` fp16/bf16: the
    whole model in that dtype, inputs and outputs kept float32.

    The export is keyed by the model's fingerprint (weights, buffers, code, input specs, seed)
    and the exporter's versions, and published whole (see `inferbench.store.artifacts`)."""
    if precision not in ("fp32", *LOW_PRECISION):
        raise ValueError(f"precision must be one of fp32, {', '.join(LOW_PRECISION)}; got {precision!r}")
    if model.onnx_path is not None:
        if precision != "fp32":
            raise UnsupportedError(
                f"an ONNX file is exported already: convert it to {precision} yourself "
                "(e.g. ModelOpt AutoCast) and benchmark the converted file"
            )
        return model.onnx_path, True
    if model.module is None:
        raise BackendError(f"{model.name} has neither a torch module nor an ONNX file")
    import torch

    module = model.module
    if precision != "fp32":
        module = _cast_io(model.module, {"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
    parts = {
        "artifact": "onnx-export",
        "model": model_fingerprint(model),
        "precision": precision,
        "io": "fp32",
        "opset": OPSET,
        "exporter": "torchscript, eager attention, dynamic batch",
        "versions": library_versions("torch", "transformers", "onnx"),
    }
    dynamic = {name: {0: "batch"} for name in (*model.input_names, *model.output_names)}
    filename = "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"

    def export(folder: Path) -> None:
        log.info("exporting %s to ONNX (opset %d)", model.name, OPSET)
        try:
            with warnings.catch_warnings(), torch.no_grad(), eager_attention(module):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    model.torch_inputs(2, model.seed),
                    str(folder / filename),
                    input_names=list(model.input_names),
                    output_names=list(model.output_names),
                    dynamic_axes=dynamic,
                    opset_version=OPSET,
                    dynamo=False,
                )
        except Exception as exc:
            raise BackendError(f"ONNX export failed: {exc}") from exc

    folder, cached = obtain(cache_dir / "onnx", f"{model.name}-{precision}", parts, export)
    return folder / filename, cached


def _cast_io(module: Any, dtype: Any) -> Any:
    """A copy of `module` in `dtype` that takes and returns float32 tensors."""
    import torch

    class CastIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = copy.deepcopy(module).to(dtype)

        def forward(self, *inputs: torch.Tensor) -> Any:
            cast = [x.to(dtype) if x.is_floating_point() else x for x in inputs]
            out = self.inner(*cast)
            if isinstance(out, list | tuple):
                return type(out)(o.float() for o in out)
            return out.float()

    return CastIO().eval()
