"""Where the gate's noise comes from on this machine: A/A rounds of the gate profile under several
settings at once, and each setting's per-round spread and what it buys in a budget.

Every round runs every setting's cells, each as a pair of fresh workers of the working tree
(order AB, BA, ... as `ab` runs them), so whatever the machine does over the campaign hits every
setting alike and the settings compare side by side. The settings:

- `as-is`: the profile (the gate today);
- `pinned`: both workers pinned to the same cores (`pin = true`: the first THREADS cores);
- `longer-loops`: 4x the timed window (`min_seconds` 2, `max_seconds` 4);
- `bigger-calls`: batch 16, so that the microsecond-scale cells' calls take a millisecond or more;
- `three-processes`: three fresh processes per side per round, back to back (A A A B B B) and
  pooled by the side's runner (the fastest call of all, the median of all calls), each round
  costing three; `ab --processes 3` alternates the sides instead (A B B A A B);
- `forked`: workers forked from each side's agent, which imported the engines once and starts
  again every round (`ab --fork-workers`); `forked-3`: three of them per side per round, back
  to back;
- `gate`: what `make gate` runs: three forked workers per side per round, the sides
  alternating process by process (A B B A A B) and pooled by the parent
  (`inferbench.ab.rounds.pair_processes`); `gate-longer`: the same with the timed window of
  `longer-loops`.

And two read from the `as-is` rounds afterwards, at no extra cost:

- `median-of-3`: three processes per side per round (three consecutive rounds' medians), each
  such round costing three, so it is compared with the others in the same budget;
- `all-rounds`: the interfered rounds kept in, to see what leaving them out is worth.

For each setting, cell and statistic (min, p50): the per-round spread the gate's estimator sees
(`inferbench.ab.calibration.cell_noise`), the seconds a round takes, and the gate's plan in a
budget (`inferbench.ab.calibration.plan`): the rounds an unchanged cell needs to pass and the
slowdown it would catch. Writes records.json after every round (an interrupted campaign keeps
what it measured), then variance.json and variance.md.

`python -m inferbench.tools.variance_sources --rounds 10 --out results/variance`
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.ab.calibration import STATISTICS, CellNoise, cell_noise, plan, rounds_allowed
from inferbench.ab.command import profile_data
from inferbench.ab.core import SIDES, Agent, Launch, Pair, agents, clean_pairs, round_order
from inferbench.ab.rounds import pair_processes
from inferbench.ab.sides import prepared_sides
from inferbench.util import atomic_write_json, atomic_write_text

log = logging.getLogger("inferbench.tools.variance_sources")

#: The settings measured side by side: TOML sections merged into the profile's.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "as-is": {},
    "pinned": {"sweep": {"pin": True}},
    "longer-loops": {"measure": {"min_seconds": 2.0, "max_seconds": 4.0}},
    "bigger-calls": {"sweep": {"batch_sizes": [16]}},
    "three-processes": {},
    "forked": {},
    "forked-3": {},
    "gate": {},
    "gate-longer": {"measure": {"min_seconds": 2.0, "max_seconds": 4.0}},
}
#: Fresh processes per side per round (`ab --processes`), where a setting is not one.
PROCESSES = {"three-processes": 3, "forked-3": 3}
#: Settings whose processes the parent runs, alternating the sides, as `ab` does, and how many.
ALTERNATING = {"gate": 3, "gate-longer": 3}
#: Settings whose workers are forked from their side's agent.
FORKED = {"forked", "forked-3", *ALTERNATING}
#: Processes per side per round read from `as-is` afterwards (`median-of-3`).
GROUP = 3

Pairs = list[Pair]
Records = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]  # setting -> cell -> side -> rounds


def with_setting(profile: Mapping[str, Any], setting: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    data = copy.deepcopy(dict(profile))
    for section, values in setting.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def grouped(pairs: Pairs, size: int = GROUP) -> Pairs:
    """Consecutive rounds merged `size` at a time into one pair of per-side medians: what
    `size` processes per side per round would have given."""
    merged = []
    for start in range(0, len(pairs) - size + 1, size):
        chunk = pairs[start : start + size]
        merged.append(
            tuple({c: float(np.median([p[i][c] for p in chunk])) for c in _COLUMNS} for i in (0, 1))
        )
    return merged  # type: ignore[return-value]


_COLUMNS = ("latency_min_ms", "latency_p50_ms")


def noises(records: Records, seconds: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, CellNoise]]:
    """Each setting's cells' noise, with the two read afterwards from `as-is`."""
    found: dict[str, dict[str, CellNoise]] = {}
    for setting, cells in records.items():
        found[setting] = {
            k: cell_noise(clean_pairs(by_side), seconds[setting][k]) for k, by_side in cells.items()
        }
    if "as-is" in records:
        cells = records["as-is"]
        found["all-rounds"] = {
            k: cell_noise(clean_pairs(by_side, keep_interfered=True), seconds["as-is"][k])
            for k, by_side in cells.items()
        }
        # A round of three processes per side costs three rounds: compared in the same budget.
        found[f"median-of-{GROUP}"] = {
            k: cell_noise(grouped(clean_pairs(by_side)), GROUP * seconds["as-is"][k])
            for k, by_side in cells.items()
        }
    return found


def table(
    found: Mapping[str, Mapping[str, CellNoise]], budget_s: float, threshold: float, confidence: float
) -> list[dict[str, Any]]:
    """One row per setting, cell and statistic: the spread, a round's cost, and the gate's plan
    when every cell of the setting shares `budget_s` (at most 30 rounds)."""
    rows = []
    for setting, cells in found.items():
        allowed = rounds_allowed(cells, 30, budget_s)
        for key, noise in cells.items():
            for statistic in STATISTICS:
                planned = plan(
                    key,
                    statistic,
                    noise,
                    threshold=threshold,
                    confidence=confidence,
                    alpha=0.05,
                    tests=len(cells),
                    rounds_allowed=allowed,
                )
                rows.append(
                    {
                        "setting": setting,
                        "cell": key,
                        "statistic": statistic,
                        "sigma_pct": noise.sigma_pct.get(statistic),
                        "clean_rounds": noise.rounds,
                        "round_s": noise.round_s,
                        "rounds_in_budget": allowed,
                        "rounds_to_pass": planned.rounds_to_pass,
                        "detects_pct": planned.detects_pct,
                    }
                )
    return rows


def markdown(rows: Sequence[Mapping[str, Any]], budget_s: float, threshold: float) -> str:
    lines = [
        f"Per-round spread of the A/A log ratio (%), and the gate's plan at {threshold:.0%} when the "
        f"setting's cells share a {budget_s / 60:g} min budget (at most 30 rounds). "
        f"`median-of-{GROUP}`: rounds of three processes per side (their medians), each costing three "
        "rounds, so its spread is per such round and its budget column is the fair comparison.",
        "",
        "| setting | cell | stat | spread % | clean | s/round | rounds in budget | pass after | catches ≥ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sigma = "-" if r["sigma_pct"] is None else f"{r['sigma_pct']:.2f}"
        passes = "-" if r["rounds_to_pass"] is None else str(r["rounds_to_pass"])
        detects = "-" if r["detects_pct"] is None else f"{r['detects_pct']:.1f}%"
        lines.append(
            f"| {r['setting']} | {r['cell']} | {r['statistic']} | {sigma} | {r['clean_rounds']} | "
            f"{r['round_s']:.1f} | {r['rounds_in_budget']} | {passes} | {detects} |"
        )
    return "\n".join(lines) + "\n"


def measure(
    profile: str, settings: Sequence[str], rounds: int, out: Path
) -> tuple[Records, dict[str, dict[str, float]]]:
    """The campaign: every round, every setting's cells, each a pair of fresh workers."""
    records: Records = {}
    seconds: dict[str, dict[str, float]] = {}
    with prepared_sides(".", None) as sides, ExitStack() as stack:
        data, name = profile_data(profile, sides[0])
        running = {}
        for setting in settings:
            setup = {
                "profile": with_setting(data, SETTINGS[setting]),
                "name": name,
                "overrides": {},
                "processes": PROCESSES.get(setting, 1),
                "fork_workers": setting in FORKED,
            }
            running[setting] = stack.enter_context(agents(sides, setup, out / setting))
            keys = [c["key"] for c in running[setting]["head"].info["cells"]]
            records[setting] = {k: {s: [] for s in SIDES} for k in keys}
            seconds[setting] = dict.fromkeys(keys, 0.0)
        for r in range(rounds):
            for setting in settings:
                for key in records[setting]:
                    before = time.perf_counter()
                    # Round numbers from 1: no worker repeats round 0's full accuracy check.
                    if setting in ALTERNATING:
                        pooled = pair_processes(key, r + 1, launcher(running[setting]), ALTERNATING[setting])
                        for side in SIDES:
                            records[setting][key][side].append(pooled[side])
                    else:
                        for side in round_order(r):
                            records[setting][key][side].append(running[setting][side].run(key, r + 1))
                    seconds[setting][key] += (time.perf_counter() - before) / rounds
            atomic_write_json(out / "records.json", {"rounds_done": r + 1, "records": records})
            log.info("round %d/%d done", r + 1, rounds)
    return records, seconds


def launcher(sides: Mapping[str, Agent]) -> Launch:
    def launch(side: str, key: str, round_index: int) -> dict[str, Any]:
        return sides[side].run(key, round_index)

    return launch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="variance_sources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gate-cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="default: all")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds the plan's rounds share")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument(
        "--confidence", type=float, default=0.8, help="of the interval a pass needs (`make gate`: CONFIDENCE)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results") / f"variance-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    records, seconds = measure(args.profile, args.setting or list(SETTINGS), args.rounds, out)
    rows = table(noises(records, seconds), args.budget, args.threshold, args.confidence)
    atomic_write_json(out / "variance.json", {"rounds": args.rounds, "rows": rows})
    text = markdown(rows, args.budget, args.threshold)
    atomic_write_text(out / "variance.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
