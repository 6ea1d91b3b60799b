"""What this runner can detect: an A/A calibration of the gate's cells.

The gate's error rates hold on any machine, but how much it can decide does not: on a 2-vCPU
shared VM one cell's rounds spread 1% and another's 20%. A short A/A pre-run (`ab
--calibrate K`: K rounds of the base side against itself, before the A/B rounds) measures,
per cell and gating statistic, the spread of one round's log ratio as the gate's estimator sees
it, and the spread of the processes' p50s. From that:

- each cell gates on the steadier statistic (`ab --gate-on auto`): the minimum unless p50 is
  steadier beyond chance (`CellNoise.steadiest`), chosen on A/A data the verdict never sees,
  so the choice cannot favour an answer;
- the run says up front how many rounds an unchanged cell needs to pass at the threshold, and
  the smallest slowdown it would catch in the rounds allowed (`plan`);
- `run --calibration FILE` puts the runner's process-to-process spread on a one-process run's
  rows (`calibrated_spread_pct`), which the answer's "within noise" reads.

A gate run with `--calibration FILE` writes FILE back with each cell's per-round spread pooled
with the spread of its own clean A/B rounds (`Calibration.refreshed`), so the next run's choice
of statistic and its plan rest on more rounds than the few A/A ones: 4 A/A rounds had read one
cell's spread at 0.3% where 20 A/A runs read 2.4%, and another's at 6.8% against 3.5%
(docs/measurements/2026-12-03-gate-trials-ab-20.md).

A serve cell gates on `max_qps_at_slo` alone (inferbench.compare.core), so its calibration
measures that metric's spread (a drop is the slowdown), under that name, and it has no choice
of statistic to make.

A calibration belongs to a machine class (`inferbench.history.fingerprint.Machine`) and a
profile's cells; one from another class is refused, not applied.

The rounds a cell needs are planned with the normal approximation of the gate's own decision
(`inferbench.compare.verdict.decide_sequential`): the repeated-interval critical value of the looks at
3, 5, 8, 12, ... rounds, Student's t at n - 1 degrees of freedom, and a per-round spread that
the trimmed estimator would see. Few A/A rounds estimate that spread loosely (4 rounds: within
a factor of about 2 either way, 90% of the time), so the plan is a guide, never a verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.compare.core import SERVE_METRIC
from inferbench.compare.sequential import FIRST_LOOK, Looks, add_look, look_due, nominal_level
from inferbench.compare.verdict import POWER, f_quantile, paired_estimate, t_isf, t_quantile
from inferbench.errors import UserError
from inferbench.sweep.repeats import spread_pct
from inferbench.util import atomic_write_json

CALIBRATION_VERSION = 1
#: The statistics a cell can gate on; the first is the default (see `CellNoise.steadiest`).
STATISTICS = ("min", "p50")
#: How sure the A/A rounds must be that p50 is steadier before a cell gates on it.
SWITCH_LEVEL = 0.05
#: The most rounds a cell's pooled spread stands for (`Calibration.refreshed`): past it, older
#: rounds weigh less, so the file follows a runner class whose noise drifts (other tenants,
#: another host generation) instead of averaging it away.
MEMORY_ROUNDS = 60
_COLUMN = {"min": "latency_min_ms", "p50": "latency_p50_ms"}


@dataclass(frozen=True)
class CellNoise:
    """One cell's A/A spread: per statistic, the spread of one round's log ratio in %
    (`sigma_pct`, as the gate's trimmed estimator sees it: its standard error times the square
    root of the rounds); `spread_pct`, (max - min) / median of every process's p50 in %, the
    measure `run --repeats` reports as `process_p50_spread_pct`; the clean rounds it came from;
    and the seconds one round of the cell took (both processes)."""

    sigma_pct: dict[str, float]
    spread_pct: float
    rounds: int
    round_s: float

    @property
    def steadiest(self) -> str:
        """The minimum, unless p50's spread is smaller by more than these few rounds can tell
        from chance (a one-sided F test at SWITCH_LEVEL, rounds - 1 degrees of freedom each).
        Picking whichever of two loose estimates is smaller picks the worse one often: in two
        20-run campaigns each process's minimum was the steadier or tied in 10 of 12 cells, and
        a 4-round calibration that chose p50 by 9.7% against 11.1% gated tiny-cnn/openvino on a
        statistic that then spread 18.7% against the minimum's 10.3%
        (docs/measurements/2026-12-02-gate-trials-zen5.md)."""
        low, high = self.sigma_pct.get("min"), self.sigma_pct.get("p50")
        if low is None or high is None:  # only one was estimated: that one
            return "p50" if low is None and high is not None else "min"
        if high == 0:  # p50 did not move at all: steadier unless min did not either
            return "p50" if low > 0 else "min"
        df = max(self.rounds - 1, 1)
        return "p50" if (low / high) ** 2 > f_quantile(1 - SWITCH_LEVEL, df, df) else "min"


@dataclass(frozen=True)
class Calibration:
    machine: str  # the machine class's fingerprint
    machine_label: str
    profile: str
    cells: dict[str, CellNoise] = field(default_factory=dict)

    def gate_on(self, key: str, default: str) -> str:
        """The statistic cell `key` gates on: the steadier one, else `default` (no estimate)."""
        noise = self.cells.get(key)
        if noise is None or not any(s in noise.sigma_pct for s in STATISTICS):
            return default  # no estimate, or a serve cell (its one metric is not a choice)
        return noise.steadiest

    def spread_for(self, key: str) -> float | None:
        """This runner's process-to-process spread of p50 for cell `key`: the cell's own when it
        was calibrated, else the median over the calibrated cells (a cell of a user's sweep is
        rarely a gate cell; the runner's typical spread is the best guess). None: no estimate."""
        measured = {k: n.spread_pct for k, n in self.cells.items() if n.rounds >= 2}
        if key in measured:
            return measured[key]
        return float(np.median(list(measured.values()))) if measured else None

    def refreshed(self, runs: Mapping[str, CellNoise]) -> Calibration:
        """This calibration with each cell's spread per round pooled with `runs`, one gate run's
        noise per cell from its clean (base, head) rounds (`cell_noise`). A change between the
        sides shifts every round's log ratio alike, so the spread around the mean is the
        runner's noise whatever the verdict. A change that alters the noise itself moves it
        (the gate trials' +10% busy-wait steadied tiny-cnn/onnxruntime: 0.8% against 2.4%), as
        it will move the next runs' once merged; the plan and the choice of statistic read it,
        the verdicts never do (each run judges by its own spread). Pooled by degrees of freedom,
        the older rounds capped so that at most MEMORY_ROUNDS are counted. The process-to-process
        spread and the round's seconds stay the A/A rounds' (a range grows with the values it
        spans)."""
        cells = dict(self.cells)
        for key, run in runs.items():
            if key in cells and run.rounds >= 2:
                cells[key] = _pooled(cells[key], run)
        return replace(self, cells=cells)

    def to_dict(self) -> dict[str, Any]:
        return {"calibration_version": CALIBRATION_VERSION, **asdict(self)}

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"--calibration {path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"--calibration {path}: not a calibration file ({exc})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, source: object) -> Calibration:
        if not isinstance(data, dict) or data.get("calibration_version") != CALIBRATION_VERSION:
            raise UserError(f"{source}: not a calibration file of version {CALIBRATION_VERSION}")
        try:
            cells = {str(k): _cell_noise(v) for k, v in data["cells"].items()}
            return cls(str(data["machine"]), str(data["machine_label"]), str(data["profile"]), cells)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{source}: malformed calibration ({exc!r})") from None

    def fits(self, machine: str, profile: str, keys: Sequence[str]) -> bool:
        """Whether this calibration can stand in for A/A rounds of `keys` here."""
        return machine == self.machine and profile == self.profile and all(k in self.cells for k in keys)

    def check_machine(self, machine: str, label: str, source: object) -> None:
        """Refuse a calibration measured on another machine class: its spread says nothing here."""
        if machine != self.machine:
            raise UserError(
                f"{source} was calibrated on {self.machine_label}, not this machine ({label}); "
                "calibrate here (`inferbench ab --calibrate 4`)"
            )


def _pooled(old: CellNoise, run: CellNoise) -> CellNoise:
    kept = min(old.rounds, max(MEMORY_ROUNDS - run.rounds, 2))
    sigma = dict(old.sigma_pct)
    for statistic, s in run.sigma_pct.items():
        before = sigma.get(statistic)
        if before is None or kept < 2:
            sigma[statistic] = s
            continue
        a, b = kept - 1, run.rounds - 1
        sigma[statistic] = math.sqrt((a * before**2 + b * s**2) / (a + b))
    return CellNoise(sigma, old.spread_pct, kept + run.rounds, old.round_s)


def _cell_noise(value: Any) -> CellNoise:
    sigma = {str(s): float(v) for s, v in value["sigma_pct"].items() if s in (*STATISTICS, SERVE_METRIC)}
    if any(not (v >= 0 and math.isfinite(v)) for v in sigma.values()):
        raise ValueError("sigma_pct must be finite and >= 0")
    noise = CellNoise(sigma, float(value["spread_pct"]), int(value["rounds"]), float(value["round_s"]))
    if not (noise.spread_pct >= 0 and noise.rounds >= 0 and noise.round_s >= 0):
        raise ValueError("spread_pct, rounds and round_s must be >= 0")
    return noise


def cell_noise(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], round_s: float) -> CellNoise:
    """One cell's noise from its clean A/A rounds, as (first process, second process) records.
    A statistic with fewer than two rounds, or a missing value, has no spread. A serve cell's
    noise is its peak rate's (`max_qps_at_slo`); a round where either side found none is left
    out, as the gate leaves it out."""
    serve = any(r.get("mode") == "serve" for pair in pairs for r in pair)
    columns = {SERVE_METRIC: SERVE_METRIC} if serve else _COLUMN
    sigma = {}
    for statistic, column in columns.items():
        first: list[float] = []
        second: list[float] = []
        for a, b in pairs:
            x, y = _value(a, column), _value(b, column)
            if x is not None and y is not None:
                first.append(x)
                second.append(y)
        estimate = paired_estimate(first, second, higher_is_better=serve) if len(first) >= 2 else None
        if estimate is not None and math.isfinite(estimate.se):
            sigma[statistic] = 100 * estimate.se * math.sqrt(estimate.n)
    spread_column = SERVE_METRIC if serve else "latency_p50_ms"
    values = [v for pair in pairs for r in pair if (v := _value(r, spread_column)) is not None]
    spread = spread_pct(values) if len(values) >= 2 else 0.0
    return CellNoise(sigma, spread, len(pairs), round_s)


def _value(record: Mapping[str, Any], column: str) -> float | None:
    """A record's positive, finite value of `column` (None: missing, as a serve cell where no
    rate passed)."""
    try:
        value = float(record[column])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


@dataclass(frozen=True)
class Plan:
    """What the gate can decide about one cell on this runner (None: not within the rounds)."""

    key: str
    statistic: str
    sigma_pct: float | None
    rounds_allowed: int
    rounds_to_pass: int | None  # an unchanged cell passes with 80% chance by this look
    detects_pct: float | None  # the slowdown caught with 80% power in the rounds allowed


def plan(
    key: str,
    statistic: str,
    noise: CellNoise | None,
    *,
    threshold: float,
    alpha: float,
    tests: int,
    rounds_allowed: int,
    confidence: float = 0.95,
) -> Plan:
    """The normal approximation of `decide_sequential` at each planned look: an unchanged cell
    passes when the upper bound of its repeated interval, about (t_c + t_power) standard errors
    above zero, is below log(1 + threshold); a slowdown is caught, with 80% power, from
    log(1 + threshold) + (t_fail + t_power) standard errors at the last look. `tests`: the gating
    tests alpha is split over (Bonferroni, as the gate does)."""
    if noise is not None and SERVE_METRIC in noise.sigma_pct:
        statistic = SERVE_METRIC  # a serve cell gates on its peak rate, whatever gate_on says
    sigma = None if noise is None else noise.sigma_pct.get(statistic)
    if sigma is None or rounds_allowed < 2:
        return Plan(key, statistic, sigma, rounds_allowed, None, None)
    s, bound = sigma / 100, math.log1p(threshold)
    passes = None
    schedule = _schedule(rounds_allowed)
    for looks in schedule:
        n = looks[-1][0]
        half = t_isf(nominal_level((1 - confidence) / 2, looks), n - 1)
        if (half + t_quantile(POWER, n - 1)) * s / math.sqrt(n) < bound:
            passes = n
            break
    fail_t = t_isf(nominal_level(alpha / max(1, tests), schedule[-1]), rounds_allowed - 1)
    detects = 100 * math.expm1(
        bound + (fail_t + t_quantile(POWER, rounds_allowed - 1)) * s / math.sqrt(rounds_allowed)
    )
    return Plan(key, statistic, sigma, rounds_allowed, passes, detects)


def _schedule(rounds: int) -> list[Looks]:
    """The gate's looks over `rounds` clean rounds, spending time rounds / the most rounds (the
    budget's share is not known in advance), the last at tau = 1."""
    looks: Looks = ()
    designs = []
    for n in range(FIRST_LOOK, rounds):
        if look_due(looks, n):
            looks = add_look(looks, n, n / rounds)
            designs.append(looks)
    designs.append(add_look(looks, rounds, 1.0))
    return designs


def rounds_allowed(noise: Mapping[str, CellNoise], most: int, budget_left_s: float | None) -> int:
    """The rounds every cell gets if none stops early: `most`, or fewer when a round of every
    cell does not fit that many times into what is left of the budget."""
    if budget_left_s is None:
        return most
    per_round = sum(n.round_s for n in noise.values())
    return most if per_round <= 0 else max(0, min(most, int(budget_left_s // per_round)))


def plan_lines(plans: Sequence[Plan], threshold: float, calibration: Calibration) -> list[str]:
    """The plan, one line per cell, for the log and compare.md."""
    rounds = {p.key: calibration.cells[p.key].rounds for p in plans if p.key in calibration.cells}
    aa = f"{min(rounds.values())}" if rounds and min(rounds.values()) == max(rounds.values()) else "a few"
    lines = [
        f"What this runner ({calibration.machine_label}) can decide at {threshold:.0%}, from {aa} "
        "rounds measured here (A/A rounds, and any earlier gate runs' pooled in; a guide: few "
        "rounds estimate a spread loosely):"
    ]
    for p in plans:
        if p.sigma_pct is None:
            lines.append(f"- {p.key}: gates on {p.statistic}; no clean A/A rounds, so no plan")
            continue
        others = calibration.cells[p.key].sigma_pct
        shown = ", ".join(f"{s} {others[s]:.1f}%" for s in (*STATISTICS, SERVE_METRIC) if s in others)
        passes = (
            f"an unchanged cell passes after about {p.rounds_to_pass} rounds"
            if p.rounds_to_pass is not None
            else f"an unchanged cell cannot pass within {p.rounds_allowed} rounds"
        )
        change = "a drop in the peak rate" if p.statistic == SERVE_METRIC else "a slowdown"
        lines.append(
            f"- {p.key}: gates on {p.statistic} (spread per round: {shown}); {passes}; {change} "
            f"of {p.detects_pct:.1f}% or more is caught in {p.rounds_allowed} rounds"
        )
    return lines
