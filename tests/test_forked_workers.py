"""Workers forked from a parent that imported the engines (`ab --fork-workers`,
inferbench.sweep.forked): a process per cell all the same, a crash or a hang costs its cell,
and in `ab` each side's forking agent is started again every round and refused on a side whose
code cannot fork."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferbench.ab.command import _worker_kind, _workers_started
from inferbench.ab.core import AbOptions, Agent, agents
from inferbench.ab.sides import Side
from inferbench.cli import build_parser
from inferbench.commands.ab import _options
from inferbench.errors import UserError
from inferbench.layout import PROJECT_ROOT
from tests.conftest import NUMPY_MODEL

pytestmark = pytest.mark.slow
PID = "tests.fakes:PidBackend"

SWEEP_IN_A_FORKING_PARENT = """
import json, os, sys
from dataclasses import replace
from pathlib import Path
from inferbench.store.runfolder import load_cells
from inferbench.sweep import forked
from inferbench.sweep.runner import run_sweep
from tests.conftest import FAST_MEASURE, fake_sweep

loaded = forked.preload(1)
measure = replace(FAST_MEASURE, shared_workers=0, timeout_seconds=3.0)
config = fake_sweep(["tests.fakes:PidBackend"], batch_sizes=(1, 2, 3, 4), measure=measure)
run_dir = Path(sys.argv[1])
run_sweep(config, run_dir, cache_dir=run_dir.parent / "cache")
try:
    os.waitpid(-1, os.WNOHANG)
    children_left = True
except ChildProcessError:
    children_left = False
print(json.dumps({"parent": os.getpid(), "loaded": loaded, "children_left": children_left,
                  "cells": load_cells(run_dir)}))
"""


def test_forked_workers_are_a_process_per_cell_and_a_crash_or_hang_costs_one_cell(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SWEEP_IN_A_FORKING_PARENT, str(tmp_path / "run")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "torch" in found["loaded"]
    rows = {r["batch_size"]: r for r in found["cells"]}
    assert rows[1]["status"] == rows[4]["status"] == "ok"
    assert rows[1]["details"]["forked"] and rows[4]["details"]["forked"]  # forked, not exec'd
    pids = {rows[b]["details"]["pid"] for b in (1, 4)}
    assert len(pids) == 2 and found["parent"] not in pids  # a process per cell
    assert rows[2]["status"] == "error" and "SIGSEGV" in rows[2]["reason"]
    assert rows[3]["status"] == "timeout"
    assert not found["children_left"]  # the hung child was killed and reaped
    assert (tmp_path / "run" / "logs" / f"{rows[1]['cell_key']}.log").is_file()


def _setup(tmp_path: Path, threads: list[int]) -> dict[str, Any]:
    profile = {
        "sweep": {"models": [NUMPY_MODEL], "backends": [PID], "batch_sizes": [1], "threads": threads},
        "measure": {
            "warmup_iterations": 1,
            "warmup_seconds": 0.0,
            "min_iterations": 5,
            "min_seconds": 0.0,
            "max_seconds": 0.2,
            "timeout_seconds": 60.0,
        },
    }
    return {
        "profile": profile,
        "name": "fork-test",
        "overrides": {},
        "processes": 1,
        "fork_workers": True,
        "run_dir": str(tmp_path / "side"),
        "cache_dir": str(tmp_path / "cache"),
    }


def test_a_forking_agent_starts_again_every_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERBENCH_USER_PATH", str(PROJECT_ROOT))  # tests.fakes, for the agent's workers
    agent = Agent(Side("base", "working tree", sys.executable), _setup(tmp_path, [1]), tmp_path / "agent.log")
    try:
        assert agent.info["forking"]["ok"]
        key = agent.info["cells"][0]["key"]
        first = agent.run(key, 1)
        agent_pid = agent.proc.pid
        again = agent.run(key, 1)
        assert agent.proc.pid == agent_pid  # the same round: the same parent
        later = agent.run(key, 2)
        assert agent.proc.pid != agent_pid  # a new round: a new parent, so new pages to inherit
        records = (first, again, later)
        assert all(r["status"] == "ok" and r["details"]["forked"] for r in records)
        assert len({r["details"]["pid"] for r in records}) == 3
    finally:
        agent.close()


def test_forking_is_refused_where_the_cells_have_several_thread_counts(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"--fork-workers: the head side \(working tree\): .*thread counts \[1, 2\]"
    ):
        Agent(Side("head", "working tree", sys.executable), _setup(tmp_path, [1, 2]), tmp_path / "agent.log")


def test_fork_or_fresh_starts_both_sides_fresh_where_one_cannot_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--fork-workers auto`: no refusal; both sides' workers are fresh processes, and the
    notes say why (here the cells' thread counts, which forking cannot serve)."""
    monkeypatch.setenv("INFERBENCH_USER_PATH", str(PROJECT_ROOT))
    setup = {k: v for k, v in _setup(tmp_path, [1, 2]).items() if k not in ("run_dir", "cache_dir")}
    sides = (Side("base", "working tree", sys.executable), Side("head", "working tree", sys.executable))
    options = AbOptions(fork_workers=True, fork_or_fresh=True)
    with agents(sides, setup, tmp_path / "out", must_fork=False) as running:
        started, notes = _workers_started(options, running)
        assert not any(agent.fresh_per_round for agent in running.values())
        record = running["head"].run(running["head"].info["cells"][0]["key"], 0)
    assert record["status"] == "ok" and not record["details"]["forked"]
    assert not started.fork_workers and _worker_kind(started) == "fresh"
    assert len(notes) == 1 and "fresh processes on both sides" in notes[0]
    assert "the base side (working tree)" in notes[0] and "the head side (working tree)" in notes[0]


@pytest.mark.parametrize(
    ("flags", "forked", "or_fresh"),
    [([], False, False), (["--fork-workers"], True, False), (["--fork-workers", "auto"], True, True)],
)
def test_fork_workers_alone_must_fork_and_auto_may_fall_back(
    flags: list[str], forked: bool, or_fresh: bool
) -> None:
    options = _options(build_parser().parse_args(["ab", *flags, "--processes", "3"]), [])
    assert (options.fork_workers, options.fork_or_fresh, options.processes) == (forked, or_fresh, 3)
