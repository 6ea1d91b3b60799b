"""Command line: `inferbench run|list`. Each subcommand parses its arguments and calls a
plain function; `main` is the one place errors become a single line and an exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from inferbench.argtypes import finite_float, fraction, optional_int_items, optional_items, thread_counts
from inferbench.errors import (
    EXIT_INTERNAL,
    EXIT_USAGE,
    InternalError,
    UserError,
    first_line,
)
from inferbench.history import cli as history_cli
from inferbench.redact import configure_logging, redact
from inferbench.sweep.procs import add_user_path
from inferbench.sweep.shutdown import Terminated, stop_on_signals

EXIT_CODES = """\
exit codes:
  0    success (compare/ab: no regression)
  1    regression found (compare/ab only; never used for a crash)
  2    usage error: bad flag, profile, model or option, or a broken model factory
  3    compare/ab only: could not decide (no regression found, but some gating results
       inconclusive, or no cell timed on both sides)
  4    internal error or environment failure (disk full, corrupt result file, out of
       memory, a bug): one line naming the log that holds the traceback; never 1 or 3,
       so a crashed gate cannot pass as "undecided"; run: also when no cell produced a
       number (every cell errored, timed out or could not run here), results still written
  129  stopped by SIGHUP, 130 by Ctrl-C, 143 by SIGTERM: the running worker is killed,
       finished cells are kept (go on with --resume)
"""


_OVERSUBSCRIBE_HELP = "allow --threads above the cores this process may use (measures time-slicing)"


def _budget(text: str) -> str:
    """--budget checked as it is parsed: a positive, finite duration (a long digit string reads as
    infinity)."""
    from inferbench.sweep.budget import parse_budget

    if not math.isfinite(parse_budget(text)):
        raise UserError(f"budget must be a finite duration like 15m, 90s or 1h30m; got {text!r}")
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the same shape as every other user error.
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="inferbench",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a sweep and write results/<run-id>/",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--profile", default="cpu", help="built-in profile name or a .toml path")
    run.add_argument("--model", "-m", action="append", help="model(s), repeat or comma-separate")
    run.add_argument("--backend", "-b", action="append", help="backend(s)")
    run.add_argument("--precision", "-p", action="append", help="fp32, bf16, int8")
    run.add_argument("--batch-size", action="append", help="batch size(s)")
    run.add_argument("--threads", action="append", help="intra-op threads (0 = all cores)")
    run.add_argument("--mode", action="append", help="latency (one request in flight), throughput")
    run.add_argument("--pin", action="store_true", help="pin each worker to its first THREADS cores")
    run.add_argument("--oversubscribe", action="store_true", help=_OVERSUBSCRIBE_HELP)
    run.add_argument(
        "--allow-emulated",
        action="store_true",
        help="measure precisions this CPU only emulates (default: unsupported rows; see inferbench doctor)",
    )
    run.add_argument("--repeats", type=int, help="fresh worker processes per cell")
    run.add_argument(
        "--fresh-workers",
        action="store_true",
        help="one process per cell (default: a model/backend/precision's cells share one)",
    )
    run.add_argument(
        "--peak",
        choices=("cached", "measure", "off"),
        default="cached",
        help="%% of peak per row: cached ceilings only (default), measure them if missing, or off",
    )
    sizes = run.add_argument_group("the shape axis: input sizes swept like batch sizes")
    sizes.add_argument(
        "--seq-len",
        action="append",
        default=[],
        help="sequence length(s) of bert-base, minilm, e.g. 32,128,512",
    )
    sizes.add_argument(
        "--image-size", action="append", default=[], help="image size(s) of resnet50, e.g. 224,384"
    )
    inputs = run.add_argument_group("an ONNX file's inputs (by input name; repeat each flag)")
    inputs.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="e.g. images=?x3x640x640 (? = batch); several (?x32,?x128) sweep a shape axis",
    )
    inputs.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a number (sr=16000), FILE.npy (samples along the batch axis are real data), or FILE.npz",
    )
    inputs.add_argument(
        "--batch-axis", action="append", default=[], metavar="NAME=K", help="the batch is dim K, e.g. state=1"
    )
    inputs.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="[MODEL=]FP32.onnx",
        help="the FP32 model a quantized ONNX file is checked against",
    )
    run.add_argument(
        "--backend-option",
        action="append",
        default=[],
        metavar="BACKEND.KEY=VALUE",
        help="e.g. torch.bf16_mode=full (see `inferbench doctor`)",
    )
    run.add_argument("--run-id", help="name of the run directory (default: timestamp-profile)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep finished cells of --run-id (or of the latest run of exactly this profile); "
        "retries error/timeout/unavailable cells; refused if settings changed",
    )
    run.add_argument(
        "--redo-interfered",
        action="store_true",
        help="with --resume: also measure again the cells flagged interfered (others used their cores)",
    )
    run.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="this runner's calibration.json (`ab --calibrate`): one-process rows get its "
        'process-to-process spread, and the answer\'s "within noise" uses it',
    )
    run.add_argument(
        "--shard",
        metavar="I/N|auto",
        help="run only shard I of N (a stable hash of each cell); auto reads Slurm/Kubernetes variables",
    )
    run.add_argument(
        "--budget",
        type=_budget,
        metavar="DURATION",
        help="fit the sweep in e.g. 15m: cells that do not fit become `skipped` rows (see README)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="ray: each cell a Ray task, one per node (needs inferbench[ray]; see README)",
    )
    run.add_argument("--ray-address", help="the Ray cluster to join (default: a local one-node instance)")
    run.add_argument("--results-dir", type=Path, default=Path("results"))
    run.add_argument("--cache-dir", type=Path, help="artifact cache (default .cache/inferbench)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--reports-dir", type=Path, default=Path("reports"))
    run.add_argument("--no-report", action="store_true", help="skip the HTML report and summary.md")
    history_cli.add_run_flags(run)
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write reports/<run-id>.html and summary.md for a run")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--reports-dir", type=Path, default=Path("reports"))
    report.add_argument(
        "--compare-with",
        type=Path,
        metavar="OTHER_RUN",
        help="also write reports/<run>-vs-<other>.html: OTHER_RUN as base, RUN as new",
    )
    report.set_defaults(func=cmd_report)

    compare = sub.add_parser(
        "compare",
        help="compare two runs; exit 0 = no regression, 1 = regression, 2 = usage, 3 = undecided, "
        "4 = internal error",
    )
    compare.add_argument("base", type=Path, help="baseline run directory (or its results.csv)")
    compare.add_argument("new", type=Path, help="new run directory (or its results.csv)")
    compare.add_argument("--max-regression", default="5%", help="allowed slowdown, e.g. 5%% or 0.05")
    compare.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="METRIC=PCT",
        help="per-metric override, e.g. p99=10%% (metrics: p50, p99, throughput)",
    )
    compare.add_argument("--alpha", type=finite_float, default=0.05, help="family-wise error rate (Holm)")
    compare.add_argument("--out", type=Path, help="where compare.md/.csv/.html go (default: NEW)")
    compare.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare runs from different CPUs, engine versions, thread or measurement settings",
    )
    compare.set_defaults(func=cmd_compare)

    merge = sub.add_parser("merge", help="one run folder (CSV, cells, report) from the shards of one sweep")
    merge.add_argument("run_dirs", type=Path, nargs="+", help="the shards' run directories")
    merge.add_argument("--out", type=Path, required=True, help="the merged run directory to write")
    merge.add_argument("--reports-dir", type=Path, default=Path("reports"))
    merge.add_argument("--no-report", action="store_true", help="skip the HTML report and summary.md")
    merge.set_defaults(func=cmd_merge)

    _add_ab(sub)

    lst = sub.add_parser("list", help="backends (with availability), models and profiles")
    lst.set_defaults(func=cmd_list)

    peak = sub.add_parser(
        "peak", help="measure (once, then cached) this machine's compute and memory ceilings"
    )
    peak.add_argument("--threads", action="append", help="thread count(s) (default: all cores)")
    peak.add_argument("--refresh", action="store_true", help="measure again even if cached")
    peak.add_argument("--cache-dir", type=Path, help="cache (default .cache/inferbench)")
    peak.set_defaults(func=cmd_peak)

    doctor = sub.add_parser("doctor", help="this CPU's capabilities and the backend x precision matrix")
    doctor.set_defaults(func=cmd_doctor)
    history_cli.add_parsers(sub)
    return parser


def _add_ab(sub: Any) -> None:
    ab = sub.add_parser(
        "ab",
        help="A/B in one job: both sides' fresh workers interleaved, compared round by round; "
        "exit 0 = no regression, 1 = regression, 2 = usage error, 3 = could not decide, "
        "4 = internal error",
    )
    ab.add_argument("--base", help="git ref or source directory (the gate: the merge base with main)")
    ab.add_argument("--head", help="git ref or source directory (default: the working tree)")
    ab.add_argument("--base-python", help="interpreter for the base side (e.g. another venv's python)")
    ab.add_argument("--head-python", help="interpreter for the head side")
    ab.add_argument("--profile", default="gate-cpu", help="built-in profile name or a .toml path")
    ab.add_argument(
        "--rounds",
        "-k",
        type=int,
        default=10,
        help="the most rounds per cell (a fresh worker per side each); a cell stops once decided",
    )
    ab.add_argument(
        "--budget",
        type=_budget,
        metavar="DURATION",
        help="fit the whole run in e.g. 10m: no round starts that would not fit, and the cells still "
        "open get their last look (`make gate`: 10m)",
    )
    for flag, short, what in (
        ("--model", "-m", "model(s)"),
        ("--backend", "-b", "backend(s)"),
        ("--precision", "-p", "precision(s)"),
        ("--batch-size", None, "batch size(s)"),
        ("--threads", None, "intra-op threads"),
        ("--mode", None, "latency, throughput"),
    ):
        ab.add_argument(*(f for f in (flag, short) if f), action="append", help=what)
    ab.add_argument("--pin", action="store_true", help="pin each worker to its first THREADS cores")
    ab.add_argument("--allow-emulated", action="store_true", help="measure precisions this CPU only emulates")
    ab.add_argument("--oversubscribe", action="store_true", help=_OVERSUBSCRIBE_HELP)
    ab.add_argument("--backend-option", action="append", default=[], metavar="BACKEND.KEY=VALUE")
    ab.add_argument("--max-regression", default="5%", help="the threshold a regression must exceed")
    ab.add_argument("--threshold", action="append", default=[], metavar="METRIC=PCT")
    ab.add_argument(
        "--alpha",
        type=finite_float,
        default=0.05,
        help="family-wise rate of false regressions, over all cells and looks",
    )
    ab.add_argument(
        "--gate-on",
        choices=("p50", "min", "auto"),
        default="p50",
        help="the latency statistic that gates: p50, each process's fastest call (min; the "
        "steadiest on a shared machine), or auto: per cell, the steadier one in the calibration's "
        "A/A rounds (`make gate`); the other is shown, advisory",
    )
    ab.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="fresh processes per side and round, pooled into the round's value (a process that "
        "lands slow weighs less; each round costs N times as much)",
    )
    ab.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="first run ROUNDS A/A rounds of the base side against itself (inside the budget): "
        "each cell's noise, what the run can decide, written to calibration.json",
    )
    ab.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="read the noise from FILE when it is of this machine class, profile and cells; with "
        "--calibrate, a FILE that does not fit (or is missing) is measured again and written there",
    )
    ab.add_argument(
        "--instructions",
        choices=("off", "auto", "perf", "callgrind"),
        default="off",
        help="also count instructions per call, once per cell and side, and gate on the count "
        "(threshold 1%%, or --threshold instructions=PCT): perf where the CPU's counter is "
        "exposed, else Valgrind's callgrind (auto); a cell without a count gets a note",
    )
    ab.add_argument("--out", type=Path, help="output folder (default results/ab-<timestamp>)")
    ab.set_defaults(func=cmd_ab)


def cmd_ab(args: argparse.Namespace) -> int:
    from inferbench.commands_ab import ab_command
    from inferbench.sweep.budget import parse_budget

    pairs = _assignments(args.threshold, "--threshold", "METRIC=PCT (e.g. p99=10%)")
    return ab_command(
        base=args.base,
        head=args.head,
        base_python=args.base_python,
        head_python=args.head_python,
        profile=args.profile,
        rounds=args.rounds,
        budget_s=parse_budget(args.budget) if args.budget else None,
        overrides={
            "models": optional_items(args.model),
            "backends": optional_items(args.backend),
            "precisions": optional_items(args.precision),
            "batch_sizes": optional_int_items(args.batch_size, "batch sizes"),
            "threads": optional_int_items(args.threads, "threads"),
            "modes": optional_items(args.mode),
            "pin": args.pin or None,
            "allow_emulated": args.allow_emulated or None,
            # None unless given: a base side whose config predates the flag still accepts these.
            "oversubscribe": args.oversubscribe or None,
            "backend_options": _backend_options(args.backend_option),
        },
        max_regression=fraction(args.max_regression),
        thresholds={metric: fraction(value) for metric, value in pairs},
        alpha=args.alpha,
        gate_on=args.gate_on,
        instructions=args.instructions,
        calibrate=args.calibrate,
        processes=args.processes,
        calibration=args.calibration,
        out_dir=args.out,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from inferbench.commands import run_command

    return run_command(
        profile=args.profile,
        models=optional_items(args.model),
        backends=optional_items(args.backend),
        precisions=optional_items(args.precision),
        batch_sizes=optional_int_items(args.batch_size, "batch sizes"),
        threads=optional_int_items(args.threads, "threads"),
        modes=optional_items(args.mode),
        pin=args.pin or None,
        allow_emulated=args.allow_emulated or None,
        # run_command hands `inputs` to SweepConfig.with_overrides, as it does the flags above.
        inputs={**_input_flags(args), **({"oversubscribe": True} if args.oversubscribe else {})},
        repeats=args.repeats,
        fresh_workers=args.fresh_workers,
        peak=args.peak,
        backend_options=_backend_options(args.backend_option),
        run_id=args.run_id,
        resume=args.resume,
        redo_interfered=args.redo_interfered,
        results_dir=args.results_dir,
        cache_dir=args.cache_dir,
        progress=not args.no_progress and sys.stderr.isatty(),
        reports_dir=None if args.no_report else args.reports_dir,
        shard=args.shard,
        budget=args.budget,
        executor=args.executor,
        ray_address=args.ray_address,
        calibration=args.calibration,
        history=None if args.no_history else history_cli.resolve_run_url(args.history, args.results_dir),
    )


def cmd_merge(args: argparse.Namespace) -> int:
    from inferbench.commands import merge_command

    return merge_command(args.run_dirs, args.out, None if args.no_report else args.reports_dir)


def _assignments(items: Sequence[str], flag: str, form: str) -> list[tuple[str, str]]:
    """`NAME=VALUE` flag values as pairs; `form` is the shape shown when one is malformed."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not (sep and name.strip()):
            raise UserError(f"{flag} expects {form}; got {item!r}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _input_flags(args: argparse.Namespace) -> dict[str, Any]:
    """--shape, --input and --batch-axis as the sweep's input tables (only those given)."""
    from inferbench.models.shapes import sweep_points

    found: dict[str, Any] = {}
    given = _assignments(args.shape, "--shape", "NAME=DIMS (e.g. images=?x3x640x640)")
    shapes = {name: dims for name, dims in given if "," not in dims}
    axis = sweep_points(
        optional_int_items(args.seq_len, "sequence lengths") or [],
        optional_int_items(args.image_size, "image sizes") or [],
        [f"{name}={dims}" for name, dims in given if "," in dims],
    )
    if axis:
        found["shapes"] = axis
    values = {  # files by absolute path: workers start elsewhere
        name: str(Path(text).resolve()) if text.endswith((".npy", ".npz")) else text
        for name, text in _input_assignments(args.input)
    }
    axes = {}
    for name, text in _assignments(args.batch_axis, "--batch-axis", "NAME=K (e.g. state=1)"):
        if not text.isdigit():
            raise UserError(f"--batch-axis expects NAME=K with K a dim index (0, 1, ...); got {name}={text}")
        axes[name] = int(text)
    references = {}
    for item in args.reference:
        name, sep, path = item.rpartition("=")
        references[name.strip() if sep else ""] = str(Path(path.strip()).resolve())
    tables = (
        ("input_shapes", shapes),
        ("input_values", values),
        ("batch_axes", axes),
        ("references", references),
    )
    for key, table in tables:
        if table:
            found[key] = table
    return found


def _input_assignments(items: Sequence[str]) -> list[tuple[str, str]]:
    """--input NAME=VALUE pairs; a bare FILE.npz gives each of its arrays to the input of its name."""
    from inferbench.models.onnx_inputs import npz_names

    pairs = []
    for item in items:
        if "=" not in item and item.endswith(".npz"):
            path = Path(item)
            if not path.is_file():
                raise UserError(f"--input {item}: file not found")
            pairs += [(name, item) for name in npz_names(path)]
        else:
            form = "NAME=VALUE, NAME=FILE.npy or FILE.npz (e.g. sr=16000)"
            pairs += _assignments([item], "--input", form)
    return pairs


def _backend_options(items: Sequence[str]) -> dict[str, dict[str, str]] | None:
    form = "BACKEND.KEY=VALUE (e.g. torch.bf16_mode=full)"
    options: dict[str, dict[str, str]] = {}
    for target, value in _assignments(items, "--backend-option", form):
        backend, dot, key = target.rpartition(".")
        if not (dot and backend and key):
            raise UserError(f"--backend-option expects {form}; got {target + '=' + value!r}")
        options.setdefault(backend, {})[key] = value
    return options or None


def cmd_report(args: argparse.Namespace) -> int:
    from inferbench.commands import report_command

    return report_command(args.run_dir, args.reports_dir, args.compare_with)


def cmd_compare(args: argparse.Namespace) -> int:
    from inferbench.commands import compare_command

    pairs = _assignments(args.threshold, "--threshold", "METRIC=PCT (e.g. p99=10%)")
    thresholds = {metric: fraction(value) for metric, value in pairs}
    return compare_command(
        args.base,
        args.new,
        max_regression=fraction(args.max_regression),
        thresholds=thresholds,
        alpha=args.alpha,
        out_dir=args.out,
        allow_mismatch=args.allow_mismatch,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from inferbench.commands import doctor_command

    return doctor_command()


def cmd_peak(args: argparse.Namespace) -> int:
    from inferbench.commands import peak_command
    from inferbench.config import resolve_threads

    threads = thread_counts(args.threads, resolve_threads(0))
    return peak_command(threads or [0], refresh=args.refresh, cache_dir=args.cache_dir)


def cmd_list(args: argparse.Namespace) -> int:
    from inferbench.commands import list_command

    return list_command()


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    add_user_path()  # user factories and plugin modules resolve from the current folder
    try:
        args: Any = build_parser().parse_args(argv)
        with stop_on_signals():  # SIGTERM/SIGHUP: kill the worker, keep the cells, exit 143/129
            return int(args.func(args))
    except UserError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        _say(f"interrupted; {_kept(exc)}")
        return 130
    except Terminated as exc:
        _say(f"stopped by {exc}; {_kept(exc)}")
        return exc.exit_code
    except InternalError as exc:
        return _internal_error(exc, exc.log_dir)
    except Exception as exc:  # MemoryError too: never exit 1, which means "regression"
        return _internal_error(exc, None)


def _say(line: str) -> None:
    print(f"inferbench: {redact(line)}", file=sys.stderr)


def _kept(exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", None)
    return notes[-1] if notes else "finished cells are saved (rerun with --resume)"


def _internal_error(exc: BaseException, log_dir: Path | None) -> int:
    """One line for the terminal, the whole traceback in a log file it names."""
    text = "".join(traceback.format_exception(exc))
    where = _write_log(text, log_dir)
    message = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {first_line(exc)}"
    _say(f"internal error: {message.splitlines()[0] if message else type(exc).__name__} ({where})")
    return EXIT_INTERNAL


def _write_log(text: str, log_dir: Path | None) -> str:
    # The command line and the traceback may hold a --history URL's password, a token.
    stamped = redact(f"--- {dt.datetime.now().isoformat()} inferbench {' '.join(sys.argv[1:])}\n{text}")
    try:
        if log_dir is not None:
            path = log_dir / "runner.log"
            existed = path.exists()
            try:
                log_dir.mkdir(parents=True, exist_ok=True)
                with path.open("a") as handle:
                    handle.write(stamped)
                return f"traceback in {path}"
            except OSError:  # the run's disk may be the full one: try the temporary folder
                if not existed:
                    path.unlink(missing_ok=True)  # no empty log pointing nowhere
        with tempfile.NamedTemporaryFile("w", prefix="inferbench-", suffix=".log", delete=False) as tmp:
            tmp.write(stamped)
        return f"traceback in {tmp.name}"
    except OSError as exc:
        return f"no log written: {exc.strerror or exc}"
