"""Backend registry: built-ins by name, third-party plugins by entry point.

Built-ins map to "module:Class" strings and are imported only when used. A third-party
package registers its own with the `inferbench.backends` entry-point group:

    [project.entry-points."inferbench.backends"]
    my-engine = "my_package.backend:MyBackend"

A "module:Class" string also works directly as a backend name.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from inferbench.backends.base import Availability, Backend, PrepareInfo
from inferbench.errors import UserError

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "Availability",
    "Backend",
    "PrepareInfo",
    "backend_names",
    "load_backend",
]

ENTRY_POINT_GROUP = "inferbench.backends"

BUILTIN_BACKENDS: dict[str, str] = {
    "torch": "inferbench.backends.torch_eager:TorchBackend",
    "torchscript": "inferbench.backends.torchscript:TorchScriptBackend",
    "torch-compile": "inferbench.backends.torch_compile:TorchCompileBackend",
    "onnxruntime": "inferbench.backends.onnxruntime:OrtBackend",
    "openvino": "inferbench.backends.openvino:OpenVinoBackend",
    # CUDA GPUs (`pip install 'inferbench[gpu]'`, or `make setup HW=gpu`).
    "tensorrt": "inferbench.backends.tensorrt:TensorRtBackend",
    "torch-tensorrt": "inferbench.backends.torch_tensorrt:TorchTensorRtBackend",
    "torch-cuda": "inferbench.backends.torch_cuda:TorchCudaBackend",
    "torch-compile-cuda": "inferbench.backends.torch_cuda:TorchCompileCudaBackend",
    "onnxruntime-cuda": "inferbench.backends.onnxruntime_cuda:OrtCudaBackend",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return [*BUILTIN_BACKENDS, *sorted(set(_plugins()) - set(BUILTIN_BACKENDS))]


def load_backend(name: str) -> type[Backend]:
    """The backend class for a name; imports its module (not its engine)."""
    target = BUILTIN_BACKENDS.get(name) or _plugins().get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"backend {name!r} ({target}) cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UserError(f"backend {name!r} ({target}) is not a Backend subclass")
    return cls
