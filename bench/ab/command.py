"""The ab room's entry (`run_ab`): resolve the sides, run the interleaved rounds, write the
comparison (compare.md, compare.csv, compare.html, ab.json) and each side's run folder (base/,
head/). The command line's part, flags and printing, is `inferbench.commands.ab`."""

from __future__ import annotations

import datetime as dt
import logging
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from inferbench.ab.calibration import Calibration, cell_noise, plan, plan_lines, rounds_allowed
from inferbench.ab.core import AbOptions, agents, clean_pairs, paired_rows
from inferbench.ab.instructions import METRIC, count_instructions
from inferbench.ab.rounds import BUDGET, DECIDED, MOST_ROUNDS, NOT_OK, Rounds, aa_rounds, run_rounds
from inferbench.ab.sides import Side, prepared_sides
from inferbench.compare.core import CompareOptions
from inferbench.compare.env import load_view
from inferbench.compare.report import write_outputs
from inferbench.config import CELL_AXES, Selection, cell_axes, load_profile
from inferbench.errors import UserError
from inferbench.history.fingerprint import machine_from_env
from inferbench.layout import profile_file
from inferbench.status import MEASURED
from inferbench.store.runfolder import SCHEMA_VERSION, save_cell, write_csv
from inferbench.util import atomic_write_json

log = logging.getLogger(__name__)


def profile_data(profile: str, base: Side) -> tuple[dict[str, Any], str]:
    """The profile's TOML data; a profile named (not a path) is read from the base's tree when
    it has it, else from this harness. The change under test never picks the settings that judge
    it: a head that edits or trims the gate profile is still measured on the base's sweep."""
    path = Path(profile)
    if path.suffix != ".toml" and not path.exists() and base.source is not None:
        candidate = profile_file(base.source, profile)
        if candidate.is_file():
            path = candidate
    if path.is_file():
        text, name = path.read_text(), path.stem
    else:
        load_profile(profile)  # the one-line error for an unknown name
        text, name = (resources.files("inferbench") / "profiles" / f"{profile}.toml").read_text(), profile
    try:
        return tomllib.loads(text), name
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed profile {profile}: {exc}") from None


@dataclass(frozen=True)
class AbEvents:
    """What `run_ab` reports as it goes (each optional): `on_result(side, key, round_index,
    record)` per worker's record, `on_stop(key, rounds_done, why)` when a cell stops,
    `on_plan(lines)` once the calibration's plan is known."""

    on_result: Callable[[str, str, int, dict[str, Any]], None] | None = None
    on_stop: Callable[[str, int, str], None] | None = None
    on_plan: Callable[[list[str]], None] | None = None


@dataclass(frozen=True)
class _Matched:
    """Both sides' cells, matched by key."""

    cells: dict[str, dict[str, Any]]  # the head's cells by key
    common: list[str]  # the keys both sides have
    unmatched: list[dict[str, Any]]  # a row per cell of one side only
    missing: list[dict[str, Any]]  # the base's cells the head lacks


@dataclass(frozen=True)
class _Measured:
    """What the interleaved rounds leave once the sides are closed."""

    sides: tuple[Side, Side]
    infos: dict[str, dict[str, Any]]  # each side's agent's answer to the setup
    matched: _Matched
    options: AbOptions  # with each cell's gating statistic, once calibrated
    notes: list[str]  # the calibration's plan, the instruction counts'
    counted: list[dict[str, Any]]  # the instruction counts' rows
    counts: dict[str, Any]  # the raw counts, for ab.json
    run: Rounds


def run_ab(
    *,
    base: str | None,
    head: str | None = None,
    base_python: str | None = None,
    head_python: str | None = None,
    profile: str = "gate-cpu",
    selection: Selection | None = None,
    options: AbOptions | None = None,
    out_dir: Path | None = None,
    repo: Path | None = None,
    events: AbEvents | None = None,
) -> tuple[Any, Any, Path]:
    """Run an A/B comparison; returns (verdict frame, unmatched frame, compare.md path).
    Checked before any checkout: the selection against the profile, and `out_dir`."""
    options = options or AbOptions()
    selection = selection or Selection()
    _validate(load_profile(profile).with_overrides(selection))
    out_dir = out_dir or Path("results") / f"ab-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if (out_dir / "compare.md").exists():
        raise UserError(f"{out_dir} already holds an A/B comparison; pass another --out")
    started = time.perf_counter()  # the budget covers the whole run, checkouts included
    with prepared_sides(base, head, base_python, head_python, repo) as sides:
        out_dir.mkdir(parents=True, exist_ok=True)
        measured = _measure(sides, profile, selection, options, out_dir, events or AbEvents(), started)
    return _write_outputs(measured, out_dir, started)


def _measure(
    sides: tuple[Side, Side],
    profile: str,
    selection: Selection,
    options: AbOptions,
    out_dir: Path,
    events: AbEvents,
    started: float,
) -> _Measured:
    """Start both sides' agents, match their cells, calibrate, count instructions, then run the
    interleaved rounds."""
    data, name = profile_data(profile, sides[0])
    setup = {
        "profile": data,
        "name": name,
        "overrides": selection.overrides(),
        # The parent runs a round's processes, alternating the sides (`rounds.pair_processes`).
        "processes": 1,
    }
    if options.fork_workers:
        setup["fork_workers"] = True
    with agents(sides, setup, out_dir, must_fork=not options.fork_or_fresh) as running:
        options, fork_notes = _workers_started(options, running)
        matched = _matched_cells(running)
        options, plan_notes, calibration = _calibrated(
            options,
            running,
            matched.common,
            _calibration_profile(name, options),
            out_dir,
            events.on_result,
            events.on_plan,
            started=started,
        )
        # Counted before the rounds: its time is inside the budget, like the checkouts.
        counted, count_notes, counts = count_instructions(
            sides,
            setup,
            matched.cells,
            matched.common,
            options.instructions,
            options.compare.threshold(METRIC),
            out_dir / "instructions",
        )
        run = run_rounds(
            matched.common,
            options,
            lambda side, key, r: running[side].run(key, r),
            events.on_result,
            cells=matched.cells,
            on_stop=events.on_stop,
            clock=time.perf_counter,
            started=started,
        )
        infos = {label: agent.info for label, agent in running.items()}
    notes = [*fork_notes, *plan_notes, *count_notes]
    if calibration is not None and options.calibration is not None:
        notes.append(_refresh_calibration(calibration, run, options.calibration))
    return _Measured(sides, infos, matched, options, notes, counted, counts, run)


def _workers_started(options: AbOptions, running: dict[str, Any]) -> tuple[AbOptions, list[str]]:
    """The options as the agents started the workers: with `--fork-workers auto` and a side that
    cannot fork, fresh processes on both sides, and a note saying why."""
    refused = [agent.fork_refused for agent in running.values() if agent.fork_refused]
    if not options.fork_workers or not refused:
        return options, []
    note = f"Workers: fresh processes on both sides, not forked (--fork-workers auto): {'; '.join(refused)}."
    log.warning("%s", note)
    return replace(options, fork_workers=False), [note]


def _matched_cells(running: dict[str, Any]) -> _Matched:
    """The head's cells by key, the keys both sides have, the unmatched rows (a cell of one
    side only) and the base's cells the head lacks."""
    cells = {c["key"]: c for c in running["head"].info["cells"]}
    base_keys = {c["key"] for c in running["base"].info["cells"]}
    common = [k for k in cells if k in base_keys]
    unmatched = [{**_key_columns(cells[k]), "only_in": "head"} for k in cells if k not in base_keys]
    missing = [c for c in running["base"].info["cells"] if c["key"] not in cells]
    unmatched += [{**_key_columns(c), "only_in": "base"} for c in missing]
    return _Matched(cells, common, unmatched, missing)


def _write_outputs(measured: _Measured, out_dir: Path, started: float) -> tuple[Any, Any, Path]:
    """The verdict rows, each side's run folder, ab.json, and compare.md/.csv/.html."""
    import pandas as pd

    m = measured
    frame = paired_rows(m.run.results, m.matched.cells, m.options, m.matched.missing, m.run.looks, m.counted)
    minutes = (time.perf_counter() - started) / 60
    for side in m.sides:
        _write_side(out_dir / side.label, side, m.infos[side.label], m.run.results)
    atomic_write_json(out_dir / "ab.json", _ab_json(m, minutes))
    base_view, head_view = (load_view(out_dir / s.label, f"{s.label} ({s.described})") for s in m.sides)
    md = write_outputs(
        frame,
        pd.DataFrame(m.matched.unmatched),
        m.options.compare,
        out_dir,
        "base",
        "head",
        _notes(m, minutes),
        views=(base_view, head_view),
    )
    return frame, pd.DataFrame(m.matched.unmatched), md


def _ab_json(m: _Measured, minutes: float) -> dict[str, Any]:
    """ab.json: the run's settings, the sides, every round's summary, each cell's looks and stop."""
    return {
        "schema_version": SCHEMA_VERSION,
        "rounds": m.options.rounds,
        "budget_s": m.options.budget_s,
        "alpha": m.options.compare.alpha,
        "confidence": m.options.compare.confidence,
        "minutes": minutes,
        "sides": {
            s.label: {"described": s.described, "python": s.python, "commit": s.commit} for s in m.sides
        },
        "code_from": {label: info["inferbench"] for label, info in m.infos.items()},
        "dropped_settings": {label: info["dropped"] for label, info in m.infos.items()},
        "rounds_per_cell": {
            key: {side: [_round_summary(r) for r in records] for side, records in by_side.items()}
            for key, by_side in m.run.results.items()
        },
        "looks_per_cell": {key: [list(look) for look in looks] for key, looks in m.run.looks.items()},
        "stopped": m.run.stopped,
        "instructions": m.counts,
        "gate_on_by_cell": dict(m.options.gate_on_by_cell),
        "workers": {"started": _worker_kind(m.options), "processes": m.options.processes},
    }


def _notes(m: _Measured, minutes: float) -> list[str]:
    """compare.md's notes: how the run went, the sequential method, the plan and counts, and
    the settings a side's code does not know."""
    options, sides = m.options, m.sides
    notes = [
        f"**A/B, interleaved**: base = {sides[0].described}, head = {sides[1].described}; "
        f"at most {options.rounds} rounds per cell{_budget_words(options)}, {_process_words(options)} "
        f"(order AB, BA, ...), compared round by round; {len(m.matched.common)} cells in {minutes:.1f} min"
        f"{_stopping_words(m.run)}.",
        sequential_note(options.compare),
        *m.notes,
    ]
    for label, info in m.infos.items():
        if info["dropped"]:
            notes.append(
                f"The {label} side's code does not know these settings: {', '.join(info['dropped'])}."
            )
    return notes


def sequential_note(compare: CompareOptions) -> str:
    """How the looks decided: the two error rates, each at its own level."""
    miss = (1 - compare.confidence) / 2
    return (
        f"{_SEQUENTIAL} A cell passes when the upper bound of its repeated {compare.confidence:.0%} "
        f"interval is below 1 + threshold (faster cells pass too): a cell exactly the threshold "
        f"slower passes about {miss:.1%} of the time, and one clearly slower almost never."
    )


_SEQUENTIAL = (
    "Each cell was looked at after 3, 5, 8, 12, 18, 27, ... clean rounds and when the run ended, and "
    "stopped once decided (group-sequential, O'Brien-Fleming-type alpha spending, Lan & DeMets "
    "1983): the intervals are repeated confidence intervals, which hold at whichever look a cell "
    "stopped at, and a regression "
    "spends alpha / (gating tests) per cell (Bonferroni)."
)


def _calibrated(
    options: AbOptions,
    running: dict[str, Any],
    keys: list[str],
    profile: str,
    out_dir: Path,
    on_result: Any,
    on_plan: Any,
    *,
    started: float,
) -> tuple[AbOptions, list[str], Calibration | None]:
    """The options with each cell's gating statistic (`--gate-on auto`), the plan's lines and
    the calibration (None: neither --calibrate nor --calibration). The noise comes from
    `--calibration FILE` when that file is of this machine class, profile and cells; else from
    `--calibrate N` A/A rounds run here, saved as calibration.json (and to FILE, for the next
    run). A FILE that does not fit, with no rounds to measure, is refused."""
    if not options.calibrate and options.calibration is None:
        return options, [], None
    machine = machine_from_env(running["base"].info["env"])
    calibration = _read_calibration(options, machine, profile, keys)
    if calibration is None:
        noise = aa_rounds(
            keys,
            options.calibrate,
            lambda _, key, r: running["base"].run(key, r),
            on_result,
            processes=options.processes,
        )
        calibration = Calibration(machine.fingerprint, machine.label, profile, noise)
        calibration.save(out_dir / "calibration.json")
        if options.calibration is not None:
            calibration.save(options.calibration)
    if options.gate_auto:
        chosen = {k: calibration.gate_on(k, options.compare.gate_on) for k in keys}
        options = replace(options, gate_on_by_cell=chosen)
    found = {k: calibration.cells[k] for k in keys if k in calibration.cells}
    left = options.budget_s - (time.perf_counter() - started) if options.budget_s else None
    allowed = rounds_allowed(found, options.rounds, left)
    threshold = options.compare.threshold(options.compare.gate_on)
    plans = [
        plan(
            k,
            options.gate_on_by_cell.get(k, options.compare.gate_on),
            found.get(k),
            threshold=threshold,
            alpha=options.compare.alpha,
            tests=len(keys),
            rounds_allowed=allowed,
            confidence=options.compare.confidence,
        )
        for k in keys
    ]
    lines = plan_lines(plans, threshold, calibration)
    if on_plan is not None:
        on_plan(lines)
    return options, ["\n".join(lines)], calibration


def _refresh_calibration(calibration: Calibration, run: Rounds, path: Path) -> str:
    """Write `path` back with each cell's spread pooled with this run's clean rounds
    (`Calibration.refreshed`), for the next run's choice and plan; the note saying so. A file
    that cannot be written costs the refresh, never the run's verdicts."""
    noise = {
        key: cell_noise(clean_pairs(run.results[key]), calibration.cells[key].round_s)
        for key in run.results
        if key in calibration.cells
    }
    refreshed = calibration.refreshed(noise)
    try:
        refreshed.save(path)
    except OSError as exc:
        log.warning("could not write the refreshed calibration to %s: %s", path, exc)
        return f"The calibration {path} was not refreshed with this run's rounds: {exc}."
    rounds = sorted({n.rounds for n in noise.values() if n.rounds >= 2})
    if not rounds:
        return f"The calibration {path} was left as it was: no cell had 2 clean rounds to add."
    counted = f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}"
    return (
        f"The calibration {path} now pools each cell's spread per round with this run's {counted} "
        "clean rounds, for the next run's choice of statistic and plan."
    )


def _read_calibration(options: AbOptions, machine: Any, profile: str, keys: list[str]) -> Calibration | None:
    """`--calibration FILE` when it fits this run; None when the rounds are to be measured."""
    path = options.calibration
    if path is None or (options.calibrate and not path.exists()):
        return None
    calibration = Calibration.load(path)
    if calibration.fits(machine.fingerprint, profile, keys):
        return calibration
    if options.calibrate:
        log.info("%s is of another machine class, profile or cells: calibrating again", path)
        return None
    calibration.check_machine(machine.fingerprint, machine.label, path)
    raise UserError(
        f"{path} was calibrated for other cells or another profile; calibrate again (--calibrate 4)"
    )


def _worker_kind(options: AbOptions) -> str:
    return "forked" if options.fork_workers else "fresh"


def _process_words(options: AbOptions) -> str:
    kind = _worker_kind(options)
    count = f"one {kind} process" if options.processes == 1 else f"{options.processes} {kind} processes"
    words = f"{count} per side per round"
    if options.fork_workers:
        words += " (their parent imported the engines once and was started again every round)"
    if options.processes > 1:
        words += (
            ", the sides alternating process by process, each side's pooled: the fastest call of "
            "all, the median of all calls"
        )
    return words


def _calibration_profile(name: str, options: AbOptions) -> str:
    """What a calibration is of: the profile, and how the workers are started where that is not
    one fresh process per side and round (a round's noise depends on both)."""
    if options.processes == 1 and not options.fork_workers:
        return name
    alternating = ", the sides alternating" if options.processes > 1 else ""
    return f"{name} ({options.processes} {_worker_kind(options)} processes per side and round{alternating})"


def _budget_words(options: AbOptions) -> str:
    return f" within a {options.budget_s / 60:g} min budget" if options.budget_s else ""


def _stopping_words(run: Rounds) -> str:
    """How many rounds the cells took and why they stopped, e.g. '; 3-12 rounds per cell
    (4 decided, 2 stopped by the budget)'."""
    counts = [len(by_side["base"]) for by_side in run.results.values()]
    if not counts:
        return ""
    span = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    whys = [run.stopped[k] for k in run.results if k in run.stopped]
    parts = [f"{whys.count(w)} {WHY_WORDS[w]}" for w in WHY_WORDS if w in whys]
    return f"; {span} rounds per cell ({', '.join(parts)})" if parts else f"; {span} rounds per cell"


WHY_WORDS = {
    DECIDED: "decided",
    NOT_OK: "stopped as not ok on a side",
    MOST_ROUNDS: "ran the most rounds",
    BUDGET: "stopped by the budget",
}


def _validate(config: Any) -> None:
    """Unknown models and backends fail here in one line, not inside a side's agent."""
    from inferbench.backends import load_backend
    from inferbench.sweep.modelrefs import resolve_models

    resolve_models(config)
    for backend in config.backends:
        load_backend(backend)


def _key_columns(cell: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(CELL_AXES, cell_axes(cell), strict=True))


def _round_summary(record: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "status",
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_min_ms",
        "throughput_sps",
        "interference_pct",
        "interfered",
        "eval_samples",
    )
    return {k: record.get(k) for k in keep}


def _write_side(
    run_dir: Path, side: Side, info: dict[str, Any], results: dict[str, dict[str, list[dict[str, Any]]]]
) -> None:
    """Each side's rounds merged into an ordinary run folder (`inferbench report` reads it)."""
    from inferbench.sweep.repeats import merge_repeats

    tail_samples = int((info["config"].get("measure") or {}).get("tail_samples", 500))
    merged = []
    for by_side in results.values():
        records = by_side[side.label]
        if all(r["status"] in MEASURED for r in records):
            record = merge_repeats(records, int(records[0]["batch_size"]), 500, tail_samples)
            record["repeats"] = sum(int(r.get("repeats") or 1) for r in records)  # processes, not rounds
        else:
            record = next(r for r in records if r["status"] not in MEASURED)
        merged.append({**record, "run_id": run_dir.name, "schema_version": SCHEMA_VERSION})
    for record in merged:
        save_cell(run_dir, record)
    write_csv(run_dir, merged)
    atomic_write_json(run_dir / "env.json", info["env"])
    atomic_write_json(run_dir / "config.json", info["config"])
