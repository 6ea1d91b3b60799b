"""Worker process: runs exactly one cell and writes its record as JSON.

Invoked by the runner as `python -m bench.worker SPEC.json RESULT.json`. Whatever happens in
the engine, the worst outcome is this process dying; the parent turns that into a row.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from backends import load_backend
from bench.config import AccuracyConfig, Cell, MeasureConfig
from bench.errors import UnsupportedError, first_line
from bench.measure import measure
from bench.stats import accuracy, summarize
from bench.util import atomic_write_json
from models import ModelRef, build_model, count_flops

log = logging.getLogger("bench.worker")

EVAL_SEED_OFFSET = 1000  # evaluation inputs differ from the timed ones


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare, check and time one cell; the returned record is JSON-serialisable."""
    cell = Cell(**spec["cell"])
    config = MeasureConfig(**spec["measure"])
    checks = AccuracyConfig(**spec.get("accuracy", {}))
    ref = ModelRef(**spec["model_ref"])
    record: dict[str, Any] = {"status": "ok", "reason": ""}
    backend_cls = load_backend(cell.backend)
    record["versions"] = backend_cls.versions()
    backend = backend_cls(
        cell.threads, Path(spec["cache_dir"]), checks.calibration_samples, spec.get("options", {})
    )
    record["backend_options"] = backend.settings
    model = build_model(ref, seed=config.seed)
    record["flops_per_sample"] = _safe_flops(model)

    eval_inputs = model.make_inputs(cell.batch_size, config.seed + EVAL_SEED_OFFSET)
    reference = _eager_reference(model, eval_inputs)

    t0 = time.perf_counter()
    info = backend.prepare(model, cell.precision, cell.batch_size)
    record["prepare_s"] = time.perf_counter() - t0
    record["engine_precision"] = info.engine_precision
    record["details"] = info.details
    record["artifact_cached"] = info.artifact_cached
    if info.artifact is not None and info.artifact.exists():
        record["artifact_mb"] = info.artifact.stat().st_size / 2**20

    natives = [
        backend.to_native(model.make_inputs(cell.batch_size, config.seed + k))
        for k in range(config.input_sets)
    ]
    t0 = time.perf_counter()
    backend.run(natives[0])
    backend.synchronize()
    record["first_inference_ms"] = (time.perf_counter() - t0) * 1e3

    if reference is not None:
        candidate = backend.to_numpy(backend.run(backend.to_native(eval_inputs)))
        record.update(accuracy(reference, candidate, model.task == "classification"))
        limit = checks.threshold(cell.precision)
        record["accuracy_threshold"] = limit
        if not record["rel_l2_err"] <= limit:  # NaN fails too
            # Still timed and reported: a fast wrong answer is worth seeing, never hiding.
            record["status"] = "accuracy-fail"
            record["reason"] = (
                f"rel_l2_err {record['rel_l2_err']:.3g} > {limit:g} ({cell.precision} threshold)"
            )

    def one_iteration(i: int) -> None:
        backend.run(natives[i % len(natives)])
        backend.synchronize()

    result = measure(one_iteration, config)
    record["latencies_ns"] = result.latencies_ns
    record["warmup_iterations"] = result.warmup_iterations
    record["capped"] = result.capped
    record.update(summarize(result.latencies_ns, cell.batch_size))
    backend.close()
    return record


def _safe_flops(model: Any) -> float | None:
    try:
        return count_flops(model)
    except Exception:  # FLOPs are informative; never fail a cell over them
        log.warning("FLOP count failed for %s", model.name, exc_info=True)
        return None


def _eager_reference(model: Any, inputs: dict[str, Any]) -> list[Any] | None:
    """FP32 eager outputs on the evaluation inputs (None for ONNX-file models)."""
    if model.module is None:
        return None
    import torch

    with torch.inference_mode():
        out = model.module(*(torch.from_numpy(inputs[n]) for n in model.input_names))
    outs = out if isinstance(out, list | tuple) else [out]
    return [o.float().numpy().copy() for o in outs]


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        record = run_cell(spec)
    except UnsupportedError as exc:
        record = {"status": "unsupported", "reason": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        record = {"status": "error", "reason": f"{type(exc).__name__}: {first_line(exc)}"[:500]}
    record["peak_rss_mb"] = peak_rss_mb()
    atomic_write_json(out_path, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
