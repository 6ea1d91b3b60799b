"""The plain functions behind each CLI subcommand (tests call these directly)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from inferbench.ab.calibration import Calibration
from inferbench.backends import backend_names, load_backend
from inferbench.config import Cell, SweepConfig, load_profile, profile_id, profile_names
from inferbench.errors import EXIT_INTERNAL, EXIT_OK, InternalError, UserError, first_line
from inferbench.models import BUILTIN_MODELS
from inferbench.status import MEASURED, OK
from inferbench.store.runfolder import latest_run
from inferbench.sweep.runner import SweepEvents, new_run_id, run_sweep
from inferbench.sweep.shutdown import Terminated
from inferbench.util import one_component

# soft_wrap: a long path is printed whole (a terminal may wrap it), never folded mid-name.
console = Console(stderr=True, soft_wrap=True)


def run_command(
    *,
    profile: str,
    models: list[str] | None = None,
    backends: list[str] | None = None,
    precisions: list[str] | None = None,
    batch_sizes: list[int] | None = None,
    threads: list[int] | None = None,
    modes: list[str] | None = None,
    pin: bool | None = None,
    allow_emulated: bool | None = None,
    inputs: dict[str, Any] | None = None,
    repeats: int | None = None,
    fresh_workers: bool = False,
    peak: str = "off",
    backend_options: dict[str, dict[str, str]] | None = None,
    run_id: str | None = None,
    resume: bool = False,
    redo_interfered: bool = False,
    results_dir: Path = Path("results"),
    cache_dir: Path | None = None,
    progress: bool = False,
    reports_dir: Path | None = Path("reports"),
    shard: str | None = None,
    budget: str | None = None,
    history: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    calibration: Path | None = None,
) -> int:
    """`history`: the database URL this sweep is appended to at its end (None: not recorded).
    `executor` "ray" runs the cells as Ray tasks, one per node (`ray_address`: the cluster).
    `calibration`: a calibration.json of this machine class (`ab --calibrate`), whose spread
    widens one-process rows' noise band in the answer."""
    from inferbench.sweep.budget import parse_budget
    from inferbench.sweep.shard import parse_shard

    if run_id is not None:
        one_component(run_id, "--run-id")  # where it enters: the run folder stays in results_dir
    shard_of = parse_shard(shard) if shard else None
    budget_s = parse_budget(budget) if budget else None
    config = load_profile(profile).with_overrides(
        models=models,
        backends=backends,
        precisions=precisions,
        batch_sizes=batch_sizes,
        threads=threads,
        modes=modes,
        pin=pin,
        allow_emulated=allow_emulated,
        backend_options=backend_options,
        **(inputs or {}),
    )
    config = _process_overrides(config, repeats, fresh_workers)
    profile_key = profile_id(profile)
    if redo_interfered and not resume:
        raise UserError("--redo-interfered goes with --resume (it measures a run's disturbed cells again)")
    if run_id is None and resume:
        found = latest_run(results_dir, profile_key)
        if found is None:
            raise UserError(f"--resume: no earlier run of profile {profile!r} under {results_dir}")
        run_id = found.name
    run_dir = results_dir / (run_id or new_run_id(config.name))
    if run_dir.exists() and not resume and any((run_dir / "cells").glob("*.json")):
        raise UserError(f"{run_dir} already holds results; pass --resume or another --run-id")

    try:
        with _progress(progress) as events:
            records = run_sweep(
                config,
                run_dir,
                resume=resume,
                cache_dir=cache_dir,
                events=events,
                peak=peak,
                profile=profile_key,
                shard=shard_of,
                budget_s=budget_s,
                executor=_executor(executor, ray_address),
                redo_interfered=redo_interfered,
                calibration=Calibration.load(calibration) if calibration is not None else None,
            )
    except (Terminated, KeyboardInterrupt) as exc:
        # Keep the line the CLI prints pointing at this run and at the way to go on.
        exc.add_note(f"finished cells are kept in {run_dir} (go on with --resume --run-id {run_dir.name})")
        raise
    except (UserError, InternalError) as exc:
        if isinstance(exc, InternalError) and exc.log_dir is None:
            exc.log_dir = run_dir / "logs"
        raise
    except Exception as exc:  # disk full, MemoryError, a bug: exit 4, traceback in the run's log
        raise InternalError(f"{type(exc).__name__}: {first_line(exc)}", log_dir=run_dir / "logs") from exc
    _print_summary(records)
    console.print(f"results: {run_dir / 'results.csv'}", soft_wrap=True)  # a path stays whole
    if history is not None:
        from inferbench.history.commands import record_run

        record_run(run_dir, history)  # warns on failure, never raises: the run is saved already
    if reports_dir is not None:
        report_command(run_dir, reports_dir)
    return _nothing_measured(records)


def _nothing_measured(records: list[dict[str, Any]]) -> int:
    """Fail closed: a sweep in which no cell produced a number exits 4 (an environment
    failure, as cli.EXIT_CODES says; not 2, since nothing the user typed was wrong), after its
    rows, report and history are written. A shard with no cell at all is a success."""
    if not records or any(r.get("status") in MEASURED for r in records):
        return EXIT_OK
    console.print(
        f"[bold red]no cell produced a number[/] ({len(records)} cell(s), none measured); "
        "the reason column of results.csv says why",
        highlight=False,
    )
    return EXIT_INTERNAL


def _executor(name: str, ray_address: str | None) -> Any:
    if name == "local":
        if ray_address:
            raise UserError("--ray-address needs --executor ray")
        return None
    if name == "ray":
        from inferbench.sweep.executor_ray import RayExecutor

        return RayExecutor(ray_address)
    raise UserError(f"executor must be one of local, ray; got {name!r}")


def report_command(run_dir: Path, reports_dir: Path, compare_with: Path | None = None) -> int:
    """The run's report; with `compare_with`, also the comparison page of the two runs (base =
    `compare_with`, new = `run_dir`): `reports/<run>-vs-<other>.html`. A report only shows, so
    runs from different machines or settings are compared anyway, the page naming the mismatch,
    and the exit code is 0 whatever the verdicts."""
    import re

    from inferbench.compare.html import render_compare_html
    from inferbench.compare.report import headline
    from inferbench.compare.runs import CompareOptions, compare_dirs
    from inferbench.report.page import write_report
    from inferbench.util import atomic_write_text

    options = CompareOptions()
    # Compared first: a bad OTHER_RUN stops here, before anything is written.
    c = compare_dirs(compare_with, run_dir, options, allow_mismatch=True) if compare_with else None
    html_path, md_path = write_report(run_dir, reports_dir)
    console.print(f"report: {html_path}  summary: {md_path}")
    if c is not None:
        name = re.sub(r"[^\w.-]", "_", f"{c.new.name}-vs-{c.base.name}")  # run names are free text
        page = reports_dir / f"{name}.html"
        atomic_write_text(page, render_compare_html(c.frame, c.unmatched, options, c.base, c.new, c.notes))
        console.print(f"comparison: {page}  ({headline(c.frame).replace('**', '')})", highlight=False)
    return 0


def merge_command(run_dirs: list[Path], out_dir: Path, reports_dir: Path | None) -> int:
    """Merge shards; exit 0 even with missing cells, which are listed (and in merge.json)."""
    from inferbench.sweep.merge import merge_runs

    merged = merge_runs(run_dirs, out_dir)
    console.print(f"merged {merged.cells} cells from shards {', '.join(merged.shards)} into {out_dir}")
    for name in merged.missing:
        console.print(f"missing: {name}")
    if merged.missing:
        console.print(f"[bold yellow]{len(merged.missing)} cell(s) of the sweep are in no shard[/]")
    if reports_dir is not None:
        report_command(out_dir, reports_dir)
    return 0


def compare_command(
    base: Path,
    new: Path,
    *,
    max_regression: float = 0.05,
    thresholds: dict[str, float] | None = None,
    alpha: float = 0.05,
    out_dir: Path | None = None,
    allow_mismatch: bool = False,
) -> int:
    """Exit code 0 = no regression, 1 = regression or broken cell, 3 = could not decide
    (usage errors and refused mismatches raise UserError -> 2)."""
    from inferbench.compare.runs import CompareOptions, compare_runs

    options = CompareOptions(max_regression=max_regression, thresholds=thresholds or {}, alpha=alpha)
    frame, unmatched, md_path = compare_runs(base, new, options, out_dir, allow_mismatch=allow_mismatch)
    return print_verdict(frame, unmatched, md_path, f"{base.name} -> {new.name} (ratio NEW/BASE, 95% CI)")


def print_verdict(frame: Any, unmatched: Any, md_path: Path, title: str) -> int:
    """The comparison's table and verdict on the terminal; returns the exit code."""
    from inferbench.compare.report import failing_cells, terminal_table
    from inferbench.compare.runs import exit_code

    console.print(terminal_table(frame, title))
    for item in unmatched.to_dict("records"):
        console.print(
            f"unmatched (only in {item['only_in']}): {item['model']} {item['backend']} "
            f"{item['precision']} b{item['batch_size']} t{item['threads']}"
        )
    code = exit_code(frame)
    if code == 1:
        names = failing_cells(frame)
        console.print(f"[bold red]REGRESSION[/] in {len(names)} cell(s): {', '.join(names)}")
    elif frame.empty:
        console.print("[yellow]UNDECIDED[/]: nothing was compared (no cell on both sides)")
    elif code == 3:
        undecided = frame[frame["inconclusive"]]
        names = sorted(
            {f"{r.model}/{r.backend}/{r.precision}/b{r.batch_size}" for r in undecided.itertuples()}
        )
        console.print(f"[yellow]UNDECIDED[/]: {len(names)} inconclusive cell(s): {', '.join(names)}")
    else:
        console.print("no regression")
    page = md_path.with_name("compare.html")
    console.print(f"summary: {md_path}" + (f"  page: {page}" if page.is_file() else ""))
    return code


class _progress:
    """A rich progress bar fed by the runner's events (or nothing, when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> SweepEvents:
        if not self.enabled:  # a slow step before the cells is still announced, in one line
            return SweepEvents(on_notice=self._notice)
        self.bar.start()
        return SweepEvents(
            on_start=self._start, on_cell_start=self._cell, on_cell_done=self._done, on_notice=self._notice
        )

    def _notice(self, text: str) -> None:
        console.print(text, highlight=False, markup=False)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()

    def _start(self, total: int) -> None:
        self.task = self.bar.add_task("starting", total=total)

    def _cell(self, cell: Cell) -> None:
        self.bar.update(
            self.task,
            description=f"{cell.model} {cell.backend} {cell.precision} b{cell.batch_size} {cell.mode}",
        )

    def _done(self, cell: Cell, record: dict[str, Any]) -> None:
        self.bar.advance(self.task)


def _print_summary(records: list[dict[str, Any]]) -> None:
    """The answer, not every cell: the fastest trusted cell per model, batch size and mode
    (inferbench.report.answer), then status counts. Every cell is in results.csv and the report."""
    from inferbench.report.answer import answer_frame, answer_lines, answers

    if not records:
        return
    frame = answer_frame(records)
    console.print("[bold]Answer[/]: the fastest cell that passed its accuracy check and is not flagged")
    for line in answer_lines(answers(frame)):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    counts = frame["status"].value_counts().to_dict()
    console.print("cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), highlight=False)
    if any(status != OK for status in counts):
        console.print("why cells did not run or were left out: the reason column of results.csv, summary.md")


def list_command() -> int:
    out = Console()
    table = Table(title="backends on this machine")
    for col in ("backend", "available", "precisions", "reason"):
        table.add_column(col)
    for name in backend_names():
        cls = load_backend(name)
        avail = cls.availability()
        table.add_row(name, "yes" if avail.ok else "no", ", ".join(sorted(cls.precisions)), avail.reason)
    out.print(table)
    out.print("models: " + ", ".join(BUILTIN_MODELS) + " (or a .onnx path, or package.module:factory)")
    out.print("profiles: " + ", ".join(profile_names()))
    return 0


def doctor_command() -> int:
    """What this machine can run: CPU features, then every backend x precision with the reason
    for each gap (model-specific limits are in the notes). The CPU's answers come from the
    capability model (inferbench.machine.capability), with an emulated precision's slowdown when this
    machine's ceilings are cached (`inferbench peak`)."""
    from rich.markup import escape

    from inferbench.config import PRECISIONS, resolve_threads
    from inferbench.machine import capability
    from inferbench.machine.peak import load_peaks
    from inferbench.models import ModelRef
    from inferbench.sweep.runner import default_cache_dir

    out = Console()
    cpu = capability.with_engine_reports(capability.this_cpu())
    described = capability.describe(cpu)
    flags = ", ".join(described["features"]) or "none listed"
    summary = f"{cpu.model} ({cpu.arch}), {os.cpu_count()} logical CPUs; {cpu.isa_summary()}"
    out.print(f"CPU: {summary}", markup=False)
    out.print(f"ISA: {flags}", markup=False)
    for variable, value in cpu.caps.items():
        honoured = capability.CAPS_HONOURED_BY.get(
            variable, capability.CAPS_HONOURED_BY["ONEDNN_MAX_CPU_ISA"]
        )
        out.print(f"capped by {variable}={value} (honoured by {', '.join(honoured)})", markup=False)
    for problem in cpu.problems:
        out.print(problem, markup=False)
    natives = (
        f"native bf16: {described['native_bf16']}   native int8 dot product: {described['native_int8_dot']}"
    )
    out.print(natives)
    out.print(f"GPU: {escape(_gpu_line())}")
    peaks = load_peaks(default_cache_dir(), resolve_threads(0))
    table = Table(title="backend x precision on this machine")
    table.add_column("backend")
    for precision in PRECISIONS:
        table.add_column(precision)
    probe = ModelRef("resnet50", "builtin")
    notes: dict[str, int] = {}  # footnote text -> number; keeps the table narrow

    def footnote(text: str) -> str:
        return f"({notes.setdefault(text, len(notes) + 1)})" if text else ""

    for name in backend_names():
        cls = load_backend(name)
        avail = cls.availability()
        cells = []
        for precision in PRECISIONS:
            reason = avail.reason if not avail.ok else cls.unsupported_reason(probe, precision)
            found = None if reason else cls.cpu_support(cpu, precision)
            if found and found.level == capability.UNAVAILABLE:
                reason = found.why
            if reason:
                cells.append(f"[red]no[/] {footnote(reason)}")
            elif found and found.level == capability.EMULATED:
                cells.append(f"[yellow]emulated[/] ({_slowdown(peaks, precision)}) {footnote(found.why)}")
            else:
                cells.append(f"[green]yes[/] {footnote(cls.precision_notes.get(precision, ''))}".strip())
        table.add_row(escape(name), *cells)
    out.print(table)
    for text, number in notes.items():
        out.print(f"({number}) {text}", soft_wrap=True, markup=False, highlight=False)
    if any(level == capability.EMULATED for e in described["support"].values() for level in _levels(e)):
        out.print("emulated precisions are `unsupported` in a sweep unless --allow-emulated", markup=False)
    return 0


def _levels(support: dict[str, dict[str, str]]) -> list[str]:
    return [entry["level"] for entry in support.values()]


def _slowdown(peaks: dict[str, Any] | None, precision: str) -> str:
    record = ((peaks or {}).get("emulated") or {}).get(precision) or {}
    slowdown = record.get("slowdown_vs_fp32")
    return f"{slowdown:g}x slower than fp32" if slowdown else "cost unmeasured: inferbench peak"


def _gpu_line() -> str:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "unknown (torch not installed)"
    from inferbench.backends.cuda import gpu_info

    gpu = gpu_info()
    if not gpu:
        return "none usable (no CUDA device, or a CPU-only torch build)"
    facts = (f"compute capability {gpu.get('compute_capability')}", f"driver {gpu.get('driver')}")
    return f"{gpu.get('name')}, " + ", ".join(facts)


def peak_command(threads: list[int], *, refresh: bool = False, cache_dir: Path | None = None) -> int:
    from inferbench.config import resolve_threads
    from inferbench.machine.peak import PEAK_KEYS, get_peaks
    from inferbench.sweep.runner import default_cache_dir

    table = Table("threads", "FP32 GFLOP/s", "BF16 GFLOP/s", "INT8 GOP/s", "memory GB/s", "source")
    for t in dict.fromkeys(resolve_threads(t) for t in threads):
        peaks = get_peaks(cache_dir or default_cache_dir(), t, refresh=refresh, announce=console.print)
        if peaks["cached"]:
            console.print(f"threads={t}: from the cache ({peaks.get('measured_at')}); --refresh re-measures")
        table.add_row(
            str(t),
            *(_ceiling_text(peaks, precision, key) for precision, key in PEAK_KEYS.items()),
            f"{peaks['memory_gbps']:.1f}",
            "cache" if peaks["cached"] else "measured now",
        )
    console.print(table)
    return 0


def _ceiling_text(peaks: dict[str, Any], precision: str, key: str) -> str:
    """A ceiling, or what stands in its place: an emulated rate (never a ceiling), or '-'."""
    if peaks.get(key):
        return f"{peaks[key]:.0f}"
    emulated = (peaks.get("emulated") or {}).get(precision)
    if emulated and emulated.get("gflops"):
        return f"emulated: {emulated['gflops']:.2g} ({_slowdown(peaks, precision)})"
    return "-"


def _process_overrides(config: SweepConfig, repeats: int | None, fresh_workers: bool) -> SweepConfig:
    """`--repeats N` and `--fresh-workers`: how many processes measure each cell."""
    measure = config.measure
    if repeats is not None:
        if repeats < 1:
            raise UserError(f"--repeats must be >= 1; got {repeats}")
        measure = replace(measure, repeats=repeats)
    if fresh_workers:
        measure = replace(measure, shared_workers=0)
    return replace(config, measure=measure)
