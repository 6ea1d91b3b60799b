"""`make setup HW=gpu`'s smoke check: the GPU stack imports, and its parts agree.

Imports torch (which must be a CUDA build), tensorrt, torch_tensorrt, onnxruntime (the
onnxruntime-gpu wheel: its providers are printed), modelopt and pynvml; compares the CUDA version
torch was built with against the one the torch-tensorrt wheel was built for; and reads which
TensorRT ONNX Runtime's TensorRT provider links, against the installed one. It needs no GPU: it
checks the installation, not the device. Prints one line per fact; when something is missing or
mismatched, one line naming all of it on stderr and exit 1, so `make` stops there (and set-up
runs again next time).

`python -m inferbench.tools.gpu_smoke`
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType

from inferbench.backends.cuda import INSTALL_HINT

#: Import name -> what installs it.
STACK = {
    "torch": "torch's CUDA build (TORCH_INDEX)",
    "tensorrt": "tensorrt",
    "torch_tensorrt": "torch-tensorrt",
    "onnxruntime": "onnxruntime-gpu",
    "modelopt": "nvidia-modelopt",
    "pynvml": "nvidia-ml-py",
}

Importer = Callable[[str], ModuleType]


def check(importer: Importer = importlib.import_module) -> tuple[list[str], list[str]]:
    """(facts, problems) about the installed GPU stack; no problems means it is complete."""
    facts: list[str] = []
    problems: list[str] = []
    modules: dict[str, ModuleType] = {}
    for name, dist in STACK.items():
        try:
            modules[name] = importer(name)
        except Exception as exc:  # a broken wheel raises more than ImportError (OSError on a .so)
            problems.append(f"{name} does not import ({type(exc).__name__}: {_first_line(exc)}) [{dist}]")
            continue
        facts.append(f"{name} {getattr(modules[name], '__version__', '?')}")
    torch = modules.get("torch")
    if torch is not None:
        if torch.version.cuda is None:
            problems.append(
                f"torch {torch.__version__} is a CPU build: set TORCH_INDEX to a CUDA wheel index"
            )
        else:
            facts.append(f"torch built for CUDA {torch.version.cuda}")
    trt_compiler = modules.get("torch_tensorrt")
    if torch is not None and torch.version.cuda and trt_compiler is not None:
        built_for = getattr(trt_compiler, "__cuda_version__", None)
        facts.append(f"torch_tensorrt built for CUDA {built_for}")
        if built_for and built_for.split(".")[0] != torch.version.cuda.split(".")[0]:
            problems.append(
                f"torch_tensorrt was built for CUDA {built_for} but torch for CUDA {torch.version.cuda}: "
                "install both from the same CUDA major version"
            )
    ort = modules.get("onnxruntime")
    if ort is not None:
        providers = list(ort.get_available_providers())
        facts.append(f"onnxruntime providers: {', '.join(providers)}")
        if "CUDAExecutionProvider" not in providers:
            problems.append(
                "onnxruntime has no CUDAExecutionProvider (is the CPU wheel 'onnxruntime' installed "
                "beside onnxruntime-gpu? both install the same module)"
            )
        if "TensorrtExecutionProvider" in providers:
            facts.append(f"onnxruntime-cuda provider=tensorrt: {_tensorrt_provider_state()}")
    return facts, problems


def _tensorrt_provider_state() -> str:
    # A known upstream gap, not a broken install: those cells are `unsupported` with this reason.
    from inferbench.backends.onnxruntime_cuda import tensorrt_ep_major
    from inferbench.errors import UnsupportedError

    try:
        return f"usable (links TensorRT {tensorrt_ep_major()})"
    except UnsupportedError as exc:
        return f"unsupported here: {exc}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    facts, problems = check()
    for line in facts:
        print(line)
    if problems:
        print(f"GPU stack incomplete: {'; '.join(problems)}; {INSTALL_HINT}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
