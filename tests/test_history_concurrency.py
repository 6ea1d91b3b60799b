"""Concurrent writers: 8 processes append to one history at the same moment, against the
embedded SQLite file and a real PostgreSQL server (skipped, with the reason, when none).

Four appenders share one machine fingerprint (the race that lost a whole append to
`UNIQUE constraint failed: machines.fingerprint`), two more come from other hosts with the
same hardware, and two append a run folder another appender is appending too. Every row is
counted afterwards: nothing lost, nothing twice, every exit code 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from inferbench.config import Cell
from inferbench.history import db, store
from inferbench.history.fingerprint import Commit, machine_from_env
from tests.history_runs import env, make_run

APPENDERS = 8
CELLS = [Cell(f"model-{m}", "onnxruntime", "fp32", b, 2) for m in range(6) for b in (1, 2, 4, 8)]
HOSTS = ["node-a", "node-a", "node-a", "node-a", "node-b", "node-c"]  # one run folder each
SAME_FOLDER = [0, 4]  # appenders 6 and 7 append these folders again, racing the first appender
REPO = Path(__file__).resolve().parents[1]

# Each appender imports everything, says it is ready, then waits for the signal to go, so that
# all 8 appends (schema creation included, on a fresh database) start within milliseconds.
APPENDER = """
import sys, time
from pathlib import Path
from typing import Any
from inferbench.cli import main
import inferbench.history.commands  # the slow imports happen before the signal, not after
ready, go, url, run_dir = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
sys.exit(main(["history", "append", "--history", url, run_dir]))
"""


def _runs(results: Path) -> list[Path]:
    return [
        make_run(
            results,
            f"run-{i}",
            {cell: 1.0 + i + 0.01 * n for n, cell in enumerate(CELLS)},
            environment=env(host=host),
        )
        for i, host in enumerate(HOSTS)
    ]


def _append_all_at_once(url: str, folders: list[Path], sync: Path) -> list[subprocess.CompletedProcess[str]]:
    sync.mkdir()
    go = sync / "go"
    environ = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(sync / f"ready-{i}"), str(go), url, str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        for i, folder in enumerate(folders)
    ]
    deadline = time.monotonic() + 120  # a safety net against a hung appender, not a measurement
    while len(list(sync.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break  # one died while importing; its exit code and stderr say why below
        time.sleep(0.01)
    go.touch()
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _count(url: str) -> dict[str, int]:
    def count(what: sa.ColumnElement[int], table: sa.Table) -> int:
        return int(conn.execute(sa.select(what).select_from(table)).scalar_one())

    engine = db.connect(url)
    try:
        with engine.connect() as conn:
            empty = ~sa.exists().where(db.results.c.run_ref == db.runs.c.id)
            return {
                "results": count(sa.func.count(), db.results),
                "digests": count(sa.func.count(sa.distinct(db.results.c.digest)), db.results),
                "runs": count(sa.func.count(), db.runs),
                "run_ids": count(sa.func.count(sa.distinct(db.runs.c.run_id)), db.runs),
                "machines": count(sa.func.count(), db.machines),
                "empty_runs": int(
                    conn.execute(sa.select(sa.func.count()).select_from(db.runs).where(empty)).scalar_one()
                ),
            }
    finally:
        engine.dispose()


@pytest.mark.slow
def test_eight_concurrent_appenders_lose_and_repeat_nothing(history_url: str, tmp_path: Path) -> None:
    folders = _runs(tmp_path / "results")
    appends = folders + [folders[i] for i in SAME_FOLDER]
    assert len(appends) == APPENDERS
    done = _append_all_at_once(history_url, appends, tmp_path / "sync")

    for proc in done:
        assert proc.returncode == 0, proc.stderr
        assert "history not recorded" not in proc.stderr and "Traceback" not in proc.stderr
    # Each appender says how many cells it added; together exactly one copy of every cell.
    added = [int(m.group(1)) for p in done for m in re.finditer(r"history: (\d+) cell\(s\)", p.stderr)]
    assert len(added) == APPENDERS
    assert sum(added) == len(HOSTS) * len(CELLS)
    counts = _count(history_url)
    assert counts == {
        "results": len(HOSTS) * len(CELLS),
        "digests": len(HOSTS) * len(CELLS),
        "runs": len(HOSTS),  # a folder appended twice is one run, and no run row is left empty
        "run_ids": len(HOSTS),
        "machines": len(set(HOSTS)),
        "empty_runs": 0,
    }


def test_identical_nodes_are_different_machines_in_the_history() -> None:
    machines = {machine_from_env(env(host=host)).history_fingerprint for host in HOSTS}
    classes = {machine_from_env(env(host=host)).fingerprint for host in HOSTS}
    assert len(machines) == len(set(HOSTS)) and len(classes) == 1


def test_the_insert_decides_not_the_read_before_it(
    history_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that holds no lock (an older inferbench) recorded the cells between the read
    and the insert: the insert skips them, raises nothing and leaves no empty run row."""
    folders = _runs(tmp_path / "results")[:2]
    engine = db.connect(history_url)
    try:
        assert store.append_run(engine, folders[0], commit=Commit(None, None)) == len(CELLS)
        monkeypatch.setattr(store, "_known_digests", lambda conn, digests: set())
        assert store.append_run(engine, folders[0], commit=Commit(None, None)) == 0
        assert store.append_run(engine, folders[1], commit=Commit(None, None)) == len(CELLS)
    finally:
        engine.dispose()
    counts = _count(history_url)
    assert counts["results"] == counts["digests"] == 2 * len(CELLS)
    assert counts["runs"] == 2 and counts["empty_runs"] == 0


def _open_new_history(path: str, barrier: Any, answers: Any) -> None:
    barrier.wait()
    try:
        db.connect(f"sqlite:///{path}").dispose()
        answers.put("ok")
    except Exception as exc:  # the answer is the test's evidence
        answers.put(repr(exc))


OPENERS = 12


@pytest.mark.slow
def test_processes_opening_a_new_sqlite_history_at_once_all_get_in(tmp_path: Path) -> None:
    """Switching a new file to WAL from several processes at once made SQLite answer "database
    is locked" without waiting (8 of 360 opens in 30 trials of 12 on 2 vCPUs, before the lock
    file beside the database). Forked, so that the processes meet at the barrier within
    microseconds, as appenders of sweeps that end together may."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = []
    for trial in range(20):
        path = tmp_path / f"{trial}.sqlite"
        barrier, answers = context.Barrier(OPENERS), context.Queue()
        procs = [
            context.Process(target=_open_new_history, args=(str(path), barrier, answers))
            for _ in range(OPENERS)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        failures += [a for a in (answers.get(timeout=10) for _ in procs) if a != "ok"]
    assert failures == []
