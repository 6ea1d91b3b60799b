"""The sweep runner: one worker subprocess per cell, results written as each cell ends.

A crash, hang or exception in a cell costs that cell only: it becomes a row with status
`error` or `timeout` and the reason, and the sweep goes on. A stop (Ctrl-C, SIGTERM, SIGHUP)
kills the running worker's process group and keeps every finished cell; a worker whose
runner is gone ends itself (see `inferbench.sweep.procs.guard_child`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferbench import layout
from inferbench.ab.calibration import Calibration
from inferbench.backends import load_backend
from inferbench.cell.stats import bootstrap_ci, latency_intervals, summarize
from inferbench.config import Cell, SweepConfig, resolve_threads, settings_hash
from inferbench.errors import UserError
from inferbench.history.fingerprint import machine_from_env
from inferbench.machine import capability, env
from inferbench.machine.peak import emulation_cost, get_peaks, load_peaks, percent_of_peak
from inferbench.models import ModelRef, resolve_model
from inferbench.models.shapes import parse_point
from inferbench.status import MEASURED, RETRY_ON_RESUME, UNAVAILABLE, UNSUPPORTED
from inferbench.store.runfolder import SCHEMA_VERSION, save_cell, start_session, write_csv
from inferbench.sweep.budget import BudgetClock
from inferbench.sweep.cellkeys import sweep_cells
from inferbench.sweep.launch import SharedWorkers, group_key, pin_cpus, run_in_worker
from inferbench.sweep.modelcheck import check_models
from inferbench.sweep.resume import kept_cells
from inferbench.sweep.runlock import run_lock
from inferbench.sweep.shard import Shard
from inferbench.sweep.shutdown import Terminated, signals_held

if TYPE_CHECKING:
    from inferbench.sweep.executor_ray import RayCells, RayExecutor

log = logging.getLogger(__name__)
Job = Callable[[Cell], dict[str, Any]]


@dataclass
class SweepEvents:
    """Callbacks for progress display; all optional."""

    on_start: Callable[[int], None] | None = None  # total cells
    on_cell_start: Callable[[Cell], None] | None = None
    on_cell_done: Callable[[Cell, dict[str, Any]], None] | None = None
    on_notice: Callable[[str], None] | None = None  # one line about a slow step before the cells


@dataclass(frozen=True)
class PrecisionCheck:
    """Refuses, before any worker, a precision this CPU does not compute natively for a cell's
    engine (inferbench.machine.capability); an emulated one is measured only when allowed, and its
    reason quotes the slowdown the peak probe measured."""

    cpu: capability.Cpu
    allow_emulated: bool = False
    peaks: dict[int, dict[str, Any] | None] | None = None

    def verdict(self, cell: Cell, backend_cls: Any) -> dict[str, Any] | None:
        found = backend_cls.cpu_support(self.cpu, cell.precision)
        reason = capability.refusal(found, self.allow_emulated, self._cost(cell))
        return {"status": UNSUPPORTED, "reason": reason} if reason else None

    def flag(self, cell: Cell, backend_cls: Any) -> dict[str, Any]:
        """`emulated` for a measured row: True, False, or absent where the model says nothing."""
        found = backend_cls.cpu_support(self.cpu, cell.precision)
        return {} if found is None else {"emulated": found.level == capability.EMULATED}

    def _cost(self, cell: Cell) -> str:
        return emulation_cost((self.peaks or {}).get(cell.threads), cell.precision)


def default_cache_dir() -> Path:
    return Path(os.environ.get("INFERBENCH_CACHE", layout.PROJECT_ROOT / ".cache" / "inferbench"))


def new_run_id(profile: str) -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{profile}"


def run_sweep(
    config: SweepConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    cache_dir: Path | None = None,
    events: SweepEvents | None = None,
    peak: str = "off",
    profile: str | None = None,
    shard: Shard | None = None,
    budget_s: float | None = None,
    executor: RayExecutor | None = None,
    redo_interfered: bool = False,
    calibration: Calibration | None = None,
) -> list[dict[str, Any]]:
    """Run every cell of the sweep into `run_dir`; returns all records (old and new).

    `peak`: "off", "cached" (use this machine's cached ceilings if any) or "measure" (measure
    them first when not cached) for each row's `% of peak`. `profile` is recorded in
    `config.json` for `--resume` to find the run by (default: the config's name). `shard`
    runs only that share of the cells (inferbench.sweep.shard); `budget_s` plans the sweep to fit
    that many seconds, turning cells that do not fit into `skipped` rows (inferbench.sweep.budget).
    `executor` runs the cells elsewhere, all at once, one per node (inferbench.sweep.executor_ray).
    `redo_interfered`: on resume, cells whose timed window others disturbed are measured again.
    `calibration`: this runner's A/A calibration (`inferbench.ab.calibration`, refused from another
    machine class); a one-process row gets its spread as `calibrated_spread_pct`.

    Everything that can refuse the sweep (unknown names, bad options, a broken model factory,
    a resume under other settings) does so before the run folder is touched."""
    events = events or SweepEvents()
    started = time.monotonic()  # a budget counts the model check and the ceilings too
    _check_executor(executor, budget_s)
    cache_dir = cache_dir or default_cache_dir()
    refs = resolve_models(config)  # validates before any work starts
    backend_classes = {b: load_backend(b) for b in config.backends}
    for name, options in config.backend_options.items():
        if name not in backend_classes:
            raise UserError(f"backend options given for {name!r}, which is not in this sweep")
        problem = backend_classes[name].check_options(options)
        if problem:
            raise UserError(problem)
    cells = _cells_of(config, shard)
    thread_counts = sorted({c.threads for c in cells})
    checked = check_models(
        list(refs.values()),
        seed=config.measure.seed,
        timeout_s=config.measure.timeout_seconds,
        threads=max(thread_counts, default=resolve_threads(0)),  # an empty shard checks them too
        cache_dir=cache_dir,
    )
    refs = {m: ref for m, ref in zip(refs, checked, strict=True)}
    settings = {c.key: config.cell_settings(c, _option_defaults(backend_classes[c.backend])) for c in cells}
    hashes = {key: settings_hash(s) for key, s in settings.items()}
    done = kept_cells(run_dir, settings, hashes) if resume else {}

    environment = env.capture(thread_counts, gpu=any(c.device != "cpu" for c in backend_classes.values()))
    _check_calibration(calibration, environment)
    # With an executor the cells run on other machines, whose ceilings are not this one's.
    peak_mode = peak if executor is None else "off"
    peaks = {t: _peaks(peak_mode, cache_dir, t, events.on_notice) for t in thread_counts}
    # Other machines' CPUs too: there each worker applies the same check to its own CPU.
    precision_check = (
        PrecisionCheck(_cpu_for(backend_classes.values()), config.allow_emulated, peaks)
        if executor is None
        else None
    )
    environment["peaks"] = {str(t): p for t, p in peaks.items() if p}
    recorded = {"profile": profile or config.name, "started_at": dt.datetime.now().isoformat()}
    recorded.update({"shard": str(shard)} if shard else {})
    needed = functools.partial(
        _needs_worker,
        done=done,
        refs=refs,
        classes=backend_classes,
        redo_interfered=redo_interfered,
        precision_check=precision_check,
    )
    # Planned over the cells that need a worker: a row decided without one costs nothing.
    budget = (
        BudgetClock(list(filter(needed, cells)), run_dir.parent, budget_s, started=started)
        if budget_s
        else None
    )
    # Held from the first write to the end: a second run of this folder is refused (exit 2).
    with run_lock(run_dir, fresh=not resume):
        session = start_session(run_dir, {**config.to_dict(), **recorded}, environment)
        write_csv(run_dir, _in_sweep_order(done, cells))  # a table from the start: an empty shard's too
        # Every row carries what the CPU can do natively, so a slow bf16 cell explains itself.
        machine = machine_from_env(environment)
        caps = {
            "host": machine.fingerprint,  # the same fingerprint history keys on
            "cpu_native_bf16": environment["cpu"]["native_bf16"],
            "cpu_native_int8": environment["cpu"]["native_int8_dot"],
        }

        if events.on_start:
            events.on_start(len(cells))
        # Locally, a group's cells share a worker (inferbench.sweep.launch); on Ray every cell is a task.
        shared = SharedWorkers(
            enabled=bool(config.measure.shared_workers) and config.measure.repeats == 1 and executor is None
        )
        job = functools.partial(
            _run_cell, refs=refs, config=config, run_dir=run_dir, cache_dir=cache_dir, shared=shared
        )
        measured = _measured_by(
            executor,
            job,
            run_dir,
            lambda: list(filter(needed, cells)),
        )
        try:
            for cell in _sweep_order(cells, shared.enabled, budget):
                previous = done.get(cell.key)
                if previous is not None and _kept(previous, redo_interfered):
                    if events.on_cell_done:
                        events.on_cell_done(cell, previous)
                    continue
                if events.on_cell_start:
                    events.on_cell_start(cell)
                backend_cls = backend_classes[cell.backend]
                record = static_verdict(cell, refs[cell.model], backend_cls, precision_check, budget)
                if record is None:
                    record = _measure(cell, measured, budget)
                    record.update(precision_check.flag(cell, backend_cls) if precision_check else {})
                pinned = ",".join(map(str, pin_cpus(cell.threads))) if config.pin else ""
                extra = {
                    "settings": settings[cell.key],
                    "settings_hash": hashes[cell.key],
                    "session": session,
                }
                record = _finish({**caps, "pinned_cpus": pinned, **record, **extra}, cell, run_dir.name)
                record.update(_calibrated_spread(record, calibration))
                on_cpu = backend_classes[cell.backend].device == "cpu"  # the ceilings are the CPU's
                record.update(percent_of_peak(record, peaks[cell.threads] if on_cpu else None))
                with signals_held():  # a stop lands before or after this pair, never between
                    save_cell(run_dir, record)
                    done[cell.key] = record
                    write_csv(run_dir, _in_sweep_order(done, cells))
                if events.on_cell_done:
                    events.on_cell_done(cell, record)
        except (KeyboardInterrupt, Terminated):
            with signals_held():  # the CSV again, whole, from every finished cell
                write_csv(run_dir, _in_sweep_order(done, cells))
            raise
        finally:
            measured.close()
            shared.close()
        return _in_sweep_order(done, cells)


@dataclass(frozen=True)
class HereCells:
    """The local executor: each cell measured here, when the sweep loop reaches it."""

    job: Job

    def result(self, cell: Cell) -> dict[str, Any]:
        return self.job(cell)

    def close(self) -> None:
        pass


def _check_executor(executor: RayExecutor | None, budget_s: float | None) -> None:
    if executor is not None and budget_s:
        raise UserError("--budget plans one machine's time; it cannot be combined with --executor ray")


def _kept(previous: dict[str, Any] | None, redo_interfered: bool = False) -> bool:
    """Whether an earlier session's record of a cell stands (not one to retry, nor a disturbed
    one when those are to be measured again). Until it is replaced it stays in the CSV."""
    if previous is None or previous["status"] in RETRY_ON_RESUME:
        return False
    return not (redo_interfered and previous.get("interfered"))


def _needs_worker(
    cell: Cell,
    done: dict[str, Any],
    refs: dict[str, ModelRef],
    classes: dict[str, Any],
    redo_interfered: bool = False,
    precision_check: PrecisionCheck | None = None,
) -> bool:
    """Whether the sweep loop measures this cell: not kept from an earlier session, not
    decided without a worker."""
    if _kept(done.get(cell.key), redo_interfered):
        return False
    return static_verdict(cell, refs[cell.model], classes[cell.backend], precision_check) is None


def _measured_by(
    executor: RayExecutor | None, job: Job, run_dir: Path, todo: Callable[[], list[Cell]]
) -> HereCells | RayCells:
    """Here, each cell when the loop reaches it; or an executor, handed every cell the loop
    will measure (`todo`) at once, whose records the loop collects in sweep order."""
    if executor is None:
        return HereCells(job)
    cells = todo()
    return executor.start(run_dir, cells, job, sorted({c.threads for c in cells}))


def _run_cell(
    cell: Cell,
    *,
    refs: dict[str, ModelRef],
    config: SweepConfig,
    run_dir: Path,
    cache_dir: Path,
    shared: SharedWorkers | None = None,
) -> dict[str, Any]:
    """A cell's measurement in worker processes (its group's shared worker where enabled),
    here or on a Ray node."""
    return run_repeats(cell, refs[cell.model], config, run_dir, cache_dir, shared)


def _option_defaults(backend_cls: Any) -> dict[str, str]:
    return {key: allowed[0] for key, allowed in backend_cls.options.items()}


def resolve_models(config: SweepConfig) -> dict[str, ModelRef]:
    """The sweep's models by the name its cells use, each checked; input shapes and values
    must each name an input of some ONNX model of the sweep (checked first: a misspelt name
    is the likelier fault than the dims it left open)."""
    options = config.input_options()
    shaped = {name for text in config.shapes for name, _ in parse_point(text).inputs}
    if options or shaped:
        files = [Path(m) for m in config.models if m.endswith(".onnx") and Path(m).is_file()]
        if not files:
            raise UserError(
                "--shape, --input and --batch-axis describe ONNX files' inputs; none in this sweep"
            )
        known = {gi.name for path in files for gi in _declared_inputs(path)}
        unknown = sorted((options.names | shaped) - known)
        if unknown:
            raise UserError(
                f"no ONNX model of this sweep has an input named {', '.join(map(repr, unknown))} "
                f"(inputs: {', '.join(sorted(known))})"
            )
    labels = config.model_labels()
    references = _references(config, labels)
    return {
        label: resolve_model(m, options, references.get(label), config.shapes) for m, label in labels.items()
    }


def _references(config: SweepConfig, labels: dict[str, str]) -> dict[str, str]:
    """--reference by model name; a bare one belongs to the sweep's one ONNX file that arrives
    quantized."""
    from inferbench.models.onnx_inputs import load_graph
    from inferbench.models.onnx_precision import graph_precision

    given = dict(config.references)
    unknown = sorted(set(given) - set(labels.values()) - {""})
    if unknown:
        raise UserError(f"--reference names no model of this sweep: {', '.join(unknown)}")
    if "" in given:
        quantized = [
            label
            for m, label in labels.items()
            if m.endswith(".onnx") and Path(m).is_file() and graph_precision(load_graph(Path(m)))
        ]
        if len(quantized) != 1:
            found = ", ".join(quantized) or "none"
            raise UserError(
                f"--reference without a model name needs exactly one quantized ONNX model in the sweep "
                f"(found: {found}); use --reference NAME=FP32.onnx"
            )
        given[quantized[0]] = given.pop("")
    return given


def _declared_inputs(path: Path) -> list[Any]:
    from inferbench.models.onnx_inputs import graph_inputs, load_graph

    try:
        return graph_inputs(load_graph(path))
    except Exception:  # a broken file: resolve_model names the problem
        return []


def _cpu_for(classes: Any) -> capability.Cpu:
    """This CPU, with the word of each CPU engine in the sweep that reports on itself."""
    engines = tuple({cls.cpu_engine for cls in classes if cls.cpu_engine and cls.device == "cpu"})
    return capability.with_engine_reports(capability.this_cpu(), engines)


def _peaks(
    mode: str, cache_dir: Path, threads: int, announce: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    if mode == "measure":
        return get_peaks(cache_dir, threads, announce=announce)
    if mode == "cached":
        return load_peaks(cache_dir, threads)
    return None


def _in_sweep_order(done: dict[str, dict[str, Any]], cells: list[Cell]) -> list[dict[str, Any]]:
    """Records in the sweep's cell order; cells of an earlier, wider sweep (resume) go last."""
    order = {cell.key: i for i, cell in enumerate(cells)}
    return sorted(done.values(), key=lambda r: order.get(r["cell_key"], len(order)))


def _execution_order(cells: list[Cell]) -> list[Cell]:
    """The sweep's cells with each shared-worker group's cells together (groups in order of
    first appearance, cells in sweep order within them), so one worker serves a whole group.
    Rows are still written in the sweep's order."""
    groups: dict[tuple[str, str, str, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault(group_key(cell), []).append(cell)
    return [cell for group in groups.values() for cell in group]


def _cells_of(config: SweepConfig, shard: Shard | None) -> list[Cell]:
    """The cells this job runs. A shard may hold none (more shards than groups): it still
    writes its run folder, environment and config, and exits 0, so a fixed-size job array
    never fails on it and `merge` takes it like any other."""
    cells = sweep_cells(config)  # two cells with one key are refused, naming both
    return shard.select(cells) if shard else cells


def _sweep_order(cells: list[Cell], shared: bool, budget: BudgetClock | None) -> list[Cell]:
    """Shared-worker groups together; with a budget, the cells its plan left out go last (in
    its order of priority, their groups kept together too)."""
    group = _execution_order if shared else list
    if budget is None:
        return group(cells)
    planned, later = budget.split(cells)
    return group(planned) + group(later)


def _measure(cell: Cell, measured: HereCells | RayCells, budget: BudgetClock | None) -> dict[str, Any]:
    record: dict[str, Any] = measured.result(cell)
    if budget:
        budget.learn(cell, record)  # the estimates of the cells still to come
    return record


def static_verdict(
    cell: Cell,
    ref: ModelRef,
    backend_cls: Any,
    precision_check: PrecisionCheck | None = None,
    budget: BudgetClock | None = None,
) -> dict[str, Any] | None:
    """Rows decided without starting a worker: engine missing, combination not supported, a
    precision this CPU does not compute natively, or no time left in the budget."""
    available = backend_cls.availability()
    if not available.ok:
        return {"status": UNAVAILABLE, "reason": available.reason}
    reason = (
        backend_cls.unsupported_reason(ref, cell.precision)
        or ref.precision_problem(cell.precision)
        or ref.batch_problem(cell.batch_size)
        or ref.shape_problem(cell.shape)
    )
    if reason:
        return {"status": UNSUPPORTED, "reason": reason}
    refused = precision_check.verdict(cell, backend_cls) if precision_check else None
    if refused:
        return refused
    return budget.verdict(cell) if budget else None


def _check_calibration(calibration: Calibration | None, environment: dict[str, Any]) -> None:
    if calibration is not None:
        here = machine_from_env(environment)
        calibration.check_machine(here.fingerprint, here.label, "--calibration")


def _calibrated_spread(record: dict[str, Any], calibration: Calibration | None) -> dict[str, Any]:
    """A one-process row's process-to-process spread from the runner's calibration (the answer's
    "within noise" reads it); nothing for a row with --repeats, which measured its own."""
    if calibration is None or record.get("status") not in MEASURED or int(record.get("repeats") or 1) > 1:
        return {}
    spread = calibration.spread_for(record["cell_key"])
    return {} if spread is None else {"calibrated_spread_pct": spread}


def _finish(record: dict[str, Any], cell: Cell, run_id: str) -> dict[str, Any]:
    return {
        **record,
        **asdict(cell),
        "cell_key": cell.key,
        "run_id": run_id,
        "schema_version": SCHEMA_VERSION,
    }


def run_repeats(
    cell: Cell,
    ref: ModelRef,
    config: SweepConfig,
    run_dir: Path,
    cache_dir: Path,
    shared: SharedWorkers | None = None,
) -> dict[str, Any]:
    """Run the cell in `repeats` fresh processes and merge them; a failed repeat stops it.
    A single repeat runs through `shared` when given (a shared worker where it is enabled)."""
    records = []
    run = shared.run if shared is not None and config.measure.repeats == 1 else None
    for _ in range(config.measure.repeats):
        record = run_clean(cell, ref, config, run_dir, cache_dir, run)
        records.append(record)
        if record["status"] not in MEASURED:
            break
    measure = config.measure
    return merge_repeats(records, cell.batch_size, measure.bootstrap_resamples, measure.tail_samples)


def run_clean(
    cell: Cell,
    ref: ModelRef,
    config: SweepConfig,
    run_dir: Path,
    cache_dir: Path,
    run: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One process's measurement, re-measured while its timed window was `interfered` (up to
    `interference_retries` more times); a record still disturbed after that keeps the flag."""
    run = run or run_in_worker
    record = run(cell, ref, config, run_dir, cache_dir)
    tries = 0
    while record.get("interfered") and tries < config.measure.interference_retries:
        tries += 1
        log.info(
            "%s: %.0f%% of its cores used by others, %.0f%% stolen; measuring again (%d/%d)",
            cell.key,
            record.get("interference_pct") or 0,
            record.get("steal_pct") or 0,
            tries,
            config.measure.interference_retries,
        )
        record = run(cell, ref, config, run_dir, cache_dir)
    return {**record, "remeasured": tries}


def merge_repeats(
    records: list[dict[str, Any]], batch_size: int, resamples: int = 2000, tail_samples: int = 500
) -> dict[str, Any]:
    """One record from several processes: samples pooled for the summary, kept per process for
    comparisons, intervals bootstrapped over processes then samples, and the spread of the
    per-process medians (and throughputs) reported."""
    last = records[-1]
    if last["status"] not in MEASURED or len(records) == 1:
        return {**last, "repeats": len(records)}
    per_process = [r["latencies_ns"] for r in records]
    medians = [r["latency_p50_ms"] for r in records]
    throughputs = [r["throughput_sps"] for r in records]
    pooled = [x for p in per_process for x in p]
    merged = {**records[0], **summarize(pooled, batch_size)}
    merged.update(latency_intervals(per_process, batch_size, resamples))
    if "throughput_slices_sps" in records[0]:  # throughput mode: counted, not from latency
        slices = [r["throughput_slices_sps"] for r in records]
        low, high = bootstrap_ci(slices, lambda x: float(x.mean()), resamples)
        merged.update(
            {
                "throughput_sps": float(np.mean(throughputs)),
                "throughput_ci_low_sps": low,
                "throughput_ci_high_sps": high,
                "process_throughput_slices_sps": slices,
            }
        )
    merged.update(
        {
            "latencies_ns": pooled,
            "process_latencies_ns": per_process,
            "repeats": len(records),
            "process_p50_spread_pct": _spread_pct(medians),
            "process_throughput_spread_pct": _spread_pct(throughputs),
            "p99_reliable": len(pooled) >= tail_samples,
            "capped": any(r.get("capped") for r in records),
            **_merged_interference(records),
            "warmup_stable": all(r.get("warmup_stable") for r in records),
            "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in records),
            "wall_s": sum(r.get("wall_s") or 0 for r in records),
        }
    )
    return merged


def _merged_interference(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Across processes: the worst window, and flagged if any process stayed disturbed."""
    if not any("interference_pct" in r for r in records):
        return {}
    merged: dict[str, Any] = {"interfered": any(r.get("interfered") for r in records)}
    for column in ("interference_pct", "steal_pct", "sys_pct"):
        merged[column] = max(r.get(column) or 0.0 for r in records)
    merged["nivcsw"] = sum(r.get("nivcsw") or 0 for r in records)
    merged["remeasured"] = sum(r.get("remeasured") or 0 for r in records)
    return merged


def _spread_pct(values: list[float]) -> float:
    return 100 * (max(values) - min(values)) / float(np.median(values))
