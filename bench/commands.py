"""The plain functions behind each CLI subcommand (tests call these directly)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from inferbench.backends import backend_names, load_backend
from inferbench.config import Cell, load_profile, profile_names
from inferbench.errors import UserError
from inferbench.models import BUILTIN_MODELS
from inferbench.runner import SweepEvents, new_run_id, run_sweep

console = Console(stderr=True)


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
    repeats: int | None = None,
    peak: str = "off",
    backend_options: dict[str, dict[str, str]] | None = None,
    run_id: str | None = None,
    resume: bool = False,
    results_dir: Path = Path("results"),
    cache_dir: Path | None = None,
    progress: bool = False,
    reports_dir: Path | None = Path("reports"),
) -> int:
    config = load_profile(profile).with_overrides(
        models=models,
        backends=backends,
        precisions=precisions,
        batch_sizes=batch_sizes,
        threads=threads,
        modes=modes,
        pin=pin,
        backend_options=backend_options,
    )
    if repeats is not None:
        if repeats < 1:
            raise UserError(f"--repeats must be >= 1; got {repeats}")
        config = replace(config, measure=replace(config.measure, repeats=repeats))
    if run_id is None and resume:
        run_id = _latest_run(results_dir, config.name)
    run_dir = results_dir / (run_id or new_run_id(config.name))
    if run_dir.exists() and not resume and any((run_dir / "cells").glob("*.json")):
        raise UserError(f"{run_dir} already holds results; pass --resume or another --run-id")

    with _progress(progress) as events:
        records = run_sweep(config, run_dir, resume=resume, cache_dir=cache_dir, events=events, peak=peak)
    _print_summary(records)
    console.print(f"results: {run_dir / 'results.csv'}")
    if reports_dir is not None:
        report_command(run_dir, reports_dir)
    return 0


def report_command(run_dir: Path, reports_dir: Path) -> int:
    from inferbench.report import write_report

    html_path, md_path = write_report(run_dir, reports_dir)
    console.print(f"report: {html_path}  summary: {md_path}")
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
    from inferbench.compare import CompareOptions, compare_runs

    options = CompareOptions(max_regression=max_regression, thresholds=thresholds or {}, alpha=alpha)
    frame, unmatched, md_path = compare_runs(base, new, options, out_dir, allow_mismatch=allow_mismatch)
    return print_verdict(frame, unmatched, md_path, f"{base.name} -> {new.name} (ratio NEW/BASE, 95% CI)")


def print_verdict(frame: Any, unmatched: Any, md_path: Path, title: str) -> int:
    """The comparison's table and verdict on the terminal; returns the exit code."""
    from inferbench.compare import exit_code
    from inferbench.compare_report import failing_cells, terminal_table

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
    elif code == 3:
        undecided = frame[frame["inconclusive"]]
        names = sorted(
            {f"{r.model}/{r.backend}/{r.precision}/b{r.batch_size}" for r in undecided.itertuples()}
        )
        console.print(f"[yellow]UNDECIDED[/]: {len(names)} inconclusive cell(s): {', '.join(names)}")
    else:
        console.print("no regression")
    console.print(f"summary: {md_path}")
    return code


def _latest_run(results_dir: Path, profile: str) -> str:
    runs = sorted(p.name for p in results_dir.glob(f"*-{profile}") if (p / "cells").is_dir())
    if not runs:
        raise UserError(f"--resume: no earlier run of profile {profile!r} under {results_dir}")
    return runs[-1]


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

    def __enter__(self) -> SweepEvents | None:
        if not self.enabled:
            return None
        self.bar.start()
        return SweepEvents(on_start=self._start, on_cell_start=self._cell, on_cell_done=self._done)

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
    table = Table(title="p50 latency (ms) / throughput (samples/s)")
    for col in (
        "model",
        "backend",
        "precision",
        "batch",
        "threads",
        "mode",
        "status",
        "p50 ms",
        "samples/s",
    ):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=60 if col == "status" else None)
    for r in records:
        ok = r["status"] == "ok"
        table.add_row(
            r["model"],
            r["backend"],
            r["precision"],
            str(r["batch_size"]),
            str(r["threads"]),
            r.get("mode") or "latency",
            r["status"] if ok else f"{r['status']}: {r.get('reason', '')[:60]}",
            f"{r['latency_p50_ms']:.3f}" if ok else "",
            f"{r['throughput_sps']:.1f}" if ok else "",
        )
    console.print(table)


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
    for each gap (model-specific limits are in the notes)."""
    from inferbench.config import PRECISIONS
    from inferbench.env import cpu_info
    from inferbench.models import ModelRef

    out = Console()
    cpu = cpu_info()
    flags = ", ".join(f for f, present in cpu["isa"].items() if present)
    out.print(f"CPU: {cpu['model']}, {cpu['logical_cpus']} logical CPUs; ISA: {flags}")
    out.print(f"native bf16: {cpu['native_bf16']}   native int8 dot product: {cpu['native_int8_dot']}")
    out.print(f"GPU: {_gpu_line()}")
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
            if reason:
                cells.append(f"[red]no[/] {footnote(reason)}")
            else:
                cells.append(f"[green]yes[/] {footnote(cls.precision_notes.get(precision, ''))}".strip())
        table.add_row(name, *cells)
    out.print(table)
    for text, number in notes.items():
        out.print(f"({number}) {text}", soft_wrap=True)
    return 0


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
    from inferbench.peak import PEAK_KEYS, get_peaks
    from inferbench.runner import default_cache_dir

    table = Table("threads", "FP32 GFLOP/s", "BF16 GFLOP/s", "INT8 GOP/s", "memory GB/s", "source")
    for t in dict.fromkeys(resolve_threads(t) for t in threads):
        peaks = get_peaks(cache_dir or default_cache_dir(), t, refresh=refresh)
        if peaks["cached"]:
            console.print(f"threads={t}: from the cache ({peaks.get('measured_at')}); --refresh re-measures")
        table.add_row(
            str(t),
            *(f"{peaks[k]:.0f}" if peaks.get(k) else "-" for k in PEAK_KEYS.values()),
            f"{peaks['memory_gbps']:.1f}",
            "cache" if peaks["cached"] else "measured now",
        )
    console.print(table)
    return 0
