"""Run folders: the one module that reads and writes them.

A run folder holds `config.json`, `env.json`, `cells/<key>.json` and `results.csv`, one row
per cell, numbers as numbers. Each finished cell is stored as `cells/<key>.json` (summary plus
raw per-iteration latencies); `results.csv` is rebuilt from those after every cell,
atomically, so an interrupted sweep keeps everything it finished.

Each sweep session over the folder (the first run, then every `--resume`) keeps its own
configuration and environment: `config.json`/`env.json` for the first, `config-2.json`/
`env-2.json` for the next, and so on; a cell's `session` says which one measured it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from inferbench.errors import InternalError, UserError
from inferbench.status import STATUSES
from inferbench.store.record import CSV_COLUMNS, is_number
from inferbench.util import atomic_write_json, atomic_write_text, one_component, path_under

SCHEMA_VERSION = 1

__all__ = [
    "COLUMNS",
    "NUMERIC",
    "SCHEMA_VERSION",
    "STATUSES",
    "cell_files",
    "latest_run",
    "load_cells",
    "load_run",
    "load_settings",
    "read_csv",
    "run_dirs",
    "save_cell",
    "start_session",
]

# results.csv's columns, in the record's order (inferbench.store.record). Numeric columns stay
# numeric (empty = not applicable); text and true/false columns are read back as they are.
COLUMNS = CSV_COLUMNS
TEXT_COLUMNS = frozenset(c for c in COLUMNS if not is_number(c))
NUMERIC = tuple(c for c in COLUMNS if is_number(c))


def cell_path(run_dir: Path, key: str) -> Path:
    """Where a cell's record goes: refused unless the key is one file name that stays in the
    run's `cells/` (keys reach here from shards and agents, not only from this sweep)."""
    return path_under(run_dir / "cells", f"{one_component(key, 'cell key')}.json", "cell key")


def save_cell(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(cell_path(run_dir, record["cell_key"]), record)


def load_cells(run_dir: Path) -> list[dict[str, Any]]:
    return [record for _, record in cell_files(run_dir)]


def cell_files(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every cell record of a run folder with the file it came from, by file name."""
    found = []
    for path in sorted((run_dir / "cells").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InternalError(f"corrupt result file {path}: {exc}") from exc
        if not isinstance(record, dict):
            raise InternalError(f"corrupt result file {path}: not a JSON object")
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"{path}: schema_version {version} is not supported (expected {SCHEMA_VERSION})")
        found.append((path, record))
    return found


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {col: record.get(col) for col in COLUMNS}
    versions = record.get("versions") or {}
    row["engine_versions"] = ";".join(f"{k}={v}" for k, v in sorted(versions.items()))
    row["mode"] = record.get("mode") or "latency"  # cells recorded before the mode axis
    row["shape"] = record.get("shape") or ""  # and before the shape axis
    return row


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([to_row(r) for r in records], columns=list(COLUMNS))
    for col in NUMERIC:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def write_csv(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    path = run_dir / "results.csv"
    atomic_write_text(path, to_frame(records).to_csv(index=False, float_format="%.6g"))
    return path


def read_csv(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A run's `results.csv` (`path` is the file or its run folder); `columns` reads only
    those, and a table without one of them is a ValueError."""
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise UserError(f"no results.csv at {path}")
    return pd.read_csv(path, usecols=list(columns) if columns is not None else None)


def run_dirs(results_dir: Path) -> list[Path]:
    """The run folders directly under `results_dir` that hold a `results.csv`, by name."""
    return sorted(path.parent for path in results_dir.glob("*/results.csv"))


def load_settings(run_dir: Path) -> dict[str, Any]:
    """The sweep's settings (`config.json`), or {} for a folder without one."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load_run(run_dir: Path) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any]]:
    """A run folder's table (sweep order), its records and its environment."""
    if not (run_dir / "cells").is_dir():
        raise UserError(f"{run_dir} is not a run directory (no cells/ inside)")
    records = load_cells(run_dir)
    csv_path = run_dir / "results.csv"
    if csv_path.is_file():  # the CSV is in sweep order; cell files are in name order
        order = {key: i for i, key in enumerate(pd.read_csv(csv_path)["cell_key"])}
        records.sort(key=lambda r: order.get(r["cell_key"], len(order)))
    envs = load_envs(run_dir)
    return to_frame(records), records, envs[-1] if envs else {}


_SESSION_FILE = re.compile(r"env(?:-(\d+))?\.json")


def _sessions(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in run_dir.glob("env*.json"):
        match = _SESSION_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1) or 1), path))
    return sorted(found)


def load_envs(run_dir: Path) -> list[dict[str, Any]]:
    """The environment of every sweep session over the folder, oldest first."""
    envs = []
    for _, path in _sessions(run_dir):
        try:
            envs.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise InternalError(f"corrupt environment file {path}: {exc}") from exc
    return envs


def load_host_envs(run_dir: Path) -> list[dict[str, Any]]:
    """Every machine's environment: a merged run keeps each shard's in `envs/`; any other run
    has its sessions' (`env*.json`)."""
    paths = sorted((run_dir / "envs").glob("*.json"))
    if not paths:
        return load_envs(run_dir)
    envs = []
    for path in paths:
        try:
            envs.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise InternalError(f"corrupt environment file {path}: {exc}") from exc
    return envs


def save_host_env(run_dir: Path, host: str, environment: dict[str, Any]) -> None:
    """One machine's environment, beside the others (`envs/<host>.json`): where a merged run
    and a run over several nodes keep each machine's facts."""
    atomic_write_json(path_under(run_dir / "envs", f"{host}.json", "host"), environment)


def start_session(run_dir: Path, config: dict[str, Any], environment: dict[str, Any]) -> int:
    """Record one sweep session's configuration and environment beside the earlier ones
    (never over them) and return its number: 1 for a new run, 2 for its first resume, ..."""
    sessions = _sessions(run_dir)
    number = sessions[-1][0] + 1 if sessions else 1
    suffix = "" if number == 1 else f"-{number}"
    # cells/ from the start: a sweep with no cell (an empty shard) is still a run folder.
    (run_dir / "cells").mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / f"config{suffix}.json", {"schema_version": SCHEMA_VERSION, **config})
    atomic_write_json(run_dir / f"env{suffix}.json", environment)
    return number


def latest_run(results_dir: Path, profile: str) -> Path | None:
    """The most recently started run folder of exactly `profile` (as recorded in its first
    `config.json`), or None. Matching on the record, not on the folder name, keeps `cpu`
    from finding a `...-gate-cpu` run and finds runs given their own `--run-id`."""
    runs = []
    for config_path in results_dir.glob("*/config.json"):
        run_dir = config_path.parent
        if not (run_dir / "cells").is_dir():
            continue
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not ours to judge here; `load_run` reports it when the folder is read
        if config.get("profile", config.get("name")) != profile:
            continue
        runs.append((str(config.get("started_at", "")), config_path.stat().st_mtime, run_dir.name, run_dir))
    return max(runs)[3] if runs else None


def load_config(run_dir: Path) -> dict[str, Any]:
    """The sweep a run folder was asked for (`config.json`); empty when it has none."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
