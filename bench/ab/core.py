"""`inferbench ab`: both sides of a change measured in one job, interleaved and paired.

A committed baseline compares today's code on today's machine with yesterday's code on
another machine; on a shared runner that is a false alarm waiting to happen. Here every cell
runs in rounds, and each round runs one fresh worker per side back to back, the order
alternating by round (AB, BA, AB, ...): whatever the machine does over minutes (frequency,
neighbours, thermal state) hits both sides of a round alike, and a linear drift cancels over
each AB/BA pair. The verdict compares the sides round by round: per round the log ratio of
the metric, then a paired t on their 20% trimmed mean (Yuen; `inferbench.compare.verdict`).
Rounds in which either side's timed window was disturbed (`interfered`, after the runner's own
re-measures) are left out of the pairs; a cell with fewer than two clean rounds is inconclusive.

Rounds go over all cells before the next round starts, so a burst of interference costs each
cell a round rather than one cell all of its rounds. After each round every open cell is
looked at (`inferbench.ab.rounds`): a cell whose gating metrics are decided (passed or failed) stops,
and the rounds left go to the cells still open, up to `--rounds` and within `--budget`. The
looks are a group-sequential design (`inferbench.compare.sequential`), so stopping on a lucky round
does not inflate the error rates.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from inferbench.ab.instructions import COUNTERS
from inferbench.ab.sides import Side
from inferbench.compare.core import (
    HIGHER_IS_BETTER,
    KEY,
    VALUE_COLUMN,
    CompareOptions,
    harness_limited,
    judge,
    status_row,
)
from inferbench.compare.sequential import Looks
from inferbench.compare.verdict import INCONCLUSIVE, Estimate, paired_estimate
from inferbench.errors import InternalError, UserError
from inferbench.status import OK

log = logging.getLogger(__name__)

SIDES = ("base", "head")
#: Run one cell on one side: (side label, cell key, round) -> the worker's record.
Launch = Callable[[str, str, int], dict[str, Any]]
Events = Callable[[str, str, int, dict[str, Any]], None]
#: One round of a cell: the base side's record and the head side's.
Pair = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class AbOptions:
    rounds: int = 10  # the most rounds a cell runs
    compare: CompareOptions = field(default_factory=CompareOptions)
    budget_s: float | None = None  # wall-clock limit of the whole run (None: rounds alone)
    instructions: str = "off"  # counter of instructions per call (`inferbench.ab.instructions`)
    calibrate: int = 0  # A/A rounds before the A/B rounds (`inferbench.ab.calibration`); 0: none
    # Fresh processes per side and round, pooled into the round's value (the fastest call of
    # all, the median of all calls): a process that lands slow weighs less than in a round of one.
    processes: int = 1
    # Workers forked from each side's agent, which imported the engines once and is started
    # again every round (`inferbench.sweep.forked`): a round costs about half.
    fork_workers: bool = False
    # `--fork-workers auto`: where a side cannot fork, both sides' workers are fresh processes
    # (said in the notes) instead of the run being refused.
    fork_or_fresh: bool = False
    # A runner's calibration file: read when it is of this machine class, profile and cells;
    # otherwise, with `calibrate`, measured again and written there.
    calibration: Path | None = None
    gate_auto: bool = False  # `--gate-on auto`: each cell gates on its calibrated steadier statistic
    # The statistic each cell gates on, by cell key (`--gate-on auto`: the calibration's
    # steadier one); a cell not named gates on `compare.gate_on`.
    gate_on_by_cell: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise UserError(f"--rounds must be >= 2 (a paired test needs two rounds); got {self.rounds}")
        if self.budget_s is not None and not self.budget_s > 0:
            raise UserError(f"--budget must be positive; got {self.budget_s}")
        if self.instructions not in COUNTERS:
            raise UserError(f"--instructions must be one of {', '.join(COUNTERS)}; got {self.instructions!r}")
        if self.processes < 1:
            raise UserError(f"--processes must be >= 1; got {self.processes}")
        if self.calibrate == 1 or self.calibrate < 0:
            raise UserError(f"--calibrate needs at least 2 A/A rounds (or 0: none); got {self.calibrate}")
        if self.gate_auto and not self.calibrate and self.calibration is None:
            raise UserError("--gate-on auto needs a calibration: --calibrate ROUNDS or --calibration FILE")

    def compared(self, key: str, mode: str = "latency") -> tuple[str, ...]:
        """The metrics compared for cell `key`: its gating statistic first, then the rest; a
        serve cell's peak alone (`CompareOptions.compared_in`)."""
        gate_on = self.gate_on_by_cell.get(key, self.compare.gate_on)
        return self.compare.compared_in(mode, (gate_on, *(m for m in self.compare.compared if m != gate_on)))


def round_order(round_index: int) -> tuple[str, str]:
    """ABBA...: base first in even rounds, head first in odd ones."""
    return SIDES if round_index % 2 == 0 else (SIDES[1], SIDES[0])


def _side_status(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst round's record (the first one that did not come out ok), else the last."""
    return next((r for r in records if r["status"] != OK), records[-1])


def _flaky_base_row(
    cell: dict[str, Any], records: list[dict[str, Any]], worst: dict[str, Any], head: dict[str, Any]
) -> dict[str, Any] | None:
    """A base that came out ok and then failed in a later round is flaky, not "fixed" by the
    head: the cell is undecided, whatever the head did in that round (both failing at once
    says more about the machine than about the change). None when that is not the case."""
    if worst["status"] == OK or records[0]["status"] != OK:
        return None
    failed = next(i for i, r in enumerate(records) if r["status"] != OK)
    note = f"the base side was ok, then {worst['status']} in round {failed + 1} ({_reason(worst)})"
    if head["status"] != OK:
        note += f"; the head {head['status']} too ({_reason(head)})"
    return {
        **cell,
        "metric": "status",
        "base_status": worst["status"],
        "new_status": head["status"],
        "verdict": INCONCLUSIVE,
        "broken": False,
        "note": note + ": not judged",
    }


def _reason(record: dict[str, Any]) -> str:
    return str(record.get("reason") or "no reason given")[:120]


def _few_rounds(clean: int, note: str) -> str:
    return f"{clean} clean round(s); {note}" if note else f"{clean} clean round(s)"


def _missing_row(cell: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: cell[k] for k in KEY},
        "metric": "status",
        "base_status": "not run",
        "new_status": "missing",
        "verdict": "broken (missing)",
        "broken": True,
        "note": "in the base side's sweep, not in the head's",
    }


def round_value(record: dict[str, Any], metric: str) -> float:
    """One side's value of `metric` in one round; NaN where it has none (a serve cell whose
    search found no passing rate), which the paired estimate leaves out."""
    value = record.get(VALUE_COLUMN[metric])
    return float("nan") if value is None else float(value)


def clean_pairs(by_side: Mapping[str, list[dict[str, Any]]], keep_interfered: bool = False) -> list[Pair]:
    """The rounds that count, as (base, head) pairs: both sides came out ok, neither side's
    load generator fell behind (a serve cell's `serve_harness_limited`: not a result) and
    (unless `keep_interfered`) neither side's timed window was disturbed. The A/B verdict, the
    A/A calibration and the variance campaign all pair rounds by this one rule."""
    return [
        (b, h)
        for b, h in zip(by_side["base"], by_side["head"], strict=True)
        if b["status"] == h["status"] == OK
        and not (harness_limited(b) or harness_limited(h))
        and (keep_interfered or not (b.get("interfered") or h.get("interfered")))
    ]


def _left_out_note(by_side: Mapping[str, list[dict[str, Any]]], left_out: int) -> str:
    """'2 of 10 rounds interfered, left out', naming harness-limited rounds apart."""
    if not left_out:
        return ""
    rounds = len(by_side["base"])
    pairs = zip(by_side["base"], by_side["head"], strict=True)
    limited = sum(harness_limited(b) or harness_limited(h) for b, h in pairs)
    if not limited:
        return f"{left_out} of {rounds} rounds interfered, left out"
    interfered = f"{left_out - limited} interfered and " if left_out > limited else ""
    return f"{interfered}{limited} harness-limited of {rounds} rounds, left out"


@dataclass
class VerdictRows:
    """Verdict rows before judging, with their estimates, looks and cell keys (None: missing)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    estimates: list[Estimate | None] = field(default_factory=list)
    looks: list[Looks | None] | None = None
    owners: list[str | None] = field(default_factory=list)

    def add(self, row: dict[str, Any], estimate: Estimate | None, owner: str | None, looks: Looks) -> None:
        self.rows.append(row)
        self.estimates.append(estimate)
        self.owners.append(owner)
        if self.looks is not None:
            self.looks.append(looks)


def verdict_rows(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    cells: dict[str, dict[str, Any]],
    options: AbOptions,
    missing: Sequence[dict[str, Any]],
    looks: Mapping[str, Looks] | None,
) -> VerdictRows:
    table = VerdictRows(looks=None if looks is None else [])
    for cell in missing:
        table.add(_missing_row(cell), None, None, ())
    for key, by_side in results.items():
        cell = {k: cells[key][k] for k in KEY}
        seen = looks.get(key, ()) if looks is not None else ()
        base, head = _side_status(by_side["base"]), _side_status(by_side["head"])
        if base["status"] != OK or head["status"] != OK:
            row = _flaky_base_row(cell, by_side["base"], base, head) or status_row(cell, base, head)
            table.add(row, None, key, ())
            continue
        pairs = clean_pairs(by_side)
        disturbed = len(by_side["base"]) - len(pairs)
        if seen:  # judged at its latest look: rounds after it wait for the next one
            pairs = pairs[: seen[-1][0]]
        note = _left_out_note(by_side, disturbed)
        gate_on = options.gate_on_by_cell.get(key)
        for metric in options.compared(key, str(cell.get("mode"))):
            b_values = [round_value(b, metric) for b, _ in pairs]
            h_values = [round_value(h, metric) for _, h in pairs]
            estimate = paired_estimate(b_values, h_values, higher_is_better=metric in HIGHER_IS_BETTER)
            row = {
                **cell,
                "metric": metric,
                "base_status": OK,
                "new_status": OK,
                "base_value": float(np.median(b_values)) if b_values else float("nan"),
                "new_value": float(np.median(h_values)) if h_values else float("nan"),
                "n_base": len(pairs),
                "n_new": len(pairs),
                "unit": "round",
                "note": note if estimate is not None else _few_rounds(len(pairs), note),
            }
            if gate_on is not None:  # `compare.judge` gates this cell on its own statistic
                row["gate_on"] = gate_on
            table.add(row, estimate, key, seen)
    return table


def paired_rows(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    cells: dict[str, dict[str, Any]],
    options: AbOptions,
    missing: Sequence[dict[str, Any]] = (),
    looks: Mapping[str, Looks] | None = None,
    counted: Sequence[dict[str, Any]] = (),
) -> pd.DataFrame:
    """The verdict table from the rounds, with the same columns as `compare`. `missing`: cells
    of the base side's sweep that the head's sweep no longer has (each fails the comparison).
    `looks`: each cell's sequential looks (`run_rounds`), each judged at its latest one;
    without, every cell is one fixed sample (Holm over the gating tests). `counted`: the
    instruction-count rows, decided already (`inferbench.ab.instructions.count_rows`)."""
    table = verdict_rows(results, cells, options, missing, looks)
    for row in counted:
        table.add(row, None, None, ())
    return judge(table.rows, table.estimates, options.compare, table.looks)


# ---------------------------------------------------------------- real sides


class Agent:
    """One side's agent process (`inferbench/ab_agent.py` run with the side's interpreter and
    code): the parent sends cell keys, the agent runs each in a fresh worker.

    With `fork_workers` in the setup (`ab --fork-workers`) the agent imports the engines once
    and forks its workers (`inferbench.sweep.forked`); it is then started again at every new
    round, so that its side's workers share one parent's memory for a round, never for the run.
    A side whose code cannot fork is refused before any worker runs, unless `must_fork` is false
    (`--fork-workers auto`: `fork_refused` says why, and `agents` starts both sides fresh)."""

    fresh_per_round = False  # set from the setup's `fork_workers`
    _round: int | None = None  # the round of the last cell asked for
    fork_refused: str | None = None  # why this side cannot fork (`--fork-workers auto`)

    def __init__(self, side: Side, setup: dict[str, Any], log_path: Path, must_fork: bool = True) -> None:
        self.side = side
        self._setup = setup
        self._log_path = log_path
        self._log_mode = "w"
        self.fresh_per_round = bool(setup.get("fork_workers"))
        self._must_fork = must_fork
        self._start()

    def _start(self) -> None:
        script = Path(__file__).resolve().parent / "agent.py"
        self._log = self._log_path.open(self._log_mode)
        self._log_mode = "a"  # a restarted agent adds to the log
        self.proc = subprocess.Popen(
            [self.side.python, "-P", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=self.side.environ(),
            start_new_session=True,
        )
        self.info = self._ask(self._setup, starting=True)
        if self.fresh_per_round:
            forking = self.info.get("forking") or {}
            if not forking.get("ok"):
                why = forking.get("reason") or "its agent did not answer whether it forks"
                self.fork_refused = f"the {self.side.label} side ({self.side.described}): {why}"
                if self._must_fork:
                    self.close()
                    raise UserError(f"--fork-workers: {self.fork_refused}")

    def start_fresh(self) -> None:
        """Start this side's agent again without forking: its workers are fresh processes."""
        self._setup = {k: v for k, v in self._setup.items() if k != "fork_workers"}
        self.fresh_per_round = False
        self.close()
        self._start()

    def _ask(self, message: dict[str, Any], starting: bool = False) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            tail = self._log_tail()
            self.close()
            where = f"the {self.side.label} side ({self.side.described})"
            if starting:  # its code or interpreter cannot run the agent: the user's to fix
                raise UserError(f"{where} failed to start: {tail}")
            # A cell's worker dying costs that cell a row; the agent itself dying is ours.
            raise InternalError(f"{where}: its agent died during the run: {tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _log_tail(self) -> str:
        self._log.flush()
        lines = [ln for ln in Path(self._log.name).read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else f"exit code {self.proc.poll()}"

    def run(self, key: str, round_index: int = 0) -> dict[str, Any]:
        from inferbench.sweep.cellkeys import record_key

        if self.fresh_per_round and self._round not in (None, round_index):
            self.close()
            self._start()
        self._round = round_index
        record = self._ask({"cell": key, "round": round_index})
        # The side's code answers: its record must be the cell asked for, keyed by its axes.
        where = f"the {self.side.label} side's agent"
        if record_key(record, where) != key:
            raise UserError(f"{where} answered cell {record['cell_key']!r} for {key!r}")
        return record

    def close(self) -> None:
        from inferbench.sweep.procs import kill_group

        if self.proc.poll() is None:
            _close_quietly(self.proc.stdin)  # end of requests: the agent exits on EOF
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout):
            _close_quietly(stream)
        self._log.close()


def _close_quietly(stream: IO[Any] | None) -> None:
    """Close a pipe to or from an agent that may already have exited: flushing buffered
    requests into a pipe whose reader is gone raises BrokenPipeError, and the pipe is closed
    all the same (the race depends on when the agent died)."""
    if stream is None or stream.closed:
        return
    try:
        stream.close()
    except (BrokenPipeError, ConnectionResetError):
        pass


@contextmanager
def agents(
    sides: tuple[Side, Side], setup: dict[str, Any], out_dir: Path, must_fork: bool = True
) -> Iterator[dict[str, Agent]]:
    """Both sides' agents. With `fork_workers` in the setup, a side that cannot fork is refused
    (UserError), or with `must_fork=False` (`--fork-workers auto`) both sides' workers are fresh
    processes, the agents' `fork_refused` saying why."""
    started: dict[str, Agent] = {}
    try:
        for side in sides:
            side_dir = out_dir / side.label
            side_dir.mkdir(parents=True, exist_ok=True)
            message = {**setup, "run_dir": str(side_dir), "cache_dir": str(out_dir / "cache" / side.label)}
            started[side.label] = Agent(side, message, side_dir / "agent.log", must_fork)
        if any(agent.fork_refused for agent in started.values()):
            for agent in started.values():  # both sides start their workers the same way
                agent.start_fresh()
        yield started
    finally:
        for agent in started.values():
            agent.close()
