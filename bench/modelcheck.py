"""Fail fast on a broken model: check each user factory once, before the first cell.

A factory that cannot be called, raises, or returns something that is not a model would
otherwise fail in every worker of the sweep, one cell at a time. The check builds the model
and runs one forward pass in a child process (user code can crash or hang; the runner must
not), with a timeout, and turns any failure into one line and exit code 2.

`python -P -m inferbench.modelcheck REF SEED DEADLINE OUT.json` is the child's entry point.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from inferbench.errors import UserError, first_line
from inferbench.models import ModelRef, build_model
from inferbench.procs import add_user_path, guard_child, python_command, run_child, worker_env
from inferbench.util import atomic_write_json

log = logging.getLogger(__name__)

#: Two samples, so an output that lost (or never had) the batch dimension shows.
CHECK_BATCH = 2


def check_models(refs: list[ModelRef], *, seed: int, timeout_s: float, threads: int) -> None:
    """Raise UserError naming the first user factory that does not give a working model."""
    for ref in refs:
        if ref.kind != "factory":
            continue  # built-ins are ours and tested; ONNX files are checked on resolution
        problem = _check_in_child(ref, seed, timeout_s, threads)
        if problem:
            raise UserError(f"model {ref.ref} is broken: {problem} (checked before the sweep; no cell ran)")


def _check_in_child(ref: ModelRef, seed: int, timeout_s: float, threads: int) -> str | None:
    with tempfile.TemporaryDirectory(prefix="inferbench-modelcheck-") as folder:
        out = Path(folder) / "check.json"
        command = python_command("inferbench.modelcheck", ref.ref, str(seed), f"{timeout_s:g}", str(out))
        try:
            done = run_child(command, env=worker_env(threads), timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            return f"building it and one forward pass took longer than {timeout_s:g} s"
        if out.is_file():
            problem = json.loads(out.read_text())["problem"]
            return str(problem) if problem else None
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    last = f": {lines[-1][:300]}" if lines else ""
    return f"the check process exited with code {done.returncode} without a verdict{last}"


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


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ref, seed, deadline, out = argv[0], int(argv[1]), float(argv[2]), Path(argv[3])
    guard_child(deadline)
    add_user_path()
    atomic_write_json(out, {"problem": problem_with(ModelRef(ref, "factory"), seed)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
