"""Worker process: runs exactly one cell and writes its record as JSON.

Invoked by the runner as `python -m inferbench.worker SPEC.json RESULT.json`. Whatever happens in
the engine, the worst outcome is this process dying; the parent turns that into a row.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends import load_backend
from inferbench.config import AccuracyConfig, Cell, MeasureConfig
from inferbench.errors import UnsupportedError, first_line
from inferbench.evaluation import engine_infer, evaluation_chunks, reference_infer, run_chunks
from inferbench.interference import InterferenceProbe, Thresholds
from inferbench.measure import backend_iteration, measure, measure_throughput, rate_half_width
from inferbench.models import ModelRef, build_model, count_flops
from inferbench.procs import add_user_path, guard_child
from inferbench.stats import accuracy, latency_intervals, slice_rates, summarize, throughput_summary
from inferbench.status import ACCURACY_FAIL, ERROR, OK, UNSUPPORTED
from inferbench.util import atomic_write_json

log = logging.getLogger("inferbench.worker")

LOW_PRECISIONS = ("bf16", "fp16", "int8")


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare, check and time one cell; the returned record is JSON-serialisable."""
    cell = Cell(**spec["cell"])
    config = MeasureConfig(**spec["measure"])
    checks = AccuracyConfig(**spec.get("accuracy", {}))
    ref = ModelRef(**spec["model_ref"])
    record: dict[str, Any] = {"status": OK, "reason": ""}
    backend_cls = load_backend(cell.backend)
    record["versions"] = backend_cls.versions()
    backend = backend_cls(
        cell.threads,
        Path(spec["cache_dir"]),
        checks.calibration_samples,
        spec.get("options", {}),
        mode=cell.mode,
        streams=config.streams,
    )
    record["backend_options"] = backend.settings
    model = build_model(ref, seed=config.seed)
    record["flops_per_sample"] = _safe_flops(model)

    samples = checks.eval_samples
    eval_chunks = evaluation_chunks(model, samples, cell.batch_size, config.seed)
    reference_of = reference_infer(model, cell.threads)
    reference = run_chunks(reference_of, eval_chunks, samples, cell.batch_size) if reference_of else None

    t0 = time.perf_counter()
    info = backend.prepare(model, cell.precision, cell.batch_size)
    record["prepare_s"] = time.perf_counter() - t0
    record["engine_precision"] = info.engine_precision
    record["details"] = info.details
    record["artifact_cached"] = info.artifact_cached
    if info.artifact is not None and info.artifact.exists():
        record["artifact_mb"] = info.artifact.stat().st_size / 2**20
        record["artifact_path"] = str(info.artifact)

    natives = [
        backend.to_native(model.make_inputs(cell.batch_size, config.seed + k))
        for k in range(config.input_sets)
    ]
    t0 = time.perf_counter()
    backend.run(natives[0])
    backend.synchronize()
    record["first_inference_ms"] = (time.perf_counter() - t0) * 1e3

    record["accuracy_checked"] = reference is not None
    if reference is not None:
        candidate = run_chunks(engine_infer(backend), eval_chunks, samples, cell.batch_size)
        record["eval_samples"] = samples
        record.update(accuracy(reference, candidate, model.task == "classification"))
        limit = checks.threshold(cell.precision)
        record["accuracy_threshold"] = limit
        if not record["rel_l2_err"] <= limit:  # NaN fails too
            # Still timed and reported: a fast wrong answer is worth seeing, never hiding.
            record["status"] = ACCURACY_FAIL
            record["reason"] = (
                f"rel_l2_err {record['rel_l2_err']:.3g} > {limit:g} ({cell.precision} threshold)"
            )

    if cell.precision in LOW_PRECISIONS:
        # What really ran in the requested precision, as the engine reports it.
        share, how = backend.lowp(info, natives[0], cell.precision)
        record["lowp_share"] = share
        if how:
            record["details"] = {**record["details"], "lowp": how}
        if share is not None:
            record["lowp_flagged"] = share < checks.min_lowp_share

    record["timing_scope"] = backend.timing_scope
    if cell.mode == "throughput":
        record.update(_time_throughput(backend, natives, cell.batch_size, config))
    else:
        record.update(_time_latency(backend, natives, cell.batch_size, config))
    record["details"] = {**record["details"], **backend.run_details()}
    backend.close()
    return record


def _time_latency(backend: Any, natives: list[Any], batch_size: int, config: MeasureConfig) -> dict[str, Any]:
    # The timed region is run + synchronize; the engine's own time is read after it.
    probe = _probe(config)
    result = measure(
        backend_iteration(backend, natives), config, engine_time=backend.engine_time_ns, window=probe
    )
    record: dict[str, Any] = {
        **probe.result(),
        "latencies_ns": result.latencies_ns,
        "warmup_iterations": result.warmup.iterations,
        "warmup_s": result.warmup.seconds,
        "warmup_stable": result.warmup.stable,
        "capped": result.capped,
        "p50_half_width_pct": None if result.p50_half_width is None else 100 * result.p50_half_width,
        "p99_reliable": result.tail_ok,
        **summarize(result.latencies_ns, batch_size),
        **latency_intervals([result.latencies_ns], batch_size, config.bootstrap_resamples),
    }
    if result.device_ns:
        # The engine's own clock for the same calls (CUDA events, OpenVINO's request latency):
        # the gap to latency_p50_ms is what the Python call and the harness add.
        record["engine_latencies_ns"] = result.device_ns
        record["engine_p50_ms"] = float(np.median(result.device_ns)) / 1e6
    return record


def _time_throughput(
    backend: Any, natives: list[Any], batch_size: int, config: MeasureConfig
) -> dict[str, Any]:
    def saturate(seconds: float, min_requests: int) -> Any:
        return backend.run_throughput(natives, batch_size, seconds, min_requests)

    probe = _probe(config)
    warmup, run = measure_throughput(saturate, config, window=probe)
    latencies = [end - start for start, end in zip(run.starts_ns, run.ends_ns, strict=True)]
    record: dict[str, Any] = {
        "latencies_ns": latencies,
        "warmup_iterations": warmup.iterations,
        "warmup_s": warmup.seconds,
        "warmup_stable": warmup.stable,
        "capped": len(latencies) < config.min_iterations
        or bool(config.precision and rate_half_width(run) > config.precision),
        "throughput_half_width_pct": 100 * rate_half_width(run),
        "p99_reliable": len(latencies) >= config.tail_samples,
        "streams": run.streams,
        **probe.result(),
        # Request latency under load: what each request waited, not the engine's best case.
        **summarize(latencies, batch_size),
        **latency_intervals([latencies], batch_size, config.bootstrap_resamples),
    }
    counted = throughput_summary(
        run.ends_ns, run.begin_ns, run.end_ns, batch_size, config.bootstrap_resamples
    )
    record.update(counted)  # completed samples over wall time, never derived from latency
    record["throughput_slices_sps"] = slice_rates(run.ends_ns, run.begin_ns, run.end_ns, batch_size)
    return record


def _probe(config: MeasureConfig) -> InterferenceProbe:
    return InterferenceProbe(Thresholds(config.interference_max_pct, config.steal_max_pct))


def _safe_flops(model: Any) -> float | None:
    try:
        return count_flops(model)
    except Exception:  # FLOPs are informative; never fail a cell over them
        log.warning("FLOP count failed for %s", model.name, exc_info=True)
        return None


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
    guard_child(spec.get("deadline_s"))  # gone with the runner, and gone at its own deadline
    add_user_path()  # the user's factories and plugins, resolved from where the sweep started
    if spec.get("pin_cpus"):
        # Before any engine starts its thread pools: they inherit this mask.
        os.sched_setaffinity(0, spec["pin_cpus"])
    try:
        record = run_cell(spec)
    except UnsupportedError as exc:
        record = {"status": UNSUPPORTED, "reason": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        record = {"status": ERROR, "reason": f"{type(exc).__name__}: {first_line(exc)}"[:500]}
    record["peak_rss_mb"] = peak_rss_mb()
    atomic_write_json(out_path, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
