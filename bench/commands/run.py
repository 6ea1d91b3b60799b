"""`inferbench run`: one sweep of a profile, narrowed by the selection flags, into
results/<run-id>/; then the answer on the terminal, the history, the report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inferbench.argtypes import budget
from inferbench.commands.base import EXIT_CODES, Command, Subparsers, console
from inferbench.commands.history import add_run_flags
from inferbench.commands.report import report_command
from inferbench.commands.selection import add_setting_arguments, add_sweep_arguments, selection_from_args
from inferbench.config import Cell, Selection, SweepConfig, load_profile, profile_id
from inferbench.errors import EXIT_INTERNAL, EXIT_OK, InternalError, UserError, first_line
from inferbench.status import MEASURED, OK
from inferbench.util import one_component


@dataclass(frozen=True)
class RunRequest:
    """Everything `run` is asked: the profile and the selection of its cells, how the cells are
    measured, where the run goes and what follows it. The defaults are the plain call's, not
    the command line's (no progress bar, no peak ceilings)."""

    profile: str
    selection: Selection = field(default_factory=Selection)
    # How many processes measure each cell: `--repeats N`; `--fresh-workers`: one per cell.
    repeats: int | None = None
    fresh_workers: bool = False
    peak: str = "off"  # % of peak per row: cached ceilings, measured if missing, or off
    run_id: str | None = None
    resume: bool = False
    redo_interfered: bool = False
    results_dir: Path = Path("results")
    cache_dir: Path | None = None
    progress: bool = False
    reports_dir: Path | None = Path("reports")  # None: no report
    shard: str | None = None  # "I/N" or "auto"
    budget: str | None = None  # a duration, e.g. "15m"
    # The database URL this sweep is appended to at its end (None: not recorded).
    history: str | None = None
    # "ray" runs the cells as Ray tasks, one per node (`ray_address`: the cluster).
    executor: str = "local"
    ray_address: str | None = None
    # A calibration.json of this machine class (`ab --calibrate`), whose spread widens
    # one-process rows' noise band in the answer.
    calibration: Path | None = None


class Run(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers,
            "run",
            help="run a sweep and write results/<run-id>/",
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--profile", default="cpu", help="built-in profile name or a .toml path")
        add_sweep_arguments(parser)
        parser.add_argument("--repeats", type=int, help="fresh worker processes per cell")
        parser.add_argument(
            "--fresh-workers",
            action="store_true",
            help="one process per cell (default: a model/backend/precision's cells share one)",
        )
        parser.add_argument(
            "--peak",
            choices=("cached", "measure", "off"),
            default="cached",
            help="%% of peak per row: cached ceilings only (default), measure them if missing, or off",
        )
        add_setting_arguments(parser, inputs=True)
        cls._add_run_arguments(parser)
        add_run_flags(parser)

    @classmethod
    def _add_run_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Where the run goes, how it goes on, how its cells are spread, and what follows it."""
        parser.add_argument("--run-id", help="name of the run directory (default: timestamp-profile)")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="keep finished cells of --run-id (or of the latest run of exactly this profile); "
            "retries error/timeout/unavailable cells; refused if settings changed",
        )
        parser.add_argument(
            "--redo-interfered",
            action="store_true",
            help="with --resume: also measure again the cells flagged interfered (others used their cores)",
        )
        parser.add_argument(
            "--calibration",
            type=Path,
            metavar="FILE",
            help="this runner's calibration.json (`ab --calibrate`): one-process rows get its "
            'process-to-process spread, and the answer\'s "within noise" uses it',
        )
        parser.add_argument(
            "--shard",
            metavar="I/N|auto",
            help="run only shard I of N (a stable hash of each cell); auto reads Slurm/Kubernetes variables",
        )
        parser.add_argument(
            "--budget",
            type=budget,
            metavar="DURATION",
            help="fit the sweep in e.g. 15m: cells that do not fit become `skipped` rows (see README)",
        )
        parser.add_argument(
            "--executor",
            choices=("local", "ray"),
            default="local",
            help="ray: each cell a Ray task, one per node (needs inferbench[ray]; see README)",
        )
        parser.add_argument(
            "--ray-address", help="the Ray cluster to join (default: a local one-node instance)"
        )
        parser.add_argument("--results-dir", type=Path, default=Path("results"))
        parser.add_argument("--cache-dir", type=Path, help="artifact cache (default .cache/inferbench)")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
        parser.add_argument("--no-report", action="store_true", help="skip the HTML report and summary.md")

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        selection = selection_from_args(args)
        history = None
        if not args.no_history:  # --history, else $INFERBENCH_HISTORY, else <results-dir>/history.sqlite
            from inferbench.history.commands import resolve_url

            history = resolve_url(args.history, args.results_dir)
        request = RunRequest(
            profile=args.profile,
            selection=selection,
            repeats=args.repeats,
            fresh_workers=args.fresh_workers,
            peak=args.peak,
            run_id=args.run_id,
            resume=args.resume,
            redo_interfered=args.redo_interfered,
            results_dir=args.results_dir,
            cache_dir=args.cache_dir,
            progress=not args.no_progress and sys.stderr.isatty(),
            reports_dir=None if args.no_report else args.reports_dir,
            shard=args.shard,
            budget=args.budget,
            history=history,
            executor=args.executor,
            ray_address=args.ray_address,
            calibration=args.calibration,
        )
        return run_command(request)


def run_command(request: RunRequest) -> int:
    """Run the sweep `request` asks for; exit 0, or 4 when no cell produced a number (usage
    errors raise UserError -> 2, internal ones InternalError -> 4, with the run's log)."""
    from inferbench.sweep.budget import parse_budget
    from inferbench.sweep.shard import parse_shard

    if request.run_id is not None:
        one_component(request.run_id, "--run-id")  # where it enters: the run folder stays in results_dir
    shard_of = parse_shard(request.shard) if request.shard else None
    budget_s = parse_budget(request.budget) if request.budget else None
    config = sweep_config(request)
    run_dir = _run_dir(request, config)
    records = _sweep(request, config, run_dir, shard=shard_of, budget_s=budget_s)
    _print_summary(records)
    console.print(f"results: {run_dir / 'results.csv'}", soft_wrap=True)  # a path stays whole
    if request.history is not None:
        from inferbench.history.commands import record_run

        record_run(run_dir, request.history)  # warns on failure, never raises: the run is saved already
    if request.reports_dir is not None:
        report_command(run_dir, request.reports_dir)
    return _nothing_measured(records)


def sweep_config(request: RunRequest) -> SweepConfig:
    """The profile narrowed by the selection, with `--repeats N` and `--fresh-workers`: how many
    processes measure each cell."""
    config = load_profile(request.profile).with_overrides(request.selection)
    measure = config.measure
    if request.repeats is not None:
        if request.repeats < 1:
            raise UserError(f"--repeats must be >= 1; got {request.repeats}")
        measure = replace(measure, repeats=request.repeats)
    if request.fresh_workers:
        measure = replace(measure, shared_workers=0)
    return replace(config, measure=measure)


def _run_dir(request: RunRequest, config: SweepConfig) -> Path:
    """The run's folder: --run-id's, the latest run of this profile (`--resume` alone), or a new
    one; a folder that holds results already is refused unless resumed."""
    from inferbench.store.runfolder import latest_run
    from inferbench.sweep.runner import new_run_id

    run_id, results_dir = request.run_id, request.results_dir
    if request.redo_interfered and not request.resume:
        raise UserError("--redo-interfered goes with --resume (it measures a run's disturbed cells again)")
    if run_id is None and request.resume:
        found = latest_run(results_dir, profile_id(request.profile))
        if found is None:
            raise UserError(f"--resume: no earlier run of profile {request.profile!r} under {results_dir}")
        run_id = found.name
    run_dir = results_dir / (run_id or new_run_id(config.name))
    if run_dir.exists() and not request.resume and any((run_dir / "cells").glob("*.json")):
        raise UserError(f"{run_dir} already holds results; pass --resume or another --run-id")
    return run_dir


def _sweep(
    request: RunRequest, config: SweepConfig, run_dir: Path, *, shard: Any, budget_s: float | None
) -> list[dict[str, Any]]:
    """The sweep itself, its failures turned into what the CLI reports: a stop names the run to
    go on with, an unexpected error becomes exit 4 with its traceback in the run's log."""
    from inferbench.ab.calibration import Calibration
    from inferbench.sweep.runner import run_sweep
    from inferbench.sweep.shutdown import Terminated

    try:
        with _progress(request.progress) as events:
            return run_sweep(
                config,
                run_dir,
                resume=request.resume,
                cache_dir=request.cache_dir,
                events=events,
                peak=request.peak,
                profile=profile_id(request.profile),
                shard=shard,
                budget_s=budget_s,
                executor=_executor(request.executor, request.ray_address),
                redo_interfered=request.redo_interfered,
                calibration=Calibration.load(request.calibration)
                if request.calibration is not None
                else None,
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


def _nothing_measured(records: list[dict[str, Any]]) -> int:
    """Fail closed: a sweep in which no cell produced a number exits 4 (an environment
    failure, as the help's exit codes say; not 2, since nothing the user typed was wrong), after
    its rows, report and history are written. A shard with no cell at all is a success."""
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


class _progress:
    """A rich progress bar fed by the runner's events (or nothing, when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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

    def __enter__(self) -> Any:
        from inferbench.sweep.runner import SweepEvents

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
    from inferbench.report.answer import answer_frame, answers
    from inferbench.report.answer_text import answer_lines

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
