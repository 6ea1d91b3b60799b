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
from inferbench.util import cache_key

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
    """Where files derived from an ONNX file go (optimized, quantized, IR): beside it when it is
    our own export, in the cache when it is the user's (never next to the user's file)."""
    if cache_dir.resolve() in onnx_path.resolve().parents:
        return onnx_path.parent
    stat = onnx_path.stat()
    folder = (
        cache_dir
        / "derived"
        / f"{onnx_path.stem}-{cache_key(str(onnx_path.resolve()), stat.st_size, stat.st_mtime_ns)}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def onnx_file(model: ModelDef, cache_dir: Path, precision: str = "fp32") -> tuple[Path, bool]:
    """The model as an ONNX file and whether it came from the cache. `precision` fp16/bf16: the
    whole model in that dtype, inputs and outputs kept float32."""
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

    parts: tuple[object, ...] = ("onnx", model.name, model.seed, torch.__version__, OPSET, "eager-attention")
    filename = "model.onnx"
    module = model.module
    if precision != "fp32":
        # fp32 keeps the key it always had; low-precision graphs get their own file.
        parts, filename = (*parts, precision, "fp32-io"), f"model.{precision}.onnx"
        module = _cast_io(model.module, {"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
    path = cache_dir / "onnx" / f"{model.name}-{cache_key(*parts)}" / filename
    if path.is_file():
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    dynamic = {name: {0: "batch"} for name in (*model.input_names, *model.output_names)}
    log.info("exporting %s to ONNX (opset %d)", model.name, OPSET)
    try:
        with warnings.catch_warnings(), torch.no_grad(), eager_attention(module):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                model.torch_inputs(2, model.seed),
                str(tmp),
                input_names=list(model.input_names),
                output_names=list(model.output_names),
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"ONNX export failed: {exc}") from exc
    tmp.replace(path)
    return path, False


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
