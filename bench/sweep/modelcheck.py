"""Fail fast on a broken model: check each user factory once, before the first cell.

A factory that cannot be called, raises, or returns something that is not a model would
otherwise fail in every worker of the sweep, one cell at a time. The check builds the model
and runs one forward pass in a child process (user code can crash or hang; the runner must
not), with a timeout, and turns any failure into one line and exit code 2.

ONNX files are given a trial run in ONNX Runtime with the inputs the sweep would give them
(shapes and values from `--shape`/`--input`), so a value the graph rejects is one line too.

`python -P -m inferbench.sweep.modelcheck REF.json SEED DEADLINE OUT.json` is the child's entry point.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from inferbench.errors import UserError, first_line
from inferbench.models import ModelRef, build_model
from inferbench.redact import configure_logging
from inferbench.store.artifacts import file_digest
from inferbench.sweep.procs import add_user_path, guard_child, python_command, run_child, worker_env
from inferbench.util import atomic_write_json, cache_key

log = logging.getLogger(__name__)

#: Two samples, so an output that lost (or never had) the batch dimension shows.
CHECK_BATCH = 2


def check_models(
    refs: list[ModelRef], *, seed: int, timeout_s: float, threads: int, cache_dir: Path | None = None
) -> list[ModelRef]:
    """Raise UserError naming the first user factory that does not give a working model; return
    the refs with their layer counts (`ModelRef.layers`) where the child could learn them.

    Built-ins are ours and tested, so they are only built for their structure, once per
    model, seed, torch version and source (cached under `cache_dir`); ONNX files are checked
    on resolution."""
    checked = []
    for ref in refs:
        if ref.kind == "factory":
            problem, layers = _check_in_child(ref, seed, timeout_s, threads)
            if problem:
                raise UserError(
                    f"model {ref.ref} is broken: {problem} (checked before the sweep; no cell ran)"
                )
        elif ref.kind == "builtin" and cache_dir is not None:
            layers = _builtin_layers(ref, seed, timeout_s, threads, cache_dir)
        elif ref.kind == "onnx" and importlib.util.find_spec("onnxruntime") is not None:
            problem, layers = _check_in_child(ref, seed, timeout_s, threads)
            if problem:
                name = Path(ref.ref).name
                raise UserError(
                    f"model {name} failed a trial run in ONNX Runtime with the inputs it would get: "
                    f"{problem}{_generated_hint(ref)} (no cell ran)"
                )
        else:
            layers = {}
        checked.append(replace(ref, layers=tuple(sorted(layers.items()))))
    return checked


def _builtin_layers(
    ref: ModelRef, seed: int, timeout_s: float, threads: int, cache_dir: Path
) -> dict[str, int]:
    import importlib.metadata

    import inferbench.models

    sources = sorted(Path(inferbench.models.__file__).parent.glob("*.py"))
    key = cache_key(ref.ref, seed, importlib.metadata.version("torch"), [file_digest(p) for p in sources])
    path = cache_dir / "model-layers" / f"{ref.ref}-{key}.json"
    if path.is_file():
        try:
            return dict(json.loads(path.read_text()))
        except ValueError:
            pass  # torn or foreign: learn it again
    problem, layers = _check_in_child(ref, seed, timeout_s, threads)
    if problem or not layers:
        log.warning(
            "structure of %s not learned (%s); its verdicts are left to the workers", ref.ref, problem
        )
        return {}
    atomic_write_json(path, layers)
    return layers


def _check_in_child(
    ref: ModelRef, seed: int, timeout_s: float, threads: int
) -> tuple[str | None, dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="inferbench-modelcheck-") as folder:
        out = Path(folder) / "check.json"
        spec = Path(folder) / "ref.json"
        atomic_write_json(spec, asdict(ref))
        command = python_command(
            "inferbench.sweep.modelcheck", str(spec), str(seed), f"{timeout_s:g}", str(out)
        )
        try:
            done = run_child(command, env=worker_env(threads), timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            return f"building it and one forward pass took longer than {timeout_s:g} s", {}
        if out.is_file():
            verdict = json.loads(out.read_text())
            problem = verdict["problem"]
            return (str(problem) if problem else None), dict(verdict.get("layers") or {})
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    last = f": {lines[-1][:300]}" if lines else ""
    return f"the check process exited with code {done.returncode} without a verdict{last}", {}


def layer_counts(module: Any) -> dict[str, int]:
    """Convolution, linear and recurrent layers of a torch module: what decides, for example,
    whether dynamic int8 (Linear/LSTM only) can quantize it."""
    import torch

    kinds = {
        "conv": torch.nn.modules.conv._ConvNd,
        "linear": torch.nn.Linear,
        "recurrent": torch.nn.modules.rnn.RNNBase,
    }
    return {name: sum(isinstance(m, cls) for m in module.modules()) for name, cls in kinds.items()}


def problem_with(ref: ModelRef, seed: int) -> str | None:
    """Why `ref` does not give a model the workers can run, or None (runs user code)."""
    module_name, _, attr = ref.ref.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # an import error in user code, or the name is missing
        return f"importing it failed: {type(exc).__name__}: {first_line(exc)}"
    if not callable(target):
        return f"{attr} is a {type(target).__name__}, not a callable factory"
    try:
        model = build_model(ref, seed=seed)
    except Exception as exc:
        return f"building it failed: {type(exc).__name__}: {first_line(exc)}"
    if model.module is None:
        return None  # an ONNX-file ModelDef: the engines check the file
    return _forward_problem(model, seed)


def _forward_problem(model: Any, seed: int) -> str | None:
    import torch

    try:
        with torch.inference_mode():
            out = model.module(*model.torch_inputs(CHECK_BATCH, seed))
    except Exception as exc:
        return f"a forward pass on a batch of {CHECK_BATCH} failed: {type(exc).__name__}: {first_line(exc)}"
    outputs = list(out) if isinstance(out, list | tuple) else [out]
    if not outputs or not all(isinstance(o, torch.Tensor) for o in outputs):
        kinds = ", ".join(sorted({type(o).__name__ for o in outputs})) or "nothing"
        return f"its forward pass returned {kinds}; expected a tensor or a tuple of tensors"
    first = outputs[0]
    if first.dim() == 0 or first.shape[0] != CHECK_BATCH:
        shape = tuple(first.shape)
        return f"its output has shape {shape} for a batch of {CHECK_BATCH}; the batch must come first"
    return None


def _generated_hint(ref: ModelRef) -> str:
    """Which inputs got made-up data, the likeliest cause of a graph's refusal."""
    made_up = [
        f"{spec.name} ({spec.dtype}{list(spec.shape) if spec.shape else ' scalar'}, drawn from "
        f"[{spec.low}, {spec.high}))"
        for spec in build_model(ref).inputs
        if spec.value is None and spec.dtype not in ("float32", "float16", "float64")
    ]
    if not made_up:
        return "; check --shape/--batch-axis"
    return f"; inputs with made-up data: {', '.join(made_up)}: give real values with --input NAME=VALUE"


def onnx_trial_problem(ref: ModelRef, seed: int) -> str | None:
    """Why ONNX Runtime rejects the model with the inputs a sweep would give it (a value the
    graph checks, a shape it cannot take), or None."""
    import onnxruntime as ort

    model = build_model(ref, seed=seed)
    batch = CHECK_BATCH if ref.batched else 1
    try:
        session = ort.InferenceSession(str(ref.ref), providers=["CPUExecutionProvider"])
        session.run(None, model.make_inputs(batch, seed))
    except Exception as exc:
        return f"{type(exc).__name__}: {first_line(exc)}"[:400]
    return None


def main(argv: list[str]) -> int:
    configure_logging(level=logging.WARNING, stream=sys.stderr)
    ref = ModelRef(**json.loads(Path(argv[0]).read_text()))
    seed, deadline, out = int(argv[1]), float(argv[2]), Path(argv[3])
    guard_child(deadline)
    add_user_path()
    problem = None
    if ref.kind == "factory":
        problem = problem_with(ref, seed)
    elif ref.kind == "onnx":
        problem = onnx_trial_problem(ref, seed)
    layers: dict[str, int] = {}
    if problem is None:
        model = build_model(ref, seed=seed)
        layers = layer_counts(model.module) if model.module is not None else {}
    atomic_write_json(out, {"problem": problem, "layers": layers})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
