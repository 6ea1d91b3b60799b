"""Appending run folders to the history database and reading series back out."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from inferbench.errors import UserError
from inferbench.history.db import (
    METRIC_COLUMNS,
    RESULT_AXES,
    insert_ignoring_duplicates,
    lock_for_append,
    machines,
    results,
    runs,
)
from inferbench.history.fingerprint import Commit, Machine, machine_from_env
from inferbench.store.record import FIELDS
from inferbench.store.runfolder import load_config, load_run

_CHUNK = 500  # digests per IN (...) lookup: well under every backend's parameter limit


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def append_run(
    engine: Engine, run_dir: Path, *, commit: Commit, source: str = "run", now: dt.datetime | None = None
) -> int:
    """Append every cell of `run_dir` not yet recorded; returns how many rows were added.

    `commit` is the project checkout's when the run has just finished; an imported folder
    passes Commit(None, None), since today's checkout says nothing about an old run."""
    _, records, env = load_run(run_dir)
    return append_records(
        engine,
        records,
        env,
        run_id=run_dir.name,
        run_path=str(run_dir.resolve()),
        profile=str(load_config(run_dir).get("name") or ""),
        run_time=_run_time(env, run_dir),
        commit=commit,
        source=source,
        now=now,
    )


def append_records(
    engine: Engine,
    records: list[dict[str, Any]],
    env: dict[str, Any],
    *,
    run_id: str,
    run_path: str,
    profile: str,
    run_time: dt.datetime,
    commit: Commit,
    source: str = "run",
    now: dt.datetime | None = None,
) -> int:
    """Append cell records (one sweep, measured on the machine `env` describes)."""
    if not records:
        return 0
    machine = machine_from_env(env)
    rows = [_result_row(record, machine.fingerprint) for record in records]
    with engine.begin() as conn:
        lock_for_append(conn)
        # No appender can record these between this read and the insert; the insert skips
        # duplicates all the same, so a writer that holds no lock never makes a row fail.
        known = _known_digests(conn, [row["digest"] for row in rows])
        rows = [row for row in rows if row["digest"] not in known]
        if not rows:
            return 0
        _ensure_machine(conn, machine)
        run_ref = conn.execute(
            runs.insert()
            .values(
                run_id=run_id,
                run_path=run_path,
                profile=profile,
                fingerprint=machine.history_fingerprint,
                git_commit=commit.sha,
                git_dirty=commit.dirty,
                run_time=run_time,
                recorded_at=now or utc_now(),
                source=source,
            )
            .returning(runs.c.id)
        ).scalar_one()
        added = conn.execute(
            insert_ignoring_duplicates(conn, results, "digest").returning(results.c.id),
            [{**row, "run_ref": run_ref} for row in rows],
        ).all()
        if not added:  # a writer without the lock recorded every one of them meanwhile
            conn.execute(runs.delete().where(runs.c.id == run_ref))
    return len(added)


def _known_digests(conn: Connection, digests: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(digests), _CHUNK):
        chunk = digests[start : start + _CHUNK]
        known.update(conn.execute(sa.select(results.c.digest).where(results.c.digest.in_(chunk))).scalars())
    return known


def _ensure_machine(conn: Connection, machine: Machine) -> None:
    # Two appenders from one machine both insert it; the second one's insert does nothing.
    conn.execute(
        insert_ignoring_duplicates(conn, machines, "fingerprint").values(
            fingerprint=machine.history_fingerprint,
            label=machine.history_label,
            cpu_model=machine.cpu_model,
            isa=",".join(machine.isa),
            logical_cpus=machine.logical_cpus,
            memory_gb=machine.memory_gb,
            gpu=machine.gpu,
        )
    )


def _run_time(env: dict[str, Any], run_dir: Path) -> dt.datetime:
    """When the sweep started (env.json), else when its last cell was written."""
    stamp = env.get("captured_at")
    if isinstance(stamp, str):
        try:
            parsed = dt.datetime.fromisoformat(stamp)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    mtime = max((p.stat().st_mtime for p in (run_dir / "cells").glob("*.json")), default=0.0)
    return dt.datetime.fromtimestamp(mtime, dt.UTC).replace(tzinfo=None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value else None  # NaN is "not measured"


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("True", "False"):
        return value == "True"
    return None


def _result_row(record: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    # The digest covers every scalar of the record (not the raw sample lists, which are long
    # and fully determined by the run): the same cell of the same run is the same digest.
    # `fingerprint` is the machine class, without the host, as it was before the history's
    # fingerprint held the host: a folder recorded then is still known when imported again.
    scalars = {k: v for k, v in record.items() if not isinstance(v, list | dict)}
    digest = hashlib.sha256(json.dumps([fingerprint, scalars], sort_keys=True, default=str).encode())
    whole = record.get("iterations")
    return {
        "digest": digest.hexdigest()[:32],
        "cell_key": str(record["cell_key"]),
        **_axes(record),
        "settings_hash": record.get("settings_hash"),
        "status": str(record["status"]),
        **{name: _number(record.get(name)) for name in METRIC_COLUMNS},
        "iterations": int(whole) if isinstance(whole, int) else None,
        "repeats": int(record["repeats"]) if isinstance(record.get("repeats"), int) else None,
        "capped": _flag(record.get("capped")),
        "interfered": _flag(record.get("interfered")),
    }


def _axes(record: dict[str, Any]) -> dict[str, Any]:
    """The cell's axes, typed as the results table keeps them; a record from before the mode
    axis is a latency cell."""
    return {
        axis: FIELDS[axis].type((record.get(axis) or "latency") if axis == "mode" else record[axis])
        for axis in RESULT_AXES
    }


@dataclass(frozen=True)
class Filters:
    """Which cells and machines to read; empty tuples mean all."""

    models: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    threads: tuple[int, ...] = ()
    modes: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    machine: str = ""  # a fingerprint prefix, or part of the machine's label (CPU model, ...)


# A point: its run's columns, then its cell's (the results table's own but its ids, digest and
# counts).
_POINT_RUN = (
    machines.c.fingerprint,
    machines.c.label.label("machine"),
    runs.c.run_id,
    runs.c.run_path,
    runs.c.profile,
    runs.c.git_commit,
    runs.c.git_dirty,
    runs.c.run_time,
)
_NOT_POINT = frozenset({"id", "run_ref", "digest", "iterations", "repeats"})
_POINT_RESULT = tuple(c for c in results.c if c.name not in _NOT_POINT)
POINT_COLUMNS = tuple(c.name for c in (*_POINT_RUN, *_POINT_RESULT))


def load_points(engine: Engine, filters: Filters | None = None) -> pd.DataFrame:
    """Every recorded cell matching `filters`, oldest first, one row per (run, cell)."""
    filters = filters or Filters()
    query = (
        sa.select(*_POINT_RUN, *_POINT_RESULT)
        .select_from(results.join(runs, results.c.run_ref == runs.c.id).join(machines))
        .order_by(runs.c.run_time, runs.c.id, results.c.id)
    )
    for column, wanted in (
        (results.c.model, filters.models),
        (results.c.backend, filters.backends),
        (results.c.precision, filters.precisions),
        (results.c.batch_size, filters.batch_sizes),
        (results.c.threads, filters.threads),
        (results.c.mode, filters.modes),
        (runs.c.profile, filters.profiles),
    ):
        if wanted:
            query = query.where(column.in_(_values(wanted)))
    if filters.machine:
        needle = filters.machine.lower()
        query = query.where(
            sa.or_(
                machines.c.fingerprint.startswith(needle, autoescape=True),
                sa.func.lower(machines.c.label).contains(needle, autoescape=True),
            )
        )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame([tuple(row) for row in rows], columns=list(POINT_COLUMNS))


def _values(items: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def import_runs(engine: Engine, paths: Iterable[Path]) -> list[tuple[Path, int | None]]:
    """Append run folders recorded before history existed (or elsewhere); the commit is
    unknown for those. Returns (path, rows added), None for a path that is not a run folder
    (`results/*` also matches the database itself and README.md)."""
    done: list[tuple[Path, int | None]] = []
    for path in paths:
        if not (path / "cells").is_dir():
            done.append((path, None))
            continue
        done.append((path, append_run(engine, path, commit=Commit(None, None), source="import")))
    if done and all(added is None for _, added in done):
        raise UserError(f"no run folder among {len(done)} path(s) (a run folder has cells/ inside)")
    return done
