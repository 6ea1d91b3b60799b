"""The sweep runner: one worker subprocess per cell, results written as each cell ends.

A crash, hang or exception in a cell costs that cell only: it becomes a row with status
`error` or `timeout` and the reason, and the sweep goes on. A stop (Ctrl-C, SIGTERM, SIGHUP)
kills the running worker's process group and keeps every finished cell; a worker whose
runner is gone ends itself (see `inferbench.sweep.procs.guard_child`).

`run_sweep` goes in steps: validate the selection, plan the cells on this machine, start a
session in the run folder, and run the cells into it. What a cell's measurement is lives in
`inferbench.sweep.repeats`, the rows decided without a worker in `inferbench.sweep.verdicts`,
the models' resolution in `inferbench.sweep.modelrefs`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferbench import layout
from inferbench.ab.calibration import Calibration
from inferbench.backends import load_backend
from inferbench.config import Cell, SweepConfig, resolve_threads, settings_hash
from inferbench.errors import UserError
from inferbench.history.fingerprint import machine_from_env
from inferbench.machine import env
from inferbench.machine.peak import get_peaks, load_peaks, percent_of_peak
from inferbench.models import ModelRef
from inferbench.status import MEASURED
from inferbench.store.runfolder import SCHEMA_VERSION, save_cell, start_session, write_csv
from inferbench.sweep.budget import BudgetClock
from inferbench.sweep.cellkeys import sweep_cells
from inferbench.sweep.launch import SharedWorkers, group_key, pin_cpus
from inferbench.sweep.modelcheck import check_models
from inferbench.sweep.modelrefs import resolve_models

# `ab`'s agent reaches `resolve_models`, `PrecisionCheck`, `static_verdict` and `run_repeats` as
# `runner.<name>` in whichever tree it measures (ab/agent.py), so they stay names of this module.
from inferbench.sweep.repeats import run_repeats
from inferbench.sweep.resume import kept_cells, record_stands
from inferbench.sweep.runlock import run_lock
from inferbench.sweep.shard import Shard
from inferbench.sweep.shutdown import Terminated, signals_held
from inferbench.sweep.verdicts import PrecisionCheck, cpu_for, static_verdict

if TYPE_CHECKING:
    from inferbench.sweep.executor_ray import RayCells, RayExecutor

Job = Callable[[Cell], dict[str, Any]]


@dataclass
class SweepEvents:
    """Callbacks for progress display; all optional."""

    on_start: Callable[[int], None] | None = None  # total cells
    on_cell_start: Callable[[Cell], None] | None = None
    on_cell_done: Callable[[Cell, dict[str, Any]], None] | None = None
    on_notice: Callable[[str], None] | None = None  # one line about a slow step before the cells


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep settled before touching its run folder: its cells with their models,
    engines and settings, the records a resume keeps (`done`, which the loop fills as cells
    end), this machine's environment and ceilings, and what decides rows without a worker."""

    config: SweepConfig
    run_dir: Path
    cache_dir: Path
    cells: list[Cell]
    refs: dict[str, ModelRef]
    classes: dict[str, Any]
    settings: dict[str, dict[str, Any]]
    hashes: dict[str, str]
    done: dict[str, dict[str, Any]]
    environment: dict[str, Any]
    peaks: dict[int, dict[str, Any] | None]
    precision_check: PrecisionCheck | None
    redo_interfered: bool = False
    calibration: Calibration | None = None
    executor: RayExecutor | None = None
    budget: BudgetClock | None = None

    def needs_worker(self, cell: Cell) -> bool:
        """Whether the sweep loop measures this cell: not kept from an earlier session, not
        decided without a worker."""
        if record_stands(self.done.get(cell.key), self.redo_interfered):
            return False
        refs, classes = self.refs, self.classes
        return static_verdict(cell, refs[cell.model], classes[cell.backend], self.precision_check) is None

    def records(self) -> list[dict[str, Any]]:
        """Every record so far in the sweep's cell order; cells of an earlier, wider sweep
        (resume) go last."""
        order = {cell.key: i for i, cell in enumerate(self.cells)}
        return sorted(self.done.values(), key=lambda r: order.get(r["cell_key"], len(order)))


@dataclass(frozen=True)
class SessionStamp:
    """What every row of one session carries: the session's number and what the CPU can do."""

    number: int
    caps: dict[str, Any]


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
    refs, classes = _validate(config, executor, budget_s)
    plan = _plan(
        config,
        run_dir,
        refs,
        classes,
        cache_dir=cache_dir or default_cache_dir(),
        shard=shard,
        resume=resume,
        peak=peak,
        executor=executor,
        redo_interfered=redo_interfered,
        calibration=calibration,
        announce=events.on_notice,
    )
    plan = _with_budget(plan, budget_s, started)
    # Held from the first write to the end: a second run of this folder is refused (exit 2).
    with run_lock(run_dir, fresh=not resume):
        stamp = _start_session(plan, profile or config.name, shard)
        return _run_cells(plan, stamp, events)


def _validate(
    config: SweepConfig, executor: RayExecutor | None, budget_s: float | None
) -> tuple[dict[str, ModelRef], dict[str, Any]]:
    """The sweep's models and engine classes, by name, once the names and options are known good."""
    if executor is not None and budget_s:
        raise UserError("--budget plans one machine's time; it cannot be combined with --executor ray")
    refs = resolve_models(config)
    classes = {b: load_backend(b) for b in config.backends}
    for name, options in config.backend_options.items():
        if name not in classes:
            raise UserError(f"backend options given for {name!r}, which is not in this sweep")
        problem = classes[name].check_options(options)
        if problem:
            raise UserError(problem)
    return refs, classes


def _plan(
    config: SweepConfig,
    run_dir: Path,
    refs: dict[str, ModelRef],
    classes: dict[str, Any],
    *,
    cache_dir: Path,
    shard: Shard | None,
    resume: bool,
    peak: str,
    executor: RayExecutor | None,
    redo_interfered: bool,
    calibration: Calibration | None,
    announce: Callable[[str], None] | None,
) -> SweepPlan:
    """The cells this job runs, their models checked, their settings (and what a resume keeps
    under them), and this machine: its environment, ceilings and precision check."""
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
    settings = {c.key: config.cell_settings(c, _option_defaults(classes[c.backend])) for c in cells}
    hashes = {key: settings_hash(s) for key, s in settings.items()}
    done = kept_cells(run_dir, settings, hashes) if resume else {}

    environment = env.capture(thread_counts, gpu=any(c.device != "cpu" for c in classes.values()))
    _check_calibration(calibration, environment)
    # With an executor the cells run on other machines, whose ceilings are not this one's.
    peak_mode = peak if executor is None else "off"
    peaks = {t: _peaks(peak_mode, cache_dir, t, announce) for t in thread_counts}
    # Other machines' CPUs too: there each worker applies the same check to its own CPU.
    precision_check = (
        PrecisionCheck(cpu_for(classes.values()), config.allow_emulated, peaks) if executor is None else None
    )
    environment["peaks"] = {str(t): p for t, p in peaks.items() if p}
    return SweepPlan(
        config,
        run_dir,
        cache_dir,
        cells,
        refs,
        classes,
        settings,
        hashes,
        done,
        environment,
        peaks,
        precision_check,
        redo_interfered,
        calibration,
        executor,
    )


def _with_budget(plan: SweepPlan, budget_s: float | None, started: float) -> SweepPlan:
    """The plan with its `--budget` clock, planned over the cells that need a worker: a row
    decided without one costs nothing."""
    if not budget_s:
        return plan
    todo = list(filter(plan.needs_worker, plan.cells))
    return replace(plan, budget=BudgetClock(todo, plan.run_dir.parent, budget_s, started=started))


def _start_session(plan: SweepPlan, profile: str, shard: Shard | None) -> SessionStamp:
    """This session's config and environment in the run folder, and a table from the start
    (an empty shard's too)."""
    recorded = {"profile": profile, "started_at": dt.datetime.now().isoformat()}
    recorded.update({"shard": str(shard)} if shard else {})
    number = start_session(plan.run_dir, {**plan.config.to_dict(), **recorded}, plan.environment)
    write_csv(plan.run_dir, plan.records())
    # Every row carries what the CPU can do natively, so a slow bf16 cell explains itself.
    machine = machine_from_env(plan.environment)
    caps = {
        "host": machine.fingerprint,  # the same fingerprint history keys on
        "cpu_native_bf16": plan.environment["cpu"]["native_bf16"],
        "cpu_native_int8": plan.environment["cpu"]["native_int8_dot"],
    }
    return SessionStamp(number, caps)


def _run_cells(plan: SweepPlan, stamp: SessionStamp, events: SweepEvents) -> list[dict[str, Any]]:
    """Every cell in execution order, each row saved as it ends; on a stop, the CSV of every
    finished cell, whole."""
    if events.on_start:
        events.on_start(len(plan.cells))
    config, executor = plan.config, plan.executor
    # Locally, a group's cells share a worker (inferbench.sweep.launch); on Ray every cell is a task.
    shared = SharedWorkers(
        enabled=bool(config.measure.shared_workers) and config.measure.repeats == 1 and executor is None
    )
    job = functools.partial(
        _run_cell,
        refs=plan.refs,
        config=config,
        run_dir=plan.run_dir,
        cache_dir=plan.cache_dir,
        shared=shared,
    )
    measured = _measured_by(executor, job, plan.run_dir, lambda: list(filter(plan.needs_worker, plan.cells)))
    try:
        for cell in _sweep_order(plan.cells, shared.enabled, plan.budget):
            _take_cell(cell, plan, stamp, measured, events)
    except (KeyboardInterrupt, Terminated):
        with signals_held():  # the CSV again, whole, from every finished cell
            write_csv(plan.run_dir, plan.records())
        raise
    finally:
        measured.close()
        shared.close()
    return plan.records()


def _take_cell(
    cell: Cell, plan: SweepPlan, stamp: SessionStamp, measured: HereCells | RayCells, events: SweepEvents
) -> None:
    """One cell of the loop: an earlier session's record that stands is reported as it is;
    any other cell gets its row, saved before the next cell starts."""
    previous = plan.done.get(cell.key)
    if previous is not None and record_stands(previous, plan.redo_interfered):
        if events.on_cell_done:
            events.on_cell_done(cell, previous)
        return
    if events.on_cell_start:
        events.on_cell_start(cell)
    record = _row(cell, plan, stamp, measured)
    with signals_held():  # a stop lands before or after this pair, never between
        save_cell(plan.run_dir, record)
        plan.done[cell.key] = record
        write_csv(plan.run_dir, plan.records())
    if events.on_cell_done:
        events.on_cell_done(cell, record)


def _row(cell: Cell, plan: SweepPlan, stamp: SessionStamp, measured: HereCells | RayCells) -> dict[str, Any]:
    """The cell's row: decided without a worker or measured, with the session's stamp, the
    cell's settings, the calibrated spread and the share of this machine's ceilings."""
    backend_cls = plan.classes[cell.backend]
    check = plan.precision_check
    record = static_verdict(cell, plan.refs[cell.model], backend_cls, check, plan.budget)
    if record is None:
        record = _measure(cell, measured, plan.budget)
        record.update(check.flag(cell, backend_cls) if check else {})
    pinned = ",".join(map(str, pin_cpus(cell.threads))) if plan.config.pin else ""
    extra = {
        "settings": plan.settings[cell.key],
        "settings_hash": plan.hashes[cell.key],
        "session": stamp.number,
    }
    record = _finish({**stamp.caps, "pinned_cpus": pinned, **record, **extra}, cell, plan.run_dir.name)
    record.update(_calibrated_spread(record, plan.calibration))
    on_cpu = backend_cls.device == "cpu"  # the ceilings are the CPU's
    record.update(percent_of_peak(record, plan.peaks[cell.threads] if on_cpu else None))
    return record


@dataclass(frozen=True)
class HereCells:
    """The local executor: each cell measured here, when the sweep loop reaches it."""

    job: Job

    def result(self, cell: Cell) -> dict[str, Any]:
        return self.job(cell)

    def close(self) -> None:
        pass


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


def _peaks(
    mode: str, cache_dir: Path, threads: int, announce: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    if mode == "measure":
        return get_peaks(cache_dir, threads, announce=announce)
    if mode == "cached":
        return load_peaks(cache_dir, threads)
    return None


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
