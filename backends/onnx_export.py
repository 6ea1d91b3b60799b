"""torch -> ONNX export shared by the ONNX-consuming backends, cached on disk.

The TorchScript-based exporter is used (dynamo=False), and Hugging Face encoders are exported
with their eager attention: that graph is the one ONNX Runtime's transformer optimizer fuses
into its Attention kernel (the SDPA graph is left unfused). The batch dimension is dynamic.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BackendError
from bench.util import cache_key

if TYPE_CHECKING:
    from models import ModelDef

log = logging.getLogger(__name__)

OPSET = 17


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


def onnx_file(model: ModelDef, cache_dir: Path) -> tuple[Path, bool]:
    """The model as an ONNX file and whether it came from the cache."""
    if model.onnx_path is not None:
        return model.onnx_path, True
    if model.module is None:
        raise BackendError(f"{model.name} has neither a torch module nor an ONNX file")
    import torch

    key = cache_key("onnx", model.name, model.seed, torch.__version__, OPSET, "eager-attention")
    path = cache_dir / "onnx" / f"{model.name}-{key}" / "model.onnx"
    if path.is_file():
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    dynamic = {name: {0: "batch"} for name in (*model.input_names, *model.output_names)}
    log.info("exporting %s to ONNX (opset %d)", model.name, OPSET)
    try:
        with warnings.catch_warnings(), torch.no_grad(), eager_attention(model.module):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.module,
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
