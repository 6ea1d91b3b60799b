"""`inferbench ab --instructions`: each side's instructions per call, counted once per cell
before the timed rounds, and their verdict rows.

A count of work has (near) no noise: where the machine has a counter it shows a 2% change that
timing on a shared 2-vCPU runner cannot (its MDE there is 15-65%). It sees only what the
counting process executes: the backend wrapper, input handling and the engine's work on the
calling thread, at one thread; not the engine's worker threads (perf), not other processes,
and under Valgrind not the kernels the engine would pick on the real CPU (Valgrind's CPUID
offers fewer instruction sets, and a JIT kernel is counted as whatever it was generated for
there). So it gates beside the timed metric, never instead of it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from inferbench.ab.sides import Side
from inferbench.compare.core import KEY
from inferbench.compare.verdict import decide_count
from inferbench.errors import UserError
from inferbench.status import OK

log = logging.getLogger(__name__)

METRIC = "instructions"
#: Counter choices (`ab --instructions`): auto = perf where the machine has it, else callgrind.
COUNTERS = ("off", "auto", "perf", "callgrind")
#: Default threshold of the count (`--threshold instructions=PCT` overrides it).
THRESHOLD = 0.01
#: Calls per cell: warm-up, then batches of counted calls (their spread is the count's own).
WARMUP, CALLS, BATCHES = 20, 5, 9
#: The longest a side's counting process may take (Valgrind: about 30 s of imports, then each cell).
TIMEOUT_S = 900
BLIND_SPOTS = (
    "counts the calling thread's work at one thread: not engine worker threads, other processes "
    "or the machine's own JIT kernels"
)
CALLGRIND_ARGS = ("--tool=callgrind", "--instr-atstart=no", "--quiet")


def pick_counter(choice: str) -> tuple[str | None, str]:
    """(counter, why): the counter to use for `choice`, or None and why none can be."""
    from inferbench.ab.counters import perf_reason

    if choice not in COUNTERS:
        raise UserError(f"--instructions must be one of {', '.join(COUNTERS)}; got {choice!r}")
    if choice == "off":
        return None, "not asked for (--instructions off)"
    perf = perf_reason() if choice in ("auto", "perf") else "not asked for"
    if perf is None:
        return "perf", "hardware instruction counter (perf_event_open), user space"
    if choice == "perf":
        return None, perf
    if shutil.which("valgrind") is None:
        return None, f"{perf}; and valgrind is not installed (`make valgrind`)"
    return "callgrind", f"Valgrind's callgrind ({perf})"


def count_side(
    side: Side, setup: dict[str, Any], keys: Sequence[str], counter: str, work_dir: Path
) -> dict[str, dict[str, Any]]:
    """Each cell's counts on one side ({cell_key: {counts, instructions_per_call} or {reason}});
    a side whose counting process fails gives every cell that reason."""
    script = Path(__file__).resolve().parent / "counters.py"
    work_dir.mkdir(parents=True, exist_ok=True)
    out_file = Path(tempfile.mkdtemp(dir=work_dir)) / "callgrind.out"
    request = {
        **setup,
        "profile": _known_settings(setup["profile"]),
        "cells": list(keys),
        "counter": counter,
        "out_file": str(out_file),
        "cache_dir": str(work_dir / "cache"),
        "warmup": WARMUP,
        "calls": CALLS,
        "batches": BATCHES,
    }
    command = [side.python, "-P", str(script)]
    if counter == "callgrind":
        command = ["valgrind", *CALLGRIND_ARGS, f"--callgrind-out-file={out_file}", *command]
    log_path = work_dir / f"{side.label}-instructions.log"
    try:
        with log_path.open("w") as stderr:
            done = subprocess.run(
                command,
                input=json.dumps(request),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=side.environ(),
                timeout=TIMEOUT_S,
                check=False,
            )
        answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError) as exc:
        answers, done = [], None
        log.warning("counting on the %s side failed: %s", side.label, exc)
    found = {a["cell_key"]: a for a in answers if "cell_key" in a}
    failed = f"the {side.label} side's counting process failed (see {log_path.name})"
    if done is not None and done.returncode:
        failed += f", exit code {done.returncode}"
    return {key: found.get(key, {"reason": failed}) for key in keys}


def _known_settings(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile with the measurement settings this harness knows (as `ab_agent` does, an
    older side's code is not handed settings it would refuse; only the cells matter here)."""
    from inferbench.config import MeasureConfig

    known = {f.name for f in fields(MeasureConfig)}
    measure = {k: v for k, v in dict(profile.get("measure", {})).items() if k in known}
    return {**profile, "measure": measure}


def count_rows(
    counts: dict[str, dict[str, dict[str, Any]]],
    cells: dict[str, dict[str, Any]],
    threshold: float,
    counter: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Decided verdict rows (metric `instructions`) for the cells both sides counted, and a
    note for each cell that lacks a count on a side (a note, never an error or a failure)."""
    rows, notes = [], []
    for key, by_side in counts.items():
        base, head = by_side.get("base", {}), by_side.get("head", {})
        missing = [f"{s}: {r['reason']}" for s, r in (("base", base), ("head", head)) if "counts" not in r]
        if missing:
            notes.append(f"{key}: instructions not counted ({'; '.join(missing)})")
            continue
        decision = decide_count(base["counts"], head["counts"], threshold)
        rows.append(
            {
                **{k: cells[key][k] for k in KEY},
                "metric": METRIC,
                "base_status": OK,
                "new_status": OK,
                "base_value": base["instructions_per_call"],
                "new_value": head["instructions_per_call"],
                "n_base": len(base["counts"]),
                "n_new": len(head["counts"]),
                "unit": "count",
                "ratio": decision.worse_ratio,
                "ci_low": decision.ci_low,
                "ci_high": decision.ci_high,
                "mde_pct": decision.mde_pct,
                "p_value": decision.p_value,
                "q_value": decision.q_value,
                "verdict": decision.verdict,
                "note": f"{counter}: {base['instructions_per_call']:.4g} -> "
                f"{head['instructions_per_call']:.4g} instr/call; {BLIND_SPOTS}",
            }
        )
    return rows, notes


def count_both(
    sides: Sequence[Side],
    setup: dict[str, Any],
    keys: Sequence[str],
    counter: str,
    work_dir: Path,
    cells: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{cell_key: {side label: its answer}} for both sides, one counting process per side.
    Cells that differ only in mode or threads make the same call at one thread: counted once."""
    first: dict[tuple[Any, ...], str] = {}
    for key in keys:
        first.setdefault(_same_work(cells[key]) if cells else (key,), key)
    by_side = {side.label: count_side(side, setup, list(first.values()), counter, work_dir) for side in sides}
    return {
        key: {
            label: answers[first[_same_work(cells[key]) if cells else (key,)]]
            for label, answers in by_side.items()
        }
        for key in keys
    }


def _same_work(cell: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(cell.get(axis) for axis in KEY if axis not in ("mode", "threads"))


def count_instructions(
    sides: Sequence[Side],
    setup: dict[str, Any],
    cells: dict[str, dict[str, Any]],
    keys: Sequence[str],
    choice: str,
    threshold: float,
    work_dir: Path,
) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """`ab --instructions CHOICE`: the decided rows, the notes (what was counted how, or why
    nothing was) and the raw counts for ab.json."""
    if choice == "off":
        return [], [], {}
    counter, how = pick_counter(choice)
    if counter is None or not keys:
        return [], [f"Instructions per call not counted: {how}."], {"counter": None, "reason": how}
    counts = count_both(sides, setup, keys, counter, work_dir, cells)
    rows, notes = count_rows(counts, cells, threshold, counter)
    head = (
        f"**Instructions per call** ({how}): {WARMUP} warm-up calls, then {BATCHES} batches of {CALLS} "
        f"calls per cell and side, at one thread, decided by the count at a {threshold:.0%} threshold "
        f"without a noise model (an interval from the batches' spread); it {BLIND_SPOTS}."
    )
    return rows, [head, *notes], {"counter": counter, "how": how, "cells": counts}
