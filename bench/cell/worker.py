"""Worker process: runs cells and writes each one's record as JSON.

Two ways to start it:
- `python -m inferbench.cell.worker SPEC.json RESULT.json` runs one cell in a fresh process (every
  repeat of a `repeats > 1` sweep, and re-measurements);
- `python -m inferbench.cell.worker --serve REPLY_FD` is a shared worker: it reads one command per
  line on stdin (`{"spec", "out", "log"}`), runs that cell, writes its record, and answers
  `done` on the reply pipe. The runner gives it the cells of one (model, backend, precision,
  threads) in turn, so start-up, imports, the model build and the FP32 reference are paid
  once, not per cell; each cell still gets a fresh copy of the model, its own engine, its
  own log, deadline and peak-memory reading.

Whatever happens in the engine, the worst outcome is this process dying; the parent turns
that into a row for the cell that was running, and starts a new worker for the next one.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import resource
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends import load_backend
from inferbench.backends.base import Backend, PrepareInfo
from inferbench.cell.evaluation import Chunk, engine_infer, evaluation_chunks, gather, reference_infer
from inferbench.cell.refcache import cached_flops, cached_reference
from inferbench.cell.spec import WorkerSpec
from inferbench.cell.stats import accuracy
from inferbench.cell.timing import time_latency, time_serve, time_throughput
from inferbench.errors import UnsupportedError, first_line
from inferbench.machine.capability import refusal, this_cpu
from inferbench.models import ModelDef, ModelRef, build_model, count_flops
from inferbench.redact import configure_logging
from inferbench.status import ACCURACY_FAIL, ERROR, HARNESS_LIMITED, OK, UNSUPPORTED
from inferbench.store.artifacts import model_fingerprint
from inferbench.store.record import CellRecord, as_record
from inferbench.sweep.procs import add_user_path, guard_child, reset_deadline
from inferbench.util import atomic_write_json

log = logging.getLogger("inferbench.cell.worker")

LOW_PRECISIONS = ("bf16", "fp16", "int8")
ACCURACY_FIELDS = ("max_abs_err", "rel_l2_err", "cosine", "top1_agreement")
# Relative L2 difference on the first evaluation chunk under which two engines of one worker
# (one model, backend, precision and batch size; latency and throughput mode) count as the same.
SAME_OUTPUTS = 1e-5


@dataclass
class Memo:
    """What a shared worker keeps between its cells: the built models, pristine (each cell
    works on a deep copy, because engines may convert a module in place)."""

    shared: bool = False  # False: a one-cell process, which may use the model itself
    models: dict[tuple[str, int], ModelDef] = field(default_factory=dict)
    # Accuracy checks already made in this worker, per (model, backend, precision, batch size,
    # threads, samples): the cell, its figures and its outputs on the first evaluation chunk.
    checks: dict[tuple[Any, ...], tuple[str, CellRecord, list[np.ndarray]]] = field(default_factory=dict)

    @staticmethod
    def model_key(ref: ModelRef, seed: int) -> tuple[str, int]:
        return json.dumps(asdict(ref), sort_keys=True, default=str), seed

    def same_check(self, key: tuple[Any, ...], first: list[np.ndarray]) -> CellRecord | None:
        """The figures of an earlier check under `key` whose engine gave the same outputs on
        the first evaluation chunk (within SAME_OUTPUTS), with where they came from; else None."""
        if key not in self.checks:
            return None
        cell_key, figures, outputs = self.checks[key]
        try:  # the earlier engine's outputs stand as the reference for this one's
            difference = accuracy(outputs, first, classification=False)["rel_l2_err"]
        except ValueError:  # outputs of another shape
            return None
        if not difference <= SAME_OUTPUTS:  # NaN differs too
            return None
        return {**figures, "accuracy_from": cell_key, "accuracy_from_rel_diff": difference}

    def keep_check(
        self, key: tuple[Any, ...], cell_key: str, record: CellRecord, first: list[np.ndarray]
    ) -> None:
        if self.shared:
            fields: Mapping[str, Any] = record
            self.checks[key] = (cell_key, as_record({k: fields[k] for k in ACCURACY_FIELDS}), first)

    def model(self, ref: ModelRef, seed: int) -> ModelDef:
        if not self.shared:
            return build_model(ref, seed=seed)
        key = self.model_key(ref, seed)
        if key not in self.models:
            self.models.clear()  # one model at a time: a worker serves one model's cells
            self.checks.clear()
            self.models[key] = build_model(ref, seed=seed)
            model_fingerprint(self.models[key])  # hashed once; every copy carries it
        try:
            return copy.deepcopy(self.models[key])
        except Exception:  # a model that cannot be copied is built again
            log.info("model %s cannot be deep-copied; building it again", ref.ref, exc_info=True)
            return build_model(ref, seed=seed)


def run_cell(spec: WorkerSpec, memo: Memo | None = None) -> CellRecord:
    """Prepare, check and time one cell; the returned record is JSON-serialisable."""
    memo = memo or Memo()
    record: CellRecord = {"status": OK, "reason": ""}
    built = _build(spec, memo, record)
    reference = _reference(spec, built, record)
    info, natives = _prepare(spec, built, record)
    _check_accuracy(spec, built, reference, memo, record)
    _check_low_precision(spec, built, info, natives[0], record)
    _time(spec, built, natives, record)
    return record


@dataclass(frozen=True)
class Built:
    """A cell's engine, not yet prepared, and its own copy of the model."""

    backend: Backend
    model: ModelDef
    ref: ModelRef  # the model at the cell's shape
    started: float  # perf_counter before the model was built: setup_s counts from here


@dataclass(frozen=True)
class Reference:
    """The evaluation set in the cell's batches, and the FP32 reference's outputs on it (None:
    the model has no reference to check against)."""

    chunks: list[Chunk]
    outputs: list[np.ndarray] | None


def _build(spec: WorkerSpec, memo: Memo, record: CellRecord) -> Built:
    """The engine, refused where this CPU cannot run the precision, and the model."""
    cell = spec.cell
    backend_cls = load_backend(cell.backend)
    record["versions"] = backend_cls.versions()
    # The runner decides this before starting a worker; a worker on another machine (Ray) or
    # one started by hand applies the same rule to its own CPU.
    found = backend_cls.cpu_support(this_cpu(), cell.precision)
    refused = refusal(found, spec.allow_emulated)
    if refused:
        raise UnsupportedError(refused)
    backend = backend_cls(
        cell.threads,
        spec.cache_dir,
        spec.accuracy.calibration_samples,
        spec.options,
        mode=cell.mode,
        # Serve mode: one stream per in-flight slot (0: the engine's choice, as in throughput).
        streams=spec.serve.slots if cell.mode == "serve" else spec.measure.streams,
    )
    if cell.mode == "serve" and backend.variable_batch:
        backend.serve_batch = max(spec.serve.max_batch) * cell.batch_size  # before prepare
    record["backend_options"] = backend.settings
    ref = spec.model_ref.at_shape(cell.shape)
    started = time.perf_counter()
    return Built(backend, memo.model(ref, spec.measure.seed), ref, started)


def _reference(spec: WorkerSpec, built: Built, record: CellRecord) -> Reference:
    """The model's FLOPs, the evaluation set and the FP32 reference's outputs on it (cached
    after once)."""
    model, batch_size = built.model, spec.cell.batch_size
    record["flops_per_sample"] = cached_flops(model, _safe_flops, spec.cache_dir)
    samples = spec.accuracy.eval_samples
    chunks = evaluation_chunks(model, samples, batch_size, spec.measure.seed)
    reference_of = reference_infer(model, spec.cell.threads)
    outputs = None
    if reference_of is not None:
        outputs, record["reference_cached"] = cached_reference(
            model, reference_of, chunks, samples, batch_size, spec.cache_dir
        )
    record["setup_s"] = time.perf_counter() - built.started  # model, FLOPs, reference
    return Reference(chunks, outputs)


def _prepare(spec: WorkerSpec, built: Built, record: CellRecord) -> tuple[PrepareInfo, list[Any]]:
    """The engine prepared (exported, compiled, quantized: timed), the timed input sets in its
    format, and its first inference (timed)."""
    cell, backend, model = spec.cell, built.backend, built.model
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
        backend.to_native(model.make_inputs(cell.batch_size, spec.measure.seed + k))
        for k in range(spec.measure.input_sets)
    ]
    t0 = time.perf_counter()
    backend.run(natives[0])
    backend.synchronize()
    record["first_inference_ms"] = (time.perf_counter() - t0) * 1e3
    return info, natives


def _check_accuracy(
    spec: WorkerSpec, built: Built, reference: Reference, memo: Memo, record: CellRecord
) -> None:
    """The engine's outputs on the evaluation set against the reference's; over the
    precision's threshold, the cell is `accuracy-fail` (and still timed)."""
    record["accuracy_checked"] = reference.outputs is not None
    if reference.outputs is None:
        if built.model.graph_precision:
            record["reason"] = (
                f"accuracy not checked: the model arrives {built.model.graph_precision} and no FP32 "
                "model was given to check it against (--reference FP32.onnx)"
            )
        return
    cell, samples = spec.cell, spec.accuracy.eval_samples
    t0 = time.perf_counter()
    infer = engine_infer(built.backend)
    first = infer(reference.chunks[0])
    key = (
        memo.model_key(built.ref, spec.measure.seed),
        cell.backend,
        cell.precision,
        cell.batch_size,
        cell.threads,
        samples,
    )
    earlier = memo.same_check(key, first)
    if earlier is not None:
        # The same engine and precision in another mode (more streams), giving the same
        # outputs on the first chunk: the full check of the earlier cell stands for it.
        record.update(earlier)
    else:
        candidate = gather(
            [first, *(infer(chunk) for chunk in reference.chunks[1:])], samples, cell.batch_size
        )
        record.update(as_record(accuracy(reference.outputs, candidate, built.model.task == "classification")))
        memo.keep_check(key, cell.key, record, first)
    record["eval_s"] = time.perf_counter() - t0  # the engine's side of the accuracy check
    record["eval_samples"] = samples
    limit = spec.accuracy.threshold(cell.precision)
    record["accuracy_threshold"] = limit
    if not record["rel_l2_err"] <= limit:  # NaN fails too
        # Still timed and reported: a fast wrong answer is worth seeing, never hiding.
        record["status"] = ACCURACY_FAIL
        record["reason"] = f"rel_l2_err {record['rel_l2_err']:.3g} > {limit:g} ({cell.precision} threshold)"


def _check_low_precision(
    spec: WorkerSpec, built: Built, info: PrepareInfo, inputs: Any, record: CellRecord
) -> None:
    """For a bf16, fp16 or int8 cell: what share of the compute really ran in that precision,
    as the engine reports it; too little flags the cell (`lowp_flagged`)."""
    precision = spec.cell.precision
    if precision not in LOW_PRECISIONS:
        return
    share, how = built.backend.lowp(info, inputs, precision)
    record["lowp_share"] = share
    if how:
        record["details"] = {**record["details"], "lowp": how}
    if share is not None:
        record["lowp_flagged"] = share < spec.accuracy.min_lowp_share


def _time(spec: WorkerSpec, built: Built, natives: list[Any], record: CellRecord) -> None:
    """Warm-up and the timed loop, in the cell's mode; the engine is closed after."""
    cell, config, backend = spec.cell, spec.measure, built.backend
    record["timing_scope"] = backend.timing_scope
    t0 = time.perf_counter()
    if cell.mode == "serve":
        _time_serve(spec, built, natives, record)
    elif cell.mode == "throughput":
        record.update(time_throughput(backend, natives, cell.batch_size, config))
    else:
        record.update(time_latency(backend, natives, cell.batch_size, config))
    record["measure_s"] = time.perf_counter() - t0  # warm-up plus the timed loop
    record["details"] = {**record["details"], **backend.run_details()}
    backend.close()


def _time_serve(spec: WorkerSpec, built: Built, natives: list[Any], record: CellRecord) -> None:
    """Serve mode: the input sets at every merged batch size the policies may form, converted
    here, outside every timed region; then each policy's peak (inferbench.cell.serving)."""
    cell, backend = spec.cell, built.backend
    sizes = [b * cell.batch_size for b in range(2, max(spec.serve.max_batch) + 1)]
    if not backend.variable_batch:
        sizes = sizes[:1]  # one size is enough to record why no policy above 1 runs
    at_size = {cell.batch_size: natives}
    for size in sizes:
        at_size[size] = [
            backend.to_native(built.model.make_inputs(size, spec.measure.seed + k))
            for k in range(spec.measure.input_sets)
        ]
    result = time_serve(backend, at_size, cell.batch_size, spec.measure, spec.serve, started=built.started)
    record.update(result.record)
    record["details"] = {**record["details"], **result.details}
    if result.harness_reason and record["status"] == OK:
        # Not a result: the load generator could not keep its own schedule at any rate.
        record["status"] = HARNESS_LIMITED
        record["reason"] = result.harness_reason


def run_guarded(spec: WorkerSpec, memo: Memo | None = None) -> CellRecord:
    """`run_cell` with its failures turned into the cell's row."""
    record: CellRecord
    try:
        record = run_cell(spec, memo)
    except UnsupportedError as exc:
        record = {"status": UNSUPPORTED, "reason": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        record = {"status": ERROR, "reason": f"{type(exc).__name__}: {first_line(exc)}"[:500]}
    record["peak_rss_mb"] = peak_rss_mb()
    return record


def _safe_flops(model: Any) -> float | None:
    try:
        return count_flops(model)
    except Exception:  # FLOPs are informative; never fail a cell over them
        log.warning("FLOP count failed for %s", model.name, exc_info=True)
        return None


def peak_rss_mb() -> float:
    """The process's peak resident memory since start, or since `reset_peak_rss` (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> None:
    """Start the peak-memory reading again (so a shared worker's next cell reports its own
    peak, not the largest of the cells before it); where the kernel cannot, the reading stays
    the process's peak so far, an upper bound."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        log.debug("cannot reset the peak RSS; peak_rss_mb is the process's peak so far")


def _setup(spec: WorkerSpec) -> None:
    """Once per process, before any engine starts: user code path, CPU mask, caches."""
    add_user_path()  # the user's factories and plugins, resolved from where the sweep started
    if spec.pin_cpus:
        # Before any engine starts its thread pools: they inherit this mask.
        os.sched_setaffinity(0, spec.pin_cpus)
    # inductor's on-disk caches live with ours: shared by cells, runs and sweeps, and cleaned
    # with them (`make clean`), rather than in a /tmp folder the machine may wipe.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(spec.cache_dir / "inductor"))


def main(argv: list[str]) -> int:
    configure_logging(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if argv and argv[0] == "--serve":
        return serve(int(argv[1]))
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = WorkerSpec.read(spec_path)
    guard_child(spec.deadline_s)  # gone with the runner, and gone at its own deadline
    _setup(spec)
    atomic_write_json(out_path, run_guarded(spec))
    return 0


def serve(reply_fd: int) -> int:
    """The shared worker's loop: one cell per command line, `done` on the reply pipe after
    each record is written; ends when the runner closes stdin."""
    guard_child(None)  # gone with the runner; each cell's deadline is set as it starts
    memo = Memo(shared=True)
    with os.fdopen(reply_fd, "w") as reply:
        for served, line in enumerate(sys.stdin):
            command = json.loads(line)
            spec = WorkerSpec.read(Path(command["spec"]))
            _to_log(Path(command["log"]))
            reset_deadline(spec.deadline_s)
            if served == 0:  # once, before the first engine starts
                _setup(spec)
            _between_cells()
            record = run_guarded(spec, memo)
            record["worker_cell"] = served  # 0: this cell paid the worker's start-up
            atomic_write_json(Path(command["out"]), record)
            reset_deadline(None)
            sys.stdout.flush()
            sys.stderr.flush()
            reply.write("done\n")
            reply.flush()
    return 0


def _to_log(path: Path) -> None:
    """Point this process's stdout and stderr (engines' native output included) at the cell's
    own log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _between_cells() -> None:
    """What one cell must not inherit from the one before: its garbage, torch.compile's
    compiled-code caches (their recompile limit would otherwise send a later cell to eager
    without a word), and the peak-memory reading."""
    gc.collect()
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()
    reset_peak_rss()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
