"""How often is the gate wrong on this machine? Repeated `inferbench ab` runs with known truth.

- `--aa N`: N A/A runs, the same commit on both sides: every exit 1 is a false alarm. The
  last `--hog M` of them run a CPU hog (one busy process per CPU) from `--hog-at` seconds into
  the run for `--hog-for` seconds (default: from the 200th second for 200 s, the issue's own
  trial), or until the run ends. A clock, not a round count: a sequential gate may stop early.
- `--ab N --slowdown PCT`: N A/B runs against a throw-away branch (in a temporary worktree)
  whose `--slow-backend` waits, after each `run()`, for PCT% of the call's own duration: a
  real code change that makes every call of that backend PCT% slower. A run that exits 1 with
  a cell of that backend flagged is a catch; a flagged cell of another backend is a false alarm.
- `--baseline N`: the old gate for contrast: one `inferbench run` of the profile as the
  baseline, then N more runs, each compared with it by `inferbench compare`.

Prints one line per trial and the counts; writes trials.json and trials.md into `--out`.
`python -m inferbench.tools.gate_trials --aa 20 --hog 5 --ab 20 --slowdown 10` (see README).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from inferbench.ab.core import clean_pairs
from inferbench.util import atomic_write_json, atomic_write_text

log = logging.getLogger("inferbench.tools.gate_trials")

BACKEND_FILES = {
    "onnxruntime": ("onnxruntime.py", "OrtBackend"),
    "openvino": ("openvino.py", "OpenVinoBackend"),
    "torch": ("torch_eager.py", "TorchBackend"),
}
SLOWDOWN_PATCH = """

# --- gate trial: every call {pct}% slower (a busy wait of {pct}% of the call's own time) ---
import time as _trial_time

_trial_run = {cls}.run


def _trial_slower_run(self, inputs):
    start = _trial_time.perf_counter_ns()
    out = _trial_run(self, inputs)
    end = start + int((_trial_time.perf_counter_ns() - start) * (1 + {pct} / 100))
    while _trial_time.perf_counter_ns() < end:
        pass
    return out


{cls}.run = _trial_slower_run
"""


@dataclass
class Trial:
    kind: str  # "A/A", "A/A + hog", "A/B +10%", "baseline"
    exit_code: int
    minutes: float
    flagged: list[str] = field(default_factory=list)
    inconclusive: int = 0
    outcome: str = ""
    run: str = ""  # its folder in --out (compare.csv: `cells_table`)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def slow_branch(repo: Path, backend: str, pct: float) -> str:
    """A throw-away branch from HEAD whose `backend` is `pct`% slower per call; returns its name."""
    filename, cls = BACKEND_FILES[backend]
    name = f"gate-trial-{backend}-slower-{pct:g}pct-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="gate-trial-") as tmp:
        tree = Path(tmp) / "tree"
        _git(repo, "worktree", "add", "--quiet", "-b", name, str(tree), "HEAD")
        try:
            path = tree / "backends" / filename
            path.write_text(path.read_text() + SLOWDOWN_PATCH.format(pct=pct, cls=cls))
            _git(tree, "commit", "--quiet", "-am", f"gate trial: {backend} {pct:g}% slower per call")
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))
    return name


class Hog:
    """One busy process per CPU, started and stopped by timers (hence the lock); stopped for
    good by `close`, so a timer that fires late starts nothing."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()
        self.closed = False

    def start(self) -> None:
        with self.lock:
            if not self.procs and not self.closed:
                count = len(os.sched_getaffinity(0))
                self.procs = [
                    subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)
                ]

    def stop(self) -> None:
        with self.lock:
            for proc in self.procs:
                proc.kill()
                proc.wait()
            self.procs = []

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.stop()


def run_ab(argv: list[str], out: Path, rounds: int, hog: tuple[float, float] | None) -> tuple[int, float]:
    """One `inferbench ab` run; `hog` = (start, length) in seconds of a CPU hog during it."""
    cmd = [sys.executable, "-m", "inferbench", "ab", *argv, "--rounds", str(rounds), "--out", str(out)]
    started = time.perf_counter()
    hogs = Hog()
    timers = []
    if hog is not None:
        timers = [threading.Timer(hog[0], hogs.start), threading.Timer(hog[0] + hog[1], hogs.stop)]
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (out.parent / f"{out.name}.log").open("w") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
            for timer in timers:
                timer.start()
            code = proc.wait()
    finally:
        for timer in timers:
            timer.cancel()
        hogs.close()
    return code, (time.perf_counter() - started) / 60


#: The exit codes of a run that judged (no regression, regression, undecided); others are errors.
JUDGED = (0, 1, 3)


def _read_verdict(out: Path, code: int) -> tuple[list[str], int]:
    """The cells a run flagged and how many it left undecided; nothing for a run that ended in
    an error (its folder may hold no comparison, or another run's)."""
    path = out / "compare.csv"
    if code not in JUDGED or not path.is_file():
        return [], 0
    frame = pd.read_csv(path)
    flagged = frame[frame["regression"].astype(bool)]
    cells = sorted({f"{r.model}/{r.backend}/b{r.batch_size}" for r in flagged.itertuples()})
    inconclusive = frame[frame["inconclusive"].astype(bool)] if "inconclusive" in frame else frame.iloc[:0]
    return cells, len(inconclusive.drop_duplicates(subset=["model", "backend", "batch_size", "mode"]))


def _outcome(trial: Trial, slow_backend: str | None) -> str:
    if trial.exit_code not in JUDGED:
        return f"error (exit {trial.exit_code})"
    if slow_backend is None:
        return "FALSE ALARM" if trial.exit_code == 1 else ("undecided" if trial.exit_code == 3 else "pass")
    wrong = [c for c in trial.flagged if c.split("/")[1] != slow_backend]
    if wrong:
        return "FALSE ALARM (other backend)"
    return "caught" if trial.exit_code == 1 else ("undecided" if trial.exit_code == 3 else "missed")


def baseline_trials(args: argparse.Namespace, out: Path, journal: Journal) -> None:
    """The old gate: a stored baseline from this machine, then runs compared with it."""
    base_run = out / "baseline" / "base"
    extra = list(args.extra)
    run = [
        sys.executable,
        "-m",
        "inferbench",
        "run",
        "--profile",
        args.profile,
        "--no-report",
        "--no-progress",
    ]
    subprocess.run([*run, *extra, "--results-dir", str(base_run.parent), "--run-id", "base"], check=True)
    for i in range(args.baseline):
        started = time.perf_counter()
        new = out / "baseline" / f"new-{i}"
        subprocess.run([*run, *extra, "--results-dir", str(new.parent), "--run-id", new.name], check=True)
        cmd = [sys.executable, "-m", "inferbench", "compare", str(base_run), str(new), "--out", str(new)]
        code = subprocess.run(cmd, capture_output=True, check=False).returncode
        flagged, undecided = _read_verdict(new, code)
        minutes = (time.perf_counter() - started) / 60
        trial = Trial("baseline", code, minutes, flagged, undecided, run=f"baseline/{new.name}")
        trial.outcome = _outcome(trial, None)
        journal.add(trial, i)


@dataclass
class Journal:
    """The trials so far: one line printed per trial, trials.json rewritten after each one, so
    an interrupted campaign keeps what it measured."""

    out: Path
    head: str
    rounds: int
    trials: list[Trial] = field(default_factory=list)

    def add(self, trial: Trial, index: int) -> None:
        print(
            f"{trial.kind:12} #{index + 1:<3} exit {trial.exit_code}  {trial.outcome:28} "
            f"{trial.minutes:5.1f} min  flagged: {', '.join(trial.flagged) or '-'}",
            flush=True,
        )
        self.trials.append(trial)
        atomic_write_json(
            self.out / "trials.json",
            {"head": self.head, "rounds": self.rounds, "trials": [asdict(t) for t in self.trials]},
        )


def summary(trials: list[Trial]) -> str:
    frame = pd.DataFrame([asdict(t) for t in trials])
    lines = ["| trials | runs | pass | false alarms | caught | missed | undecided | errors | min/run |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for kind, group in frame.groupby("kind", sort=False):
        outcomes = group["outcome"]
        count = {
            "pass": int((outcomes == "pass").sum()),
            "false": int(outcomes.str.startswith("FALSE").sum()),
            "caught": int((outcomes == "caught").sum()),
            "missed": int((outcomes == "missed").sum()),
            "undecided": int((outcomes == "undecided").sum()),
            "errors": int(outcomes.str.startswith("error").sum()),
        }
        lines.append(
            f"| {kind} | {len(group)} | {count['pass']} | {count['false']} | {count['caught']} | "
            f"{count['missed']} | {count['undecided']} | {count['errors']} | {group['minutes'].mean():.1f} |"
        )
    return "\n".join(lines)


#: How `cells_table` writes a gating verdict.
VERDICT_WORDS = {
    "no change": "pass",
    "improvement": "pass (faster)",
    "regression": "**REGRESSION**",
    "inconclusive": "open",
}


def cells_table(out: Path, trials: list[Trial]) -> str:
    """Per run, each cell's gating verdict, its ratio head/base with the interval it was decided
    on, and its clean rounds (from the run's compare.csv): e.g. `pass 1.004 [0.981, 1.027] n8`;
    `open` where the run ended with the cell undecided."""
    rows: list[tuple[Trial, dict[str, str]]] = []
    for trial in trials:
        path = out / trial.run / "compare.csv"
        frame = pd.read_csv(path) if trial.run and path.is_file() else pd.DataFrame()
        words: dict[str, list[str]] = {}
        if not frame.empty:
            for r in frame[frame["gating"].astype(bool)].itertuples():
                verdict = VERDICT_WORDS.get(str(r.verdict), str(r.verdict))
                words.setdefault(f"{r.model} {r.backend} b{r.batch_size}", []).append(
                    f"{verdict} {r.ratio:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] n{r.n_base}"
                )
        rows.append((trial, {cell: "; ".join(w) for cell, w in words.items()}))
    cells = list(dict.fromkeys(cell for _, by_cell in rows for cell in by_cell))
    lines = ["| run | kind | exit | min | " + " | ".join(cells) + " |", "|---" * (4 + len(cells)) + "|"]
    for trial, by_cell in rows:
        values = " | ".join(by_cell.get(cell, "-") for cell in cells)
        lines.append(f"| {trial.run} | {trial.kind} | {trial.exit_code} | {trial.minutes:.1f} | {values} |")
    return "\n".join(lines)


def noise_table(out: Path, trials: list[Trial]) -> str:
    """Over the A/A runs: each cell's spread of one round's log ratio head/base, in %, for the
    fastest call (min) and p50, from the runs' ab.json. Each run is centred on its own mean (an
    A/A run's level may sit off 1 as a whole) and the interfered rounds are left out, as the
    gate leaves them out; the spread pools the runs (degrees of freedom: rounds - runs)."""
    squares: dict[tuple[str, str], list[float]] = {}
    counts: dict[str, list[int]] = {}
    for trial in trials:
        path = out / trial.run / "ab.json"
        if not trial.kind.startswith("A/A") or not trial.run or not path.is_file():
            continue
        rounds_per_cell = json.loads(path.read_text())["rounds_per_cell"]
        for key, by_side in rounds_per_cell.items():
            pairs = clean_pairs(by_side)
            if len(pairs) < 2:
                continue
            counts.setdefault(key, []).append(len(pairs))
            for stat in ("min", "p50"):
                logs = np.log([h[f"latency_{stat}_ms"] / b[f"latency_{stat}_ms"] for b, h in pairs])
                squares.setdefault((key, stat), []).extend((logs - logs.mean()) ** 2)
    lines = ["| cell | spread min (%) | spread p50 (%) | clean rounds | runs |", "|---|---|---|---|---|"]
    for key, runs in sorted(counts.items()):
        df = sum(runs) - len(runs)
        sigma = {stat: 100 * math.sqrt(sum(squares[key, stat]) / df) for stat in ("min", "p50")}
        lines.append(f"| {key} | {sigma['min']:.1f} | {sigma['p50']:.1f} | {sum(runs)} | {len(runs)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gate_trials", description=__doc__.split("\n\n")[0])
    parser.add_argument("--aa", type=int, default=0, help="A/A runs (same commit both sides)")
    parser.add_argument("--hog", type=int, default=0, help="of the A/A runs, how many get a CPU hog")
    parser.add_argument("--hog-at", type=float, default=200.0, help="seconds into a run the hog starts")
    parser.add_argument("--hog-for", type=float, default=200.0, help="seconds the hog runs")
    parser.add_argument("--ab", type=int, default=0, help="A/B runs against a slowed-down branch")
    parser.add_argument("--slowdown", type=float, action="append", help="percent (repeatable; default 10)")
    parser.add_argument("--slow-backend", default="onnxruntime", choices=sorted(BACKEND_FILES))
    parser.add_argument("--baseline", type=int, default=0, help="old-gate runs against a stored baseline")
    parser.add_argument("--profile", default="gate-cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--gate-on", default="min", choices=("p50", "min", "auto"), help="as `make gate` (GATE_ON)"
    )
    parser.add_argument(
        "--calibrate",
        type=int,
        default=0,
        help="A/A rounds before each run's rounds (`make gate`: CALIBRATE)",
    )
    parser.add_argument("--budget", help="each run's budget, e.g. 10m (`make gate`: BUDGET)")
    parser.add_argument(
        "--calibration",
        type=Path,
        help="the calibration file all runs share, as CI's cache keeps it (`make gate`: CALIBRATION; "
        "default with --calibrate: calibration.json in --out, so the first run measures it)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="processes per side and round (`make gate`: PROCESSES)"
    )
    parser.add_argument(
        "--fork-workers", default="no", choices=("no", "auto", "always"), help="as `make gate` (FORK)"
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="of the interval a pass needs (`make gate`: CONFIDENCE)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results") / f"gate-trials-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    parser.add_argument("extra", nargs="*", help="more `ab`/`run` flags after --, e.g. -- -m lstm")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if not (args.aa or args.ab or args.baseline):
        parser.error("nothing to do: give --aa, --ab and/or --baseline")
    if out.is_dir() and any(out.iterdir()):
        # Every run would refuse its folder, and a stale compare.csv would read as a verdict.
        parser.error(f"{out} already holds a campaign; pass another --out")
    repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
    head = _git(repo, "rev-parse", "HEAD")
    common = ["--profile", args.profile, "--gate-on", args.gate_on, "--calibrate", str(args.calibrate)]
    common += ["--processes", str(args.processes), "--fork-workers", args.fork_workers]
    common += ["--confidence", str(args.confidence)]
    calibration = args.calibration or (out / "calibration.json" if args.calibrate else None)
    common += [*(["--calibration", str(calibration)] if calibration else [])]
    common += [*(["--budget", args.budget] if args.budget else []), *args.extra]
    journal = Journal(out, head, args.rounds)
    for i in range(args.aa):
        hog = (args.hog_at, args.hog_for) if i >= args.aa - args.hog else None
        target = out / f"aa-{i}"
        code, minutes = run_ab(["--base", head, "--head", head, *common], target, args.rounds, hog)
        trial = Trial(
            "A/A + hog" if hog else "A/A", code, minutes, *_read_verdict(target, code), run=target.name
        )
        trial.outcome = _outcome(trial, None)
        journal.add(trial, i)
    for pct in args.slowdown or [10.0]:
        if not args.ab:
            break
        branch = slow_branch(repo, args.slow_backend, pct)
        try:
            for i in range(args.ab):
                target = out / f"ab-{pct:g}-{i}"
                code, minutes = run_ab(["--base", head, "--head", branch, *common], target, args.rounds, None)
                trial = Trial(f"A/B +{pct:g}%", code, minutes, *_read_verdict(target, code), run=target.name)
                trial.outcome = _outcome(trial, args.slow_backend)
                journal.add(trial, i)
        finally:
            _git(repo, "branch", "-D", branch)
    if args.baseline:
        baseline_trials(args, out, journal)
    tables = [summary(journal.trials), cells_table(out, journal.trials), noise_table(out, journal.trials)]
    table = "\n\n".join(tables)
    print(table)
    atomic_write_text(out / "trials.md", table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
