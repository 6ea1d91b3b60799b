"""One side's agent in `inferbench ab`: started as a script with that side's interpreter and
code, it runs the cells the parent asks for, each in a fresh worker, with the side's own
runner, and answers with the records.

It talks JSON lines: the first line sets the sweep up (the profile's TOML data and the
overrides), every later line names one cell. Only long-standing interfaces of the side's
`inferbench` are used (`profile_from_dict`, `resolve_model`, `load_backend`, `run_repeats`,
`env.capture`), so an older commit can be the base. Measurement settings the side's code does
not know are dropped and reported back, never guessed. A side from before bench/ had rooms
keeps these modules at the package's top (`inferbench.runner`, not `inferbench.sweep.runner`);
`_side_module` finds them either way.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, TextIO


def _side_module(room: str, name: str) -> Any:
    """The side's `inferbench.<room>.<name>`, or `inferbench.<name>` in a tree from before the
    rooms. Decided by the side's folders, not by trying the import: this harness's editable
    install would answer for a room the side lacks, with this harness's code."""
    import inferbench

    has_room = any((Path(folder) / room / "__init__.py").is_file() for folder in inferbench.__path__)
    return importlib.import_module(f"inferbench.{room}.{name}" if has_room else f"inferbench.{name}")


def _setup(request: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from inferbench.config import MeasureConfig, profile_from_dict

    env = _side_module("machine", "env")

    data = dict(request["profile"])
    known = {f.name for f in fields(MeasureConfig)}
    measure = dict(data.get("measure", {}))
    dropped = sorted(set(measure) - known)
    data["measure"] = {k: v for k, v in measure.items() if k in known}
    config = profile_from_dict(data, request["name"]).with_overrides(**request["overrides"])
    # One process per request (`ab` runs a round's `--processes N` itself, alternating the sides);
    # variance_sources' `three-processes` asks for N, pooled here by the side's runner.
    config = replace(config, measure=replace(config.measure, repeats=int(request.get("processes", 1))))
    threads = sorted({c.threads for c in config.cells()})
    forking = _fork_workers(threads) if request.get("fork_workers") else None
    answer = {
        "cells": [{**asdict(c), "key": c.key} for c in config.cells()],
        "dropped": dropped,
        "config": {"schema_version": 1, **config.to_dict()},
        "env": env.capture(threads),
        "inferbench": str(Path(sys.modules["inferbench"].__file__ or "").resolve().parent),
    }
    if forking is not None:
        answer["forking"] = forking
    return config, answer


def _fork_workers(threads: list[int]) -> dict[str, Any]:
    """`ab --fork-workers`: import the engines here once and fork every worker from this
    process (`inferbench.sweep.forked`). Needs one thread count for all cells (the engines read
    it as they load). A side whose code predates this never answers `forking`; the parent then
    refuses the option for both sides."""
    if len(threads) != 1 or threads[0] < 1:
        return {"ok": False, "reason": f"the cells have thread counts {threads}: forking needs one for all"}
    try:
        forked = _side_module("sweep", "forked")
    except ImportError:
        return {"ok": False, "reason": "its code cannot fork its workers (it is from before --fork-workers)"}
    return {"ok": True, "preloaded": forked.preload(threads[0])}


def round_config(config: Any, round_index: int) -> Any:
    """The sweep settings for one round. Every round runs the same code: round 0 makes the full
    accuracy check (a failure stops the cell), later rounds check one sample, recorded but not
    judged (one sample of a bf16 or int8 cell can exceed a limit the full set meets). For lstm
    that saves 0.6-0.9 s of each process, a fifth of a round. A side whose code has no such
    settings is left as it is."""
    accuracy: Any = getattr(config, "accuracy", None)
    known = {f.name for f in fields(accuracy)} if accuracy is not None else set()
    if round_index == 0 or not {"eval_samples", "max_rel_l2"} <= known:
        return config
    unjudged = {p: math.inf for p in accuracy.max_rel_l2}
    return replace(config, accuracy=replace(accuracy, eval_samples=1, max_rel_l2=unjudged))


def _run(config: Any, key: str, run_dir: Path, cache_dir: Path, round_index: int = 0) -> dict[str, Any]:
    from inferbench.backends import load_backend

    this_cpu = _side_module("machine", "capability").this_cpu
    runner = _side_module("sweep", "runner")

    cell = next(c for c in config.cells() if c.key == key)
    config = round_config(config, round_index)
    backend_cls = load_backend(cell.backend)
    ref = runner.resolve_models(config)[cell.model]
    check = runner.PrecisionCheck(this_cpu(), config.allow_emulated)
    record = runner.static_verdict(cell, ref, backend_cls, check)
    if record is None:
        record = {
            **runner.run_repeats(cell, ref, config, run_dir, cache_dir),
            **check.flag(cell, backend_cls),
        }
    return {**record, **asdict(cell), "cell_key": cell.key}


def serve(requests: TextIO, answers: TextIO) -> None:
    first = json.loads(requests.readline())
    run_dir, cache_dir = Path(first["run_dir"]), Path(first["cache_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    config, answer = _setup(first)
    answers.write(json.dumps(answer) + "\n")
    answers.flush()
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        record = _run(config, request["cell"], run_dir, cache_dir, request.get("round", 0))
        answers.write(json.dumps(record, default=str) + "\n")
        answers.flush()


def main() -> int:
    from inferbench.redact import configure_logging

    configure_logging(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    # Answers go to the real stdout only; anything an engine prints lands in the log.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _side_module("sweep", "procs").add_user_path()
    serve(sys.stdin, answers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
