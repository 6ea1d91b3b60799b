"""The plain function behind `inferbench ab` (tests call it directly)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from inferbench.ab.core import AbOptions
from inferbench.ab.rounds import BUDGET, DECIDED, MOST_ROUNDS, NOT_OK
from inferbench.commands import console, print_verdict
from inferbench.compare.runs import CompareOptions
from inferbench.status import OK

STOP_WORDS = {
    DECIDED: "decided",
    NOT_OK: "a side was not ok",
    MOST_ROUNDS: "the most rounds run",
    BUDGET: "no time left in the budget for another round",
}


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def ab_command(
    *,
    base: str | None,
    head: str | None = None,
    base_python: str | None = None,
    head_python: str | None = None,
    profile: str = "gate-cpu",
    rounds: int = 10,
    budget_s: float | None = None,
    overrides: dict[str, Any] | None = None,
    max_regression: float = 0.05,
    thresholds: dict[str, float] | None = None,
    alpha: float = 0.05,
    gate_on: str = "p50",
    instructions: str = "off",
    calibrate: int = 0,
    processes: int = 1,
    calibration: Path | None = None,
    out_dir: Path | None = None,
    repo: Path | None = None,
) -> int:
    """Exit code 0 = no regression, 1 = regression or broken cell, 3 = could not decide
    (usage errors raise UserError -> 2). `rounds`: the most rounds a cell runs (it stops once
    decided); `budget_s`: the whole run's wall-clock limit."""
    from inferbench.ab.command import run_ab

    auto = gate_on == "auto"  # the fallback of a cell with no clean A/A rounds: min
    options = AbOptions(
        rounds=rounds,
        budget_s=budget_s,
        instructions=instructions,
        calibrate=calibrate,
        processes=processes,
        calibration=calibration,
        gate_auto=auto,
        compare=CompareOptions(
            max_regression=max_regression,
            thresholds=thresholds or {},
            alpha=alpha,
            gate_on="min" if auto else gate_on,
        ),
    )

    def progress(side: str, key: str, round_index: int, record: dict[str, Any]) -> None:
        shown = f"p50 {record['latency_p50_ms']:.4g} ms" if record["status"] == OK else record["status"]
        flag = " [yellow]interfered[/]" if record.get("interfered") else ""
        console.print(f"round {round_index + 1}/{rounds} {side:4} {key}: {shown}{flag}", highlight=False)

    def planned(lines: list[str]) -> None:
        for line in lines:
            console.print(line, highlight=False, markup=False)

    def stopped(key: str, done: int, why: str) -> None:
        console.print(f"{key}: stopped after {done} round(s): {STOP_WORDS[why]}", highlight=False)

    # SIGTERM (a CI job cancelled) unwinds like Ctrl-C: the temporary worktrees are removed.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        frame, unmatched, md = run_ab(
            base=base,
            head=head,
            base_python=base_python,
            head_python=head_python,
            profile=profile,
            overrides=overrides,
            options=options,
            out_dir=out_dir,
            repo=repo,
            on_result=progress,
            on_stop=stopped,
            on_plan=planned,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return print_verdict(frame, unmatched, md, "base -> head, paired over rounds (ratio head/base, 95% CI)")
