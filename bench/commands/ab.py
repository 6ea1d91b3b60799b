"""`inferbench ab`: two source trees measured in one job, their rounds interleaved; the flags
become the ab room's options (`inferbench.ab.command.run_ab` does the work), its progress and
verdict are printed here."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inferbench.argtypes import budget, finite_float, fraction, threshold_pairs
from inferbench.commands.base import Command, Subparsers, console
from inferbench.commands.compare import print_verdict
from inferbench.commands.selection import add_setting_arguments, add_sweep_arguments, selection_from_args
from inferbench.status import OK


class Ab(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers,
            "ab",
            help="A/B in one job: both sides' fresh workers interleaved, compared round by round; "
            "exit 0 = no regression, 1 = regression, 2 = usage error, 3 = could not decide, "
            "4 = internal error",
        )
        parser.add_argument("--base", help="git ref or source directory (the gate: the merge base with main)")
        parser.add_argument("--head", help="git ref or source directory (default: the working tree)")
        parser.add_argument(
            "--base-python", help="interpreter for the base side (e.g. another venv's python)"
        )
        parser.add_argument("--head-python", help="interpreter for the head side")
        parser.add_argument("--profile", default="gate-cpu", help="built-in profile name or a .toml path")
        parser.add_argument(
            "--rounds",
            "-k",
            type=int,
            default=10,
            help="the most rounds per cell (a fresh worker per side each); a cell stops once decided",
        )
        parser.add_argument(
            "--budget",
            type=budget,
            metavar="DURATION",
            help="fit the whole run in e.g. 10m: no round starts that would not fit, and the cells still "
            "open get their last look (`make gate`: 10m)",
        )
        add_sweep_arguments(parser)
        add_setting_arguments(parser, inputs=False)
        cls._add_verdict_arguments(parser)
        parser.add_argument("--out", type=Path, help="output folder (default results/ab-<timestamp>)")

    @classmethod
    def _add_verdict_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """What counts as a regression, what gates, and the noise and counts that decide it."""
        parser.add_argument("--max-regression", default="5%", help="the threshold a regression must exceed")
        parser.add_argument("--threshold", action="append", default=[], metavar="METRIC=PCT")
        parser.add_argument(
            "--alpha",
            type=finite_float,
            default=0.05,
            help="family-wise rate of false regressions, over all cells and looks",
        )
        parser.add_argument(
            "--confidence",
            type=finite_float,
            default=0.95,
            help="of the repeated interval whose upper end must lie below 1 + threshold for a cell "
            "to pass: a cell exactly the threshold slower passes about (1 - confidence) / 2 of "
            "the time (`make gate`: 0.8, about a 10%% miss rate at the threshold)",
        )
        parser.add_argument(
            "--gate-on",
            choices=("p50", "min", "auto"),
            default="p50",
            help="the latency statistic that gates: p50, each process's fastest call (min; the "
            "steadiest on a shared machine), or auto: per cell, min unless the calibration's A/A "
            "rounds show p50 steadier beyond chance (`make gate`); the other is shown, advisory",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            metavar="N",
            help="fresh processes per side and round, pooled into the round's value (a process that "
            "lands slow weighs less; each round costs N times as much)",
        )
        parser.add_argument(
            "--fork-workers",
            nargs="?",
            const="always",
            default="no",
            choices=("no", "auto", "always"),
            help="fork each worker from its side's agent, which imported the engines once and is "
            "started again every round (a round costs about half). Both sides' code must know it: "
            "'always' (the flag alone) refuses the run where a side cannot fork, 'auto' then starts "
            "fresh workers on both sides and says so",
        )
        parser.add_argument(
            "--calibrate",
            type=int,
            default=0,
            metavar="ROUNDS",
            help="first run ROUNDS A/A rounds of the base side against itself (inside the budget): "
            "each cell's noise, what the run can decide, written to calibration.json",
        )
        parser.add_argument(
            "--calibration",
            type=Path,
            metavar="FILE",
            help="read the noise from FILE when it is of this machine class, profile and cells; with "
            "--calibrate, a FILE that does not fit (or is missing) is measured again and written there; "
            "the run then writes FILE back with its own rounds' spread pooled in, for the next run",
        )
        parser.add_argument(
            "--instructions",
            choices=("off", "auto", "perf", "callgrind"),
            default="off",
            help="also count instructions per call, once per cell and side, and gate on the count "
            "(threshold 1%%, or --threshold instructions=PCT): perf where the CPU's counter is "
            "exposed, else Valgrind's callgrind (auto); a cell without a count gets a note",
        )

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        """Exit code 0 = no regression, 1 = regression or broken cell, 3 = could not decide
        (usage errors raise UserError -> 2)."""
        from inferbench.ab.command import AbEvents, run_ab

        pairs = threshold_pairs(args.threshold)
        selection = selection_from_args(args)
        options = _options(args, pairs)
        printer = _Printer(options.rounds)
        with _sigterm_unwinds():
            frame, unmatched, md = run_ab(
                base=args.base,
                head=args.head,
                base_python=args.base_python,
                head_python=args.head_python,
                profile=args.profile,
                selection=selection,
                options=options,
                out_dir=args.out,
                events=AbEvents(on_result=printer.result, on_stop=printer.stopped, on_plan=printer.planned),
            )
        return print_verdict(
            frame, unmatched, md, "base -> head, paired over rounds (ratio head/base, 95% CI)"
        )


def _options(args: argparse.Namespace, thresholds: list[tuple[str, str]]) -> Any:
    """The run's `AbOptions`: rounds, budget, counts and calibration, and the comparison's
    thresholds (`--gate-on auto` gates each cell on its calibrated steadier statistic)."""
    from inferbench.ab.core import AbOptions
    from inferbench.compare.core import CompareOptions
    from inferbench.sweep.budget import parse_budget

    auto = args.gate_on == "auto"  # the fallback of a cell with no clean A/A rounds: min
    compare = CompareOptions(
        max_regression=fraction(args.max_regression),
        thresholds={metric: fraction(text) for metric, text in thresholds},
        alpha=args.alpha,
        confidence=args.confidence,
        gate_on="min" if auto else args.gate_on,
    )
    return AbOptions(
        rounds=args.rounds,
        budget_s=parse_budget(args.budget) if args.budget else None,
        instructions=args.instructions,
        calibrate=args.calibrate,
        processes=args.processes,
        fork_workers=args.fork_workers != "no",
        fork_or_fresh=args.fork_workers == "auto",
        calibration=args.calibration,
        gate_auto=auto,
        compare=compare,
    )


class _Printer:
    """The run's progress on the terminal: each round's value, the plan, each cell's stop."""

    def __init__(self, rounds: int) -> None:
        from inferbench.ab.rounds import BUDGET, DECIDED, MOST_ROUNDS, NOT_OK

        self.rounds = rounds
        self.stop_words = {
            DECIDED: "decided",
            NOT_OK: "a side was not ok",
            MOST_ROUNDS: "the most rounds run",
            BUDGET: "no time left in the budget for another round",
        }

    def result(self, side: str, key: str, round_index: int, record: dict[str, Any]) -> None:
        shown = f"p50 {record['latency_p50_ms']:.4g} ms" if record["status"] == OK else record["status"]
        flag = " [yellow]interfered[/]" if record.get("interfered") else ""
        console.print(f"round {round_index + 1}/{self.rounds} {side:4} {key}: {shown}{flag}", highlight=False)

    def planned(self, lines: list[str]) -> None:
        for line in lines:
            console.print(line, highlight=False, markup=False)

    def stopped(self, key: str, done: int, why: str) -> None:
        console.print(f"{key}: stopped after {done} round(s): {self.stop_words[why]}", highlight=False)


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a CI job cancelled) unwinds like Ctrl-C: the temporary worktrees are removed."""

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
